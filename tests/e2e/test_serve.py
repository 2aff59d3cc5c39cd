"""A real `segserve serve` process on a free port, called over HTTP."""

from __future__ import annotations

import io
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.process import INSTANCE, SEMANTIC, free_port, png, segserve, serve_until_ready

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    tmp = tmp_path_factory.mktemp("serve")
    base, proc = serve_until_ready({"seg": SEMANTIC, "inst": INSTANCE}, tmp)
    yield base, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_segment_and_instances_over_http(server: tuple[str, subprocess.Popen[str]]) -> None:
    base, _ = server
    with httpx.Client(base_url=base, timeout=60) as client:
        models = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert models["seg"]["weights"] == "untrained" and models["seg"]["default"]
        seg = client.post("/segment", files={"image": ("a.png", png(80, 60))})
        assert seg.status_code == 200
        assert Image.open(io.BytesIO(seg.content)).size == (80, 60)
        assert {"decode", "queue", "infer", "encode"} <= {
            part.split(";")[0].strip() for part in seg.headers["server-timing"].split(",")
        }
        inst = client.post(
            "/instances?score_threshold=0&mask_encoding=both",
            content=png(64, 48, 1),
            headers={"Content-Type": "image/png"},
        )
        assert inst.status_code == 200
        body = inst.json()
        assert (body["width"], body["height"]) == (64, 48)
        assert body["instances"], "a seeded untrained Mask R-CNN detects something at threshold 0"
        assert {"rle", "polygons", "bbox", "score", "label"} <= set(body["instances"][0])
        bad = client.post("/segment", content=b"nope", headers={"Content-Type": "image/png"})
        assert bad.status_code == 415 and bad.json()["error"]["code"] == "unsupported_media_type"


def test_sigterm_stops_cleanly(server: tuple[str, subprocess.Popen[str]]) -> None:
    base, proc = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/healthz", timeout=1)


def test_missing_weights_offline_stop_startup_with_a_clear_message(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "seg.toml").write_text('task = "semantic"\narchitecture = "deeplabv3_resnet50"\n')
    env = {
        "SEGSERVE_MODELS_DIR": str(models),
        "SEGSERVE_WEIGHTS_DIR": str(tmp_path / "weights"),
        "SEGSERVE_ALLOW_DOWNLOAD": "false",
    }
    proc = segserve("serve", "--port", str(free_port()), env=env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "deeplabv3_resnet50_coco-cd0a2569.pth" in out
    assert str(tmp_path / "weights") in out
    assert "segserve weights fetch seg" in out


def test_models_command_lists_where_weights_come_from(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {"SEGSERVE_MODELS_DIR": str(repo / "models"), "SEGSERVE_WEIGHTS_DIR": str(tmp_path)}
    proc = segserve("models", env=env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    lines = {line.split("\t")[0]: line for line in out.splitlines() if "\t" in line}
    assert "deeplabv3_resnet50 [default]" in lines
    assert "missing" in lines["deeplabv3_resnet50 [default]"]
    assert "torchvision:DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1" in out


def test_a_model_that_fails_to_start_stops_the_server_with_its_reason(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    # Accepted by the builder, but the first forward pass fails: caught at warm-up.
    (models / "inst.toml").write_text(INSTANCE.replace("min_size = 96", 'min_size = "big"'))
    env = {"SEGSERVE_MODELS_DIR": str(models), "SEGSERVE_DEVICE": "cpu"}
    proc = segserve("serve", "--port", str(free_port()), env=env)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 3, out
    assert "'inst' failed its warm-up inference" in out
    assert "check its [options]" in out


def test_an_unavailable_device_is_refused_before_serving(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "seg.toml").write_text(SEMANTIC)
    env = {"SEGSERVE_MODELS_DIR": str(models), "SEGSERVE_DEVICE": "cuda:99"}
    proc = segserve("serve", "--port", str(free_port()), env=env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "SEGSERVE_DEVICE='cuda:99'" in out
