import sys
from pathlib import Path

import pytest

from app.predictors.repository import load_spec
from bench.servers import (
    RunningServer,
    ServerCommand,
    ServerStartError,
    free_port,
    write_model_toml,
)


def test_model_toml_is_a_valid_untrained_spec_with_the_shipped_batching(tmp_path: Path) -> None:
    spec = load_spec(write_model_toml(tmp_path, "maskrcnn_resnet50_fpn_v2"))
    assert spec.task == "instance"
    assert spec.untrained
    assert spec.default
    assert spec.batching.max_batch_size == 4  # as in models/maskrcnn_resnet50_fpn_v2.toml


def test_model_toml_batching_can_be_overridden(tmp_path: Path) -> None:
    toml = write_model_toml(tmp_path, "deeplabv3_resnet50", {"max_batch_size": 2})
    spec = load_spec(toml)
    assert spec.task == "semantic"
    assert spec.batching.max_batch_size == 2


def test_a_server_is_ready_then_stopped(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    command = ServerCommand("static", argv, port, "/")
    server = RunningServer(
        command, workdir=tmp_path, log_path=tmp_path / "s.log", start_timeout_s=60
    )
    with server:
        assert server.process is not None
        assert server.process.poll() is None
    assert server.process.poll() is not None


def test_a_server_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    command = ServerCommand("broken", argv, free_port(), "/health")
    server = RunningServer(
        command, workdir=tmp_path, log_path=tmp_path / "b.log", start_timeout_s=60
    )
    with pytest.raises(ServerStartError, match=r"(?s)exited with status 3.*no model here"):
        server.__enter__()
