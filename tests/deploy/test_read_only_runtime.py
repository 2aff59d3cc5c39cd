"""The container's runtime contract, without Docker: a real `segserve serve` on a read-only root.

compose (`read_only: true`) and Kubernetes (`readOnlyRootFilesystem`) give the service a
read-only root with a writable /tmp. Here a private mount namespace (`unshare -m`) does the
same to this machine's root: it is remounted read-only for the server process alone, and a
fresh tmpfs stands in for the container's /tmp. The server gets the image's ENV (its /tmp
paths pointed at that tmpfs), the image's working-directory layout (models/, weights/), and
the compose settings. It must load, answer the image's HEALTHCHECK, serve a request, and exit 0
on SIGTERM within compose's stop_grace_period, all without writing outside /tmp.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.deploy.conftest import ROOT, image_env, load_yaml
from tests.e2e.process import free_port, png, wait_ready

pytestmark = pytest.mark.e2e

# The smallest served architecture, untrained (no weights file), one image per batch.
MODEL = """task = "semantic"
architecture = "lraspp_mobilenet_v3_large"
weights = "none"
[batching]
max_batch_size = 1
max_wait_ms = 1
"""

# $1: the directory that becomes the writable tmpfs; the rest: the command to run.
READ_ONLY_ROOT = """
set -e
mount -t tmpfs -o size=256m,mode=1777 tmpfs "$1"
shift
mount -o remount,bind,ro /
if touch /.segserve-ro-probe 2>/dev/null; then echo "root is still writable" >&2; exit 97; fi
exec "$@"
"""


def _can_unshare_mounts() -> bool:
    try:
        probe = ["unshare", "-m", "true"]
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def _container_env(writable: Path, port: int) -> dict[str, str]:
    env = {
        key: str(writable) + value.removeprefix("/tmp") if value.startswith("/tmp") else value
        for key, value in image_env().items()
    }
    compose_env = load_yaml(ROOT / "docker-compose.yml")["services"]["segserve-cpu"]["environment"]
    env.update({key: str(value) for key, value in compose_env.items()})
    env.update(
        SEGSERVE_HOST="127.0.0.1",  # not every interface of the test machine
        SEGSERVE_PORT=str(port),
        TMPDIR=str(writable),  # the container's /tmp is writable; this machine's is not, here
    )
    return {**os.environ, **env}


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _can_unshare_mounts(),
    reason="needs a private mount namespace (unshare -m: Linux, root or CAP_SYS_ADMIN)",
)
def test_serves_and_stops_on_a_read_only_root(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"  # the image's WORKDIR, with its default relative directories
    (app_dir / "models").mkdir(parents=True)
    (app_dir / "weights").mkdir()
    (app_dir / "models" / "seg.toml").write_text(MODEL)
    writable = tmp_path / "tmp"
    writable.mkdir()
    port = free_port()
    log_path = tmp_path / "server.log"
    command = ["unshare", "-m", "sh", "-c", READ_ONLY_ROOT, "sh", str(writable)]
    command += [sys.executable, "-m", "app", "serve"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command, cwd=app_dir, env=_container_env(writable, port), stdout=log, stderr=log
        )
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", log_path)
        for path in ("/healthz", "/readyz"):  # the HEALTHCHECK command, as Docker runs it
            healthcheck = [sys.executable, str(ROOT / "deploy" / "healthcheck.py"), path]
            run = subprocess.run(healthcheck, env={"SEGSERVE_PORT": str(port)}, check=False)
            assert run.returncode == 0, path
        answer = httpx.post(
            f"http://127.0.0.1:{port}/segment", files={"image": ("a.png", png(48, 32))}, timeout=60
        )
        assert answer.status_code == 200, answer.text

        proc.send_signal(signal.SIGTERM)
        grace = load_yaml(ROOT / "docker-compose.yml")["services"]["segserve"]["stop_grace_period"]
        assert proc.wait(timeout=int(grace.removesuffix("s"))) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert "Read-only file system" not in log and "Errno 30" not in log, log
    assert sorted(p.name for p in app_dir.rglob("*")) == ["models", "seg.toml", "weights"]
