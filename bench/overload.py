"""Overload a running segserve at a multiple of its capacity; time every rejection.

Capacity is the model's queue plus one batch (``GET /models``: ``max_queue_size`` +
``max_batch_size``). The script fills it, then sends the rest of ``--times`` x capacity at
once, each on a fresh connection, and reports every answer's status, whether 503s carry
``Retry-After``, and their latency from connect to the end of the response. For the queue to
stay full while it measures, the model must be slower than the test: start the service with
e.g. ``SEGSERVE_DEBUG_FAULTS=infer_batch:delay=30``.

    SEGSERVE_DEBUG_FAULTS=infer_batch:delay=30 segserve serve --port 8000 &
    .venv/bin/python -m bench.overload --url http://127.0.0.1:8000

The client is a bare HTTP/1.1 writer/reader: a full client library spends milliseconds of
CPU per request, which at hundreds of simultaneous requests it would measure instead of the
server. Writes bench/results/overload-<timestamp>.json; exits 1 unless every rejection is a
503 with Retry-After within --target-ms.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench.images import photo_like
from bench.report import RESULTS_DIR, save_json


async def raw_post(
    base: str, path: str, body: bytes, content_type: str
) -> tuple[int, dict[str, str], float]:
    """POST over a fresh connection: (status, lower-cased headers, seconds)."""
    host, port = base.removeprefix("http://").rstrip("/").split(":")
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    response = await reader.read()  # the server closes after the response
    seconds = time.perf_counter() - started
    writer.close()
    status_line, *lines = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split()[1]), headers, seconds


def capacity(url: str, model: str | None) -> tuple[str, int]:
    models = httpx.get(f"{url}/models", timeout=30).json()["models"]
    semantic = [m for m in models if m["task"] == "semantic"]
    chosen = next(m for m in semantic if (m["name"] == model if model else m["default"]))
    batching = chosen["batching"]
    return chosen["name"], int(batching["max_queue_size"]) + int(batching["max_batch_size"])


async def overload(url: str, model: str, cap: int, times: float, body: bytes) -> dict[str, Any]:
    path = f"/segment?model={model}"
    admitted = [asyncio.create_task(raw_post(url, path, body, "image/png")) for _ in range(cap)]
    await asyncio.sleep(2.0)  # they are queued or in the model
    extra = round(times * cap) - cap
    answers = await asyncio.gather(*(raw_post(url, path, body, "image/png") for _ in range(extra)))
    for task in admitted:  # hang up: queued entries are cancelled, the server drains
        task.cancel()
    await asyncio.gather(*admitted, return_exceptions=True)
    rejected = [(s, h, t) for s, h, t in answers if s != 200]
    ms = sorted(t * 1000 for *_, t in rejected)
    return {
        "capacity": cap,
        "sent_at_once": extra,
        "statuses": {str(s): sum(1 for a in answers if a[0] == s) for s in {a[0] for a in answers}},
        "all_503_with_retry_after": all(s == 503 and "retry-after" in h for s, h, _ in rejected),
        "rejection_ms": {
            "p50": round(ms[len(ms) // 2], 1) if ms else None,
            "p90": round(ms[int(len(ms) * 0.9)], 1) if ms else None,
            "max": round(ms[-1], 1) if ms else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.overload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", help="a semantic model (default: the default one)")
    parser.add_argument("--times", type=float, default=3.0, help="multiple of capacity sent")
    parser.add_argument("--target-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    model, cap = capacity(args.url, args.model)
    buffer = io.BytesIO()
    Image.fromarray(photo_like(64, 48, 0)).save(buffer, "PNG")
    report = asyncio.run(overload(args.url, model, cap, args.times, buffer.getvalue()))
    report.update(url=args.url, model=model, times=args.times, target_ms=args.target_ms)
    out = save_json(
        report, args.out or RESULTS_DIR / f"overload-{time.strftime('%Y%m%dT%H%M%S')}.json"
    )
    print(json.dumps(report, indent=2), f"\nwritten to {out}")
    slowest = report["rejection_ms"]["max"]
    ok = report["all_503_with_retry_after"] and slowest is not None and slowest < args.target_ms
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
