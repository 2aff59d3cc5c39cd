"""Container health probe: exit 0 when segserve answers 200 on a health path, else 1.

Slim images have no curl, so the Dockerfile's HEALTHCHECK and compose run this with the
image's Python (standard library only). Usage: ``python healthcheck.py [PATH]`` (default
``/healthz``); the port is ``SEGSERVE_PORT`` (default 8000), the same variable the server
binds with, so a changed port cannot leave the probe knocking on the old one.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0


def probe(path: str = "/healthz", port: str | None = None) -> int:
    """Return the process exit status: 0 for an HTTP 200 from ``path``, 1 otherwise."""
    port = port or os.environ.get("SEGSERVE_PORT", "8000")
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # 503 while not ready, for example
        status = exc.code
    except OSError as exc:  # refused, reset, timed out: the server is not answering
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(probe(*sys.argv[1:2]))
