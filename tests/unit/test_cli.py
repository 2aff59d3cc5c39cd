"""The command line, in-process: exit codes and messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    (models / "seg.toml").write_text('task = "semantic"\narchitecture = "fcn_resnet50"\n')
    (models / "raw.toml").write_text(
        'task = "semantic"\narchitecture = "lraspp_mobilenet_v3_large"\nweights = "none"\n'
    )
    monkeypatch.setenv("SEGSERVE_MODELS_DIR", str(models))
    monkeypatch.setenv("SEGSERVE_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("SEGSERVE_ALLOW_DOWNLOAD", "false")
    return tmp_path


def test_models_lists_each_source(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "raw [default]\tsemantic\tlraspp_mobilenet_v3_large\tuntrained" in out
    assert "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1" in out
    assert "fcn_resnet50_coco-1167a1af.pth (missing" in out


def test_fetch_skips_untrained_and_refuses_unknown_names(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "fetch", "raw"]) == 0
    assert "raw: nothing to fetch (untrained)" in capsys.readouterr().out
    assert main(["weights", "fetch", "nope"]) == 2
    assert "unknown model(s): nope" in capsys.readouterr().err


def test_fetch_verifies_a_present_file(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = repo / "weights"
    weights.mkdir()
    (weights / "fcn_resnet50_coco-1167a1af.pth").write_bytes(b"not the published file")
    assert main(["weights", "fetch", "seg"]) == 2
    assert "does not start with 1167a1af" in capsys.readouterr().err


def test_serve_preflight_names_every_missing_weights_file(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "models" / "inst.toml").write_text(
        'task = "instance"\narchitecture = "maskrcnn_resnet50_fpn_v2"\n'
    )
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "fcn_resnet50_coco-1167a1af.pth" in err
    assert "segserve weights fetch seg" in err
    assert "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth" in err
    assert "segserve weights fetch inst" in err


def test_bad_settings_are_reported_not_raised(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGSERVE_DEVICE", "tpu")
    assert main(["models"]) == 2
    assert "device must be auto, cpu, cuda or cuda:N" in capsys.readouterr().err
