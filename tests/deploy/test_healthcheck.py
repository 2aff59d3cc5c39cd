"""deploy/healthcheck.py (the image's HEALTHCHECK) against a real HTTP server."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.conftest import ROOT

SCRIPT = ROOT / "deploy" / "healthcheck.py"
_spec = importlib.util.spec_from_file_location("healthcheck", SCRIPT)
assert _spec and _spec.loader
healthcheck = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(healthcheck)

STATUSES = {"/healthz": 200, "/readyz": 503}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(STATUSES.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def port() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield str(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_200_is_healthy(port: str) -> None:
    assert healthcheck.probe("/healthz", port) == 0


@pytest.mark.parametrize("path", ["/readyz", "/nowhere"])
def test_any_other_status_is_unhealthy(port: str, path: str) -> None:
    assert healthcheck.probe(path, port) == 1


def test_nothing_listening_is_unhealthy() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        free = str(sock.getsockname()[1])
    assert healthcheck.probe("/healthz", free) == 1


def test_as_docker_runs_it_the_port_comes_from_segserve_port(port: str) -> None:
    def run(path: str, env_port: str) -> int:
        command = [sys.executable, str(SCRIPT), path]
        env = {"SEGSERVE_PORT": env_port, "PATH": ""}
        return subprocess.run(command, env=env, capture_output=True, check=False).returncode

    assert run("/healthz", port) == 0
    assert run("/readyz", port) == 1
