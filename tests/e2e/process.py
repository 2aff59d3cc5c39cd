"""Start a real `segserve` process on a free port and wait for it, for the e2e tests."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import pytest
from PIL import Image

# A small untrained semantic model: starts in seconds on a CPU.
SEMANTIC = """task = "semantic"
architecture = "lraspp_mobilenet_v3_large"
weights = "none"
[batching]
max_batch_size = 4
max_wait_ms = 20
"""
# A Mask R-CNN small enough to answer quickly on a CPU.
INSTANCE = """task = "instance"
architecture = "maskrcnn_resnet50_fpn_v2"
weights = "none"
[options]
min_size = 96
max_size = 128
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def segserve(*args: str, env: dict[str, str], log: IO[str] | None = None) -> subprocess.Popen[str]:
    """Run `segserve ARGS`; its output goes to ``log``, else to a pipe to read at its end.

    A long-running server needs ``log``: nobody drains the pipe, and a full one blocks it.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "app", *args],
        env={**os.environ, **env},
        stdout=log or subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def serve_until_ready(
    models: dict[str, str], tmp: Path, **settings: str
) -> tuple[str, subprocess.Popen[str]]:
    """`segserve serve` over ``models`` (name -> TOML) with SEGSERVE_* ``settings``."""
    models_dir = tmp / "models"
    models_dir.mkdir()
    for name, toml in models.items():
        (models_dir / f"{name}.toml").write_text(toml)
    port = free_port()
    env = {
        "SEGSERVE_MODELS_DIR": str(models_dir),
        "SEGSERVE_WEIGHTS_DIR": str(tmp / "weights"),
        "SEGSERVE_DEVICE": "cpu",
        **{f"SEGSERVE_{key.upper()}": value for key, value in settings.items()},
    }
    log_path = tmp / "segserve.log"
    with log_path.open("w") as log:  # the child keeps its own copy of the handle
        proc = segserve("serve", "--port", str(port), env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    wait_ready(proc, base, log_path)
    return base, proc


def wait_ready(proc: subprocess.Popen[Any], base: str, log_path: Path) -> None:
    """Return once ``base``/readyz answers 200; fail with the server's log if it exits first
    or is not ready within 180 s (then it is killed)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"segserve exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"segserve was not ready within 180 s:\n{log_path.read_text()}")


def png(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
