"""Start each server under test as its own process, wait until it is ready, stop it.

Every server runs alone (start, warm up, sweep, stop) so none shares the CPU with another.
Processes start in their own session, so stopping one also stops the workers it spawned
(LitServe runs its model in child processes). They run in a scratch directory, so no
``.env`` in the checkout changes the service's settings behind the benchmark's back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from app.predictors.repository import Task, builders_for

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODELS = REPO_ROOT / "models"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def task_of(architecture: str) -> Task:
    return "semantic" if architecture in builders_for("semantic") else "instance"


def shipped_batching(architecture: str) -> dict[str, float]:
    """The [batching] table of the shipped model file, so the service runs as shipped."""
    path = SHIPPED_MODELS / f"{architecture}.toml"
    if not path.is_file():
        return {}
    return dict(tomllib.loads(path.read_text(encoding="utf-8")).get("batching", {}))


def write_model_toml(
    directory: Path, architecture: str, batching: Mapping[str, float] | None = None
) -> Path:
    """A one-model repository: the architecture untrained (seeded), as every server loads it."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f'task = "{task_of(architecture)}"',
        f'architecture = "{architecture}"',
        'weights = "none"',
        "default = true",
    ]
    batching = shipped_batching(architecture) if batching is None else batching
    if batching:
        lines += ["", "[batching]", *(f"{key} = {value!r}" for key, value in batching.items())]
    path = directory / f"{architecture}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def segserve_command(models_dir: Path, **settings: str) -> ServerCommand:
    """``segserve serve`` on a free port for a repository of untrained models, quiet, with
    no API key; ``settings``: more SEGSERVE_* values (``max_queue_size="1"``)."""
    port = free_port()
    env = {
        "SEGSERVE_MODELS_DIR": str(models_dir),
        "SEGSERVE_WEIGHTS_DIR": str(models_dir),
        "SEGSERVE_ALLOW_DOWNLOAD": "false",
        "SEGSERVE_PORT": str(port),
        "SEGSERVE_LOG_LEVEL": "warning",
        "SEGSERVE_API_KEY": "",
        **{f"SEGSERVE_{name.upper()}": value for name, value in settings.items()},
    }
    # The installed console script, as an operator starts it (`python -m app` without one).
    script = Path(sys.executable).with_name("segserve")
    argv = [str(script), "serve"] if script.is_file() else [sys.executable, "-m", "app", "serve"]
    return ServerCommand("service", argv, port, "/readyz", env)


@dataclass
class ServerCommand:
    """How to start one server and how to tell that it is ready."""

    name: str
    argv: Sequence[str]
    port: int
    health_path: str
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ServerStartError(RuntimeError):
    pass


class RunningServer:
    """Context manager: the server's process from start until it has exited."""

    def __init__(
        self, command: ServerCommand, *, workdir: Path, log_path: Path, start_timeout_s: float
    ) -> None:
        self.command = command
        self.workdir = workdir
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RunningServer:
        env = {**os.environ, **self.command.env}
        # bench.* must import from the checkout whatever the working directory.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(self.command.argv),
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        assert self.process is not None
        url = self.command.base_url + self.command.health_path
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"{self.command.name} exited with status {self.process.returncode} before "
                    f"it was ready; its log ({self.log_path}) ends:\n{self.log_tail()}"
                )
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.25)
        raise ServerStartError(
            f"{self.command.name} was not ready at {url} within {self.start_timeout_s:.0f} s; "
            f"its log ({self.log_path}) ends:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to the server's process group; SIGKILL if it has not exited in ``grace_s``."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
        # Workers LitServe spawned may outlive their parent for a moment: clear the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def untrained_service(architecture: str, **settings: str) -> Iterator[ServerCommand]:
    """A running ``segserve serve`` of one untrained model (as shipped batches it), in a
    scratch directory; ``settings`` as for :func:`segserve_command`."""
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = Path(scratch) / "models"
        write_model_toml(models_dir, architecture)
        command = segserve_command(models_dir, **settings)
        with RunningServer(
            command,
            workdir=Path(scratch),
            log_path=Path(scratch) / "service.log",
            start_timeout_s=600,
        ):
            yield command
