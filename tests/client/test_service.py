"""The client, and `segserve predict --url`, against a real `segserve serve` process serving
the untrained demo repository (examples/untrained-models) with an API key."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from segserve_client import (
    AsyncClient,
    Client,
    InstancesResult,
    SegmentResult,
    SegserveError,
    polygons_to_mask,
)

from app.cli import main
from tests.e2e.process import png, serve_until_ready

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "untrained-models"
KEY = "client-test-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("client")
    models = {path.stem: path.read_text() for path in sorted(EXAMPLES.glob("*.toml"))}
    base, proc = serve_until_ready(models, tmp, api_key=KEY, batch_autotune="false")
    yield base
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _image(width: int = 64, height: int = 48, seed: int = 0) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png(width, height, seed))))


def test_sync_segment_png_and_json_give_the_same_class_map(server: str) -> None:
    image = _image()
    with Client(server, api_key=KEY) as client:
        as_png = client.segment(image, format="png")
        as_json = client.segment(image, format="json", tolerance=0)
        overlay = client.segment(png(64, 48, 0), format="overlay")
    assert isinstance(as_png, SegmentResult) and as_png.class_map is not None
    assert as_png.class_map.shape == (48, 64) and as_png.class_map.dtype == np.uint8
    assert as_json.model == "seg" and (as_json.width, as_json.height) == (64, 48)
    assert as_json.segments, "a seeded untrained model still paints some class"
    np.testing.assert_array_equal(as_json.class_map, as_png.class_map)
    for segment in as_json.segments:
        assert int((as_png.class_map == segment.class_id).sum()) == segment.area
    assert {"decode", "queue", "infer", "encode"} <= set(as_png.timing)
    assert overlay.image is not None and overlay.image.size == (64, 48)
    assert overlay.image.mode == "RGB" and overlay.class_map is None


async def test_async_segment_and_instances(server: str, tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(png(64, 48, 1))
    async with AsyncClient(server, api_key=KEY) as client:
        seg = await client.segment(path, tolerance=0, tile=32, overlap=8)
        both = await client.instances(
            path, score_threshold=0, max_instances=4, mask_encoding="both", tolerance=0
        )
        ids = await client.instances(path, format="png", score_threshold=0, max_instances=4)
    assert seg.timing["windows"] == 6  # 64 x 48 in 32-pixel windows overlapping by 8: 3 x 2
    assert isinstance(both, InstancesResult) and both.model == "inst"
    assert both.instances, "a seeded untrained Mask R-CNN detects something at threshold 0"
    for instance in both.instances:
        assert instance.rle is not None and instance.polygons is not None
        mask = instance.mask  # from the RLE
        assert mask.shape == (48, 64) and int(mask.sum()) == instance.area
        from_polygons = polygons_to_mask(instance.polygons, 48, 64)
        np.testing.assert_array_equal(from_polygons, mask)  # exact at tolerance 0
    # The id map: the same instances, each visible only where it is on top.
    assert ids.id_map is not None and ids.id_map.shape == (48, 64)
    assert [i.label for i in ids.instances] == [i.label for i in both.instances]
    for k, (shown, full) in enumerate(zip(ids.instances, both.instances, strict=True), 1):
        assert not (shown.mask & ~full.mask).any()
        np.testing.assert_array_equal(shown.mask, ids.id_map == k)


def test_the_api_key_is_required_and_sent(server: str) -> None:
    with Client(server, retries=0) as client, pytest.raises(SegserveError) as caught:
        client.segment(_image(16, 16))
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    with Client(server, api_key=KEY) as client:
        names = {m["name"] for m in client.models()["models"]}
        assert names == {"seg", "inst"}
        with pytest.raises(SegserveError) as caught:
            client.segment(_image(16, 16), model="nope")
    assert (caught.value.status, caught.value.code) == (404, "model_not_found")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for k in range(4):
        (images / f"im{k}.png").write_bytes(png(40 + 4 * k, 32, k))
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return images


def test_predict_many_over_a_folder_reports_the_broken_file(server: str, folder: Path) -> None:
    with Client(server, api_key=KEY) as client:
        predictions = client.predict_many([folder], batch_size=2, concurrency=2, format="png")
    names = [Path(p.source).name for p in predictions]
    assert names == ["broken.jpg", "im0.png", "im1.png", "im2.png", "im3.png"]
    broken = predictions[0]
    assert broken.error is not None and broken.error.status == 422
    assert broken.error.code == "undecodable_image"
    for k, prediction in enumerate(predictions[1:]):
        assert prediction.ok and isinstance(prediction.result, SegmentResult)
        assert prediction.result.class_map is not None
        assert prediction.result.class_map.shape == (32, 40 + 4 * k)


def test_segserve_predict_with_url(
    server: str, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["predict", str(folder), "--url", server, "--api-key", KEY, "--format", "json"]
    assert main([*argv, "--out", str(out), "--batch-size", "3"]) == 1
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "undecodable_image" in captured.err
    assert "im0.png" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == [
        "im0.json",
        "im1.json",
        "im2.json",
        "im3.json",
        "summary.json",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert [e["status"] for e in summary["images"]] == ["error", "ok", "ok", "ok", "ok"]
    assert summary["images"][0]["http_status"] == 422
    assert (summary["ok"], summary["failed"]) == (4, 1)
    assert "infer" in summary["images"][1]["timing"]
    assert json.loads((out / "im2.json").read_text())["width"] == 48
