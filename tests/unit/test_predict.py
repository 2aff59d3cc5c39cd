"""`segserve predict` in process: the app started here (fake predictors, or the untrained demo
model), the client over an ASGI transport, result files, summary.json and exit statuses."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from app.config import Settings
from app.predict import Options, Progress, output_names, predict
from tests.fakes import fake_loader, fake_pair, semantic_truth

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "untrained-models"


def _settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, warmup=False, device="cpu", **overrides)


def _sample(width: int, height: int, seed: int) -> np.ndarray:
    """Grey with a bright block and a dark band: the fake model finds classes 1 and 2."""
    image = np.full((height, width, 3), 120, dtype=np.uint8)
    image[: height // 2, : width // 3 + seed] = 250
    image[-4:, :] = 5
    return image


def _save(image: np.ndarray, path: Path) -> Path:
    Image.fromarray(image).save(path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "more").mkdir(parents=True)
    for k in range(3):
        _save(_sample(40 + 2 * k, 30, k), folder / f"im{k}.png")
    _save(_sample(20, 16, 5), folder / "more" / "im0.png")  # the same stem, in a subfolder
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    return folder


def _run(
    inputs: list[str],
    out: Path,
    *,
    fmt: str,
    task: Literal["semantic", "instance"] = "semantic",
    **kw: Any,
) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    semantic, instance = fake_pair()
    options = Options(task=task, fmt=fmt, out=out, params=kw.pop("params", {}), **kw)
    status = predict(
        inputs,
        options,
        settings=_settings(),
        loader=fake_loader(semantic, instance),
        stdout=stdout,
        stderr=stderr,
    )
    return status, stdout.getvalue(), stderr.getvalue()


def test_png_files_and_summary_with_a_broken_image(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    status, stdout, stderr = _run([str(images)], out, fmt="png", batch_size=2, recursive=True)
    assert status == 1
    assert stderr.splitlines() == [
        f"segserve: error: {images / 'broken.png'}: 422 undecodable_image: "
        + json.loads((out / "summary.json").read_text())["images"][0]["message"].split(": ", 1)[1]
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "im0-2.png",
        "im0.png",
        "im1.png",
        "im2.png",
        "summary.json",
    ]
    for k in range(3):
        written = np.asarray(Image.open(out / f"im{k}.png"))
        np.testing.assert_array_equal(written, semantic_truth(_sample(40 + 2 * k, 30, k)))
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "im0-2.png")), semantic_truth(_sample(20, 16, 5))
    )
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(e["file"]).name for e in summary["images"]] == [
        "broken.png",
        "im0.png",
        "im1.png",
        "im2.png",
        "im0.png",
    ]
    assert [e["output"] for e in summary["images"]] == [
        None,
        "im0.png",
        "im1.png",
        "im2.png",
        "im0-2.png",
    ]
    first, second = summary["images"][:2]
    assert (first["status"], first["code"], first["http_status"]) == (
        "error",
        "undecodable_image",
        422,
    )
    assert second["status"] == "ok" and second["message"] is None
    assert {"decode", "queue", "infer", "encode"} <= set(second["timing"])
    assert (summary["ok"], summary["failed"], summary["task"], summary["format"]) == (
        4,
        1,
        "semantic",
        "png",
    )
    # Not a terminal: one plain line per image, then the total.
    lines = stdout.splitlines()
    assert len(lines) == 6 and lines[-1].startswith("5 images: 4 ok, 1 failed")
    assert all(line.startswith("[") for line in lines[:5])


def test_json_and_overlay_outputs(images: Path, tmp_path: Path) -> None:
    inputs = [str(images / "im1.png"), str(images / "im2.png")]
    status, _, stderr = _run(inputs, tmp_path / "json", fmt="json", params={"tile": 16})
    assert status == 0 and stderr == ""
    body = json.loads((tmp_path / "json" / "im1.json").read_text())
    assert (body["model"], body["width"], body["height"]) == ("fake-sem", 42, 30)
    assert {s["label"] for s in body["segments"]} == {"bright", "dark"}
    summary = json.loads((tmp_path / "json" / "summary.json").read_text())
    assert summary["params"] == {"tile": 16}
    assert summary["images"][0]["timing"]["windows"] > 1  # tiled through the service's path
    status, _, _ = _run(inputs, tmp_path / "ov", fmt="overlay", task="instance")
    assert status == 0
    overlay = Image.open(tmp_path / "ov" / "im2.overlay.png")
    assert overlay.size == (44, 30) and overlay.mode == "RGB"


def test_instance_json_holds_what_the_service_sent(images: Path, tmp_path: Path) -> None:
    status, _, _ = _run(
        [str(images / "im0.png")],
        tmp_path,
        fmt="json",
        task="instance",
        params={"model": "fake-inst"},
    )
    assert status == 0
    body = json.loads((tmp_path / "im0.json").read_text())
    assert body["model"] == "fake-inst" and len(body["instances"]) == 3  # scores >= 0.5
    assert "polygons" in body["instances"][0] and "rle" not in body["instances"][0]
    status, _, _ = _run(
        [str(images / "im0.png")],
        tmp_path,
        fmt="json",
        task="instance",
        params={"mask_encoding": "rle"},
    )
    body = json.loads((tmp_path / "im0.json").read_text())
    assert "rle" in body["instances"][0] and "polygons" not in body["instances"][0]


def test_an_unknown_model_fails_every_image(images: Path, tmp_path: Path) -> None:
    status, _, stderr = _run(
        [str(images / "im0.png")], tmp_path, fmt="png", params={"model": "nope"}
    )
    assert status == 1 and "404 model_not_found" in stderr


def test_a_terminal_gets_a_progress_bar() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = Progress(2, stream)
    progress.update("a.png", None, "out/a.png")
    progress.update("b.png", "422 undecodable_image: x", None)
    text = stream.getvalue()
    assert "\r" in text and "[###############...............] 1/2 a.png" in text
    assert text.endswith("2/2, 1 failed b.png\n")


def test_output_names_are_unique() -> None:
    assert output_names(["a/x.jpg", "b/x.png", "x.webp", "summary.png"], "png") == [
        "x.png",
        "x-2.png",
        "x-3.png",
        "summary.png",
    ]
    assert output_names(["summary.jpg"], "json") == ["summary-2.json"]
    assert output_names(["p.jpg"], "overlay") == ["p.overlay.png"]


def test_the_command_line_with_the_demo_model(
    images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`segserve predict` without --url: the untrained demo semantic model, started here."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(EXAMPLES / "seg.toml", models / "seg.toml")
    for key, value in {
        "MODELS_DIR": str(models),
        "WEIGHTS_DIR": str(tmp_path / "weights"),
        "DEVICE": "cpu",
        "WARMUP": "false",
        "BATCH_AUTOTUNE": "false",
    }.items():
        monkeypatch.setenv(f"SEGSERVE_{key}", value)
    out = tmp_path / "out"
    assert (
        main(["predict", str(images / "im0.png"), str(images / "im1.png"), "--out", str(out)]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["im0.png", "im1.png", "summary.json"]
    class_map = np.asarray(Image.open(out / "im0.png"))
    assert class_map.shape == (30, 40)
    assert "2 images: 2 ok, 0 failed" in capsys.readouterr().out
    # No images at all is a usage error, not a run.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty)]) == 2
    assert "no images in" in capsys.readouterr().err


def test_without_the_client_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "segserve_client", None)
    assert main(["predict", "x.png", "--url", "http://127.0.0.1:9"]) == 2
    assert "pip install ./clients/python" in capsys.readouterr().err
