"""`segserve finetune` end to end on small generated datasets: it learns, it resumes exactly,
it refuses bad input before writing anything, and what it installs is served."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from app import cli
from app.config import Settings
from app.evaluate import evaluate_predictor
from app.predictors.loading import load_predictor
from app.predictors.repository import load_spec
from app.training.datasets import load_dataset
from app.training.shapes import write_shapes_dataset

pytestmark = pytest.mark.integration

SIZE = 96


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A semantic shapes dataset: 48 training and 12 validation images of 96 pixels, a
    quarter of them stored rotated with an EXIF orientation (labels in the displayed frame)."""
    out = tmp_path_factory.mktemp("shapes")
    return write_shapes_dataset(
        out / "data", format="masks", train=48, val=12, size=SIZE, seed=3, exif_fraction=0.25
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty model repository and weights directory; runs go under tmp_path/runs."""
    for folder in ("models", "weights"):
        (tmp_path / folder).mkdir()
    monkeypatch.setenv("SEGSERVE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("SEGSERVE_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("SEGSERVE_ALLOW_DOWNLOAD", "false")
    monkeypatch.setenv("SEGSERVE_DEVICE", "cpu")
    return tmp_path


def finetune(home: Path, data: Path, *extra: str) -> int:
    args = [
        "finetune",
        "--data",
        str(data),
        "--model",
        "lraspp_mobilenet_v3_large",
        "--start",
        "scratch",
        "--image-size",
        str(SIZE),
        "--batch",
        "8",
        "--workers",
        "0",
        "--project",
        str(home / "runs"),
        "--name",
        "shapes",
        *extra,
    ]
    return cli.main(args)


def results(home: Path, name: str = "shapes") -> list[dict[str, str]]:
    with (home / "runs" / name / "results.csv").open() as f:
        return list(csv.DictReader(f))


def untrained_miou(data: Path) -> float:
    """The validation mIoU of the same network before any step (same seed, same build)."""
    from app.training.build import build_trainable

    model = build_trainable(
        "lraspp_mobilenet_v3_large",
        4,
        start="scratch",
        weights_dir=Path("."),
        allow_download=False,
        seed=0,
    )
    state = {k: v for k, v in model.state_dict().items()}
    dataset = load_dataset(data)
    from app.predictors.repository import ModelSpec
    from app.predictors.semantic import SemanticPredictor
    from app.predictors.weights import ResolvedWeights

    spec = ModelSpec(
        name="untrained",
        task="semantic",
        architecture="lraspp_mobilenet_v3_large",
        checkpoint="x.pt",
        categories=dataset.categories,
        preprocessing={"resize": SIZE},  # type: ignore[arg-type]
    )
    model.load_state_dict(state)
    predictor = SemanticPredictor(
        spec, model.eval(), ResolvedWeights(None, dataset.categories, "test"), torch.device("cpu")
    )
    return evaluate_predictor(predictor, dataset.val, dataset.categories).miou


def test_a_short_run_learns_and_installs_a_model_that_serves_its_metric(
    home: Path, shapes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert finetune(home, shapes, "--epochs", "4", "--optimizer", "adamw", "--lr", "0.003") == 0
    rows = results(home)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    final = max(float(r["val_miou"]) for r in rows)
    before = untrained_miou(shapes)
    assert final > before + 0.2, (before, rows)
    assert (home / "runs/shapes/results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The installed model file validates and names the run's checkpoint by its hash.
    spec = load_spec(home / "models/shapes.toml")
    assert spec.categories == ["background", "circle", "square", "triangle"]
    assert spec.preprocessing.resize == SIZE
    checkpoint = home / "weights" / str(spec.checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    assert not any(k.startswith("aux_classifier") for k in state)
    # Served in-process (the service's own loading), it scores exactly the best epoch's metric.
    best = max(rows, key=lambda r: float(r["val_miou"]))
    predictor = load_predictor(spec, Settings())
    dataset = load_dataset(shapes)
    served = evaluate_predictor(predictor, dataset.val, dataset.categories)
    assert served.miou == pytest.approx(float(best["val_miou"]), abs=1e-12)
    assert "installed" in capsys.readouterr().err


def test_resume_after_an_interrupted_epoch_continues_exactly(
    home: Path, shapes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert finetune(home, shapes, "--epochs", "2", "--no-install", "--name", "straight") == 0
    straight = torch.load(home / "runs/straight/weights/last.pt", weights_only=True)

    # Ctrl-C in the middle of epoch 2 (as the signal handler records it): the run stops after
    # that step with a resumable state, then --resume finishes it.
    from app.training import finetune as module

    original = module.Trainer._remember_rng
    calls = {"n": 0}

    def interrupt_at_step_9(self: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 9:  # 6 steps an epoch: step 3 of epoch 2
            self.interrupts.append(2)
        original(self)

    monkeypatch.setattr(module.Trainer, "_remember_rng", interrupt_at_step_9)
    assert finetune(home, shapes, "--epochs", "2", "--no-install", "--name", "cut") == 130
    saved = torch.load(home / "runs/cut/weights/last.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 3)
    monkeypatch.setattr(module.Trainer, "_remember_rng", original)
    assert cli.main(["finetune", "--resume", str(home / "runs/cut")]) == 0
    resumed = torch.load(home / "runs/cut/weights/last.pt", weights_only=True)
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    untimed = [
        {k: v for k, v in r.items() if k != "seconds"}
        for r in (resumed["history"][0], straight["history"][0])
    ]
    assert untimed[0] == untimed[1]


def test_a_broken_dataset_is_refused_before_anything_is_written(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_shapes_dataset(tmp_path / "bad", format="masks", train=6, val=2, size=32, seed=0)
    masks = sorted((tmp_path / "bad/masks/train").iterdir())
    masks[0].unlink()
    masks[1].write_bytes(b"not a png")
    assert finetune(home, data, "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert masks[0].stem in err and masks[1].name in err
    assert "nothing was written" in err
    assert not (home / "runs").exists()
    assert list((home / "models").iterdir()) == [] and list((home / "weights").iterdir()) == []


def test_a_missing_pretrained_file_offline_names_it_and_weights_fetch(
    home: Path, shapes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = finetune(home, shapes, "--start", "pretrained", "--epochs", "1")
    err = capsys.readouterr().err
    assert code == 2
    assert "lraspp_mobilenet_v3_large-d234d4ea.pth" in err and "segserve weights fetch" in err
    assert not (home / "runs").exists()


def test_a_batch_of_one_is_refused_for_batch_norm_networks(
    home: Path, shapes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert finetune(home, shapes, "--batch", "1", "--epochs", "1") == 2
    assert "batch of one" in capsys.readouterr().err
    assert not (home / "runs").exists()


def test_a_diverging_loss_stops_with_advice(
    home: Path, shapes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert finetune(home, shapes, "--lr", "1e12", "--epochs", "1", "--no-install") == 1
    err = capsys.readouterr().err
    assert "the loss became" in err and "--lr" in err


def test_an_existing_model_file_is_not_replaced_without_overwrite(
    home: Path, shapes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "models/shapes.toml").write_text("task = 'semantic'\n")
    assert finetune(home, shapes, "--epochs", "1") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (home / "models/shapes.toml").read_text() == "task = 'semantic'\n"
    assert not (home / "runs").exists()


def test_pretrained_start_loads_the_published_file_and_replaces_the_heads(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The published weights (here a stand-in file under the enum's own name and hash
    scheme) are loaded through the weights directory, and only the class layers change."""
    import hashlib

    from torchvision.models import segmentation

    from app.training.build import build_trainable

    member = segmentation.LRASPP_MobileNet_V3_Large_Weights.DEFAULT
    published = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    path = home / "stand-in.pth"
    torch.save(published.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    name = f"lraspp_mobilenet_v3_large-{digest[:8]}.pth"
    path.rename(home / "weights" / name)
    monkeypatch.setattr(member.value, "url", f"https://download.invalid/models/{name}")
    model = build_trainable(
        "lraspp_mobilenet_v3_large",
        4,
        start="pretrained",
        weights_dir=home / "weights",
        allow_download=False,
        seed=0,
    )
    assert model.classifier.low_classifier.out_channels == 4
    assert model.classifier.high_classifier.out_channels == 4
    mine, theirs = model.state_dict(), published.state_dict()
    kept = [k for k in theirs if "low_classifier" not in k and "high_classifier" not in k]
    assert all(torch.equal(mine[k], theirs[k]) for k in kept)
    # The command the offline error names finds the same file and checks its hash.
    assert cli.main(["weights", "fetch", "--finetune", "lraspp_mobilenet_v3_large"]) == 0
    assert f"{name} present, hash ok" in capsys.readouterr().out


def test_recomputed_batch_norm_statistics_average_the_batches_seen() -> None:
    from app.training.batchnorm import recompute_statistics

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    model.eval()
    batches = [torch.randn(2, 3, 8, 8) * (i + 1) + i for i in range(3)]
    assert recompute_statistics(model, batches, lambda m, b: m(b)) == 3
    norm = model[1]
    assert not model.training and norm.momentum == 0.1
    with torch.no_grad():
        outputs = [model[0](b) for b in batches]
    means = torch.stack([o.mean((0, 2, 3)) for o in outputs]).mean(0)
    variances = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outputs]).mean(0)
    torch.testing.assert_close(norm.running_mean, means)
    torch.testing.assert_close(norm.running_var, variances)


def test_mask_rcnn_from_yolo_labels_installs_a_model_whose_served_metrics_match(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Instance data (YOLO segmentation files) through Mask R-CNN: the validation metrics the
    run reports are the installed model's, in-process (the service's loading)."""
    data = write_shapes_dataset(tmp_path / "yolo", format="yolo", train=4, val=2, size=64, seed=2)
    code = cli.main(
        [
            "finetune",
            "--data",
            str(data),
            "--model",
            "maskrcnn_resnet50_fpn",
            "--start",
            "scratch",
            "--image-size",
            "64",
            "--batch",
            "2",
            "--epochs",
            "1",
            "--workers",
            "0",
            "--bn-images",
            "4",
            "--warmup-iters",
            "10",
            "--project",
            str(home / "runs"),
            "--name",
            "cells",
        ]
    )
    assert code == 0, capsys.readouterr().err
    row = results(home, "cells")[0]
    spec = load_spec(home / "models/cells.toml")
    assert spec.options == {"min_size": 64, "max_size": 107}
    assert spec.categories == ["background", "circle", "square", "triangle"]
    dataset = load_dataset(data)
    served = evaluate_predictor(load_predictor(spec, Settings()), dataset.val, dataset.categories)
    assert served.detections == int(row["val_detections"]) > 0
    assert served.mask_ap == pytest.approx(float(row["val_mask_ap"]), abs=1e-12)
    assert served.box_ap50 == pytest.approx(float(row["val_box_ap50"]), abs=1e-12)


@pytest.mark.parametrize(
    "architecture",
    [
        "deeplabv3_mobilenet_v3_large",
        "deeplabv3_resnet50",
        "deeplabv3_resnet101",
        "fcn_resnet50",
        "fcn_resnet101",
        "lraspp_mobilenet_v3_large",
        "maskrcnn_resnet50_fpn",
        "maskrcnn_resnet50_fpn_v2",
    ],
)
def test_every_served_architecture_gets_heads_for_the_new_classes(architecture: str) -> None:
    """A published network (its own 21 / 91 classes) with its class layers replaced answers
    K + 1 classes, the auxiliary head included; nothing else is rebuilt."""
    from torchvision import models as tv_models

    from app.training.build import _builder_parameters, _replace_heads

    builder = tv_models.get_model_builder(architecture)
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None}
    if "aux_loss" in _builder_parameters(architecture):
        kwargs["aux_loss"] = True
    if architecture.startswith("maskrcnn"):
        kwargs.update(num_classes=91, min_size=64, max_size=64)
    else:
        kwargs["num_classes"] = 21
    torch.manual_seed(0)
    model = builder(**kwargs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _replace_heads(model, architecture, 5)
    after = model.state_dict()
    changed = {k for k in after if k not in before or not torch.equal(before[k], after[k])}
    assert changed, "no layer was replaced"
    assert all(
        any(part in k for part in ("classifier", "predictor", "low_classifier")) for k in changed
    ), changed
    model.eval()
    with torch.no_grad():
        if architecture.startswith("maskrcnn"):
            model.roi_heads.score_thresh = 0.0
            out = model([torch.rand(3, 64, 64)])[0]
            assert model.roi_heads.box_predictor.cls_score.out_features == 5
            assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 5
            assert int(out["labels"].max()) <= 4
        else:
            out = model(torch.rand(1, 3, 64, 64))
            assert out["out"].shape[1] == 5
            if "aux" in out:
                assert out["aux"].shape[1] == 5
            assert ("aux" in out) == (kwargs.get("aux_loss") is True)


def test_patience_stops_a_run_that_no_longer_improves(
    home: Path, shapes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A learning rate too small to change anything: epoch 2 is no better than epoch 1.
    code = finetune(
        home, shapes, "--epochs", "5", "--patience", "1", "--lr", "1e-12", "--no-install"
    )
    assert code == 0
    assert [r["epoch"] for r in results(home)] == ["1", "2"]
    assert "early stop" in capsys.readouterr().err


def test_ctrl_c_saves_a_resumable_state_and_exits_130(home: Path, shapes: Path) -> None:
    """A real SIGINT to a running `segserve finetune`: it finishes the step it is in, saves,
    says how to resume, and exits 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [
        sys.executable,
        "-m",
        "app",
        "finetune",
        "--data",
        str(shapes),
        "--model",
        "lraspp_mobilenet_v3_large",
        "--start",
        "scratch",
        "--image-size",
        str(SIZE),
        "--batch",
        "4",
        "--workers",
        "1",
        "--epochs",
        "3",
        "--no-install",
        "--project",
        str(home / "runs"),
        "--name",
        "stopped",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    lines = []
    deadline = time.monotonic() + 120
    for line in process.stderr:  # plain progress lines: not a terminal
        lines.append(line)
        if line.startswith("epoch 1/3 ") and "it/s" in line:
            process.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(lines)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130, "".join(lines) + rest
    assert "continue with `segserve finetune --resume" in rest
    saved = torch.load(home / "runs/stopped/weights/last.pt", weights_only=True)
    assert saved["epoch"] == 0 and saved["step"] >= 1


def test_resume_refuses_new_arguments_and_a_changed_dataset(
    home: Path, shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert finetune(home, shapes, "--epochs", "1", "--no-install", "--name", "done") == 0
    run = str(home / "runs/done")
    assert cli.main(["finetune", "--resume", run, "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    # The same folder name, fewer training images: the schedule would not fit.
    import shutil

    aside = tmp_path / "aside"
    aside.mkdir()
    for image in sorted((shapes.parent / "images/train").iterdir())[:8]:
        shutil.move(image, aside / image.name)
    try:
        assert cli.main(["finetune", "--resume", run]) == 2
        assert "training images changed" in capsys.readouterr().err
    finally:
        for image in aside.iterdir():
            shutil.move(image, shapes.parent / "images/train" / image.name)


def test_overwrite_starts_the_run_folder_afresh(
    home: Path, shapes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert finetune(home, shapes, "--epochs", "1", "--no-install") == 0
    assert finetune(home, shapes, "--epochs", "1", "--no-install") == 2
    assert "--overwrite" in capsys.readouterr().err
    stray = home / "runs/shapes/weights/stray.pt"
    stray.write_bytes(b"old")
    assert finetune(home, shapes, "--epochs", "1", "--no-install", "--overwrite") == 0
    assert not stray.exists()
    assert len(results(home)) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bench/gpu_check.sh runs it)")
def test_finetune_on_cuda_with_mixed_precision_resumes_and_serves(
    home: Path, shapes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same command on a GPU: fp16 autocast with a gradient scaler, a Ctrl-C and a resume
    on the device, and an installed model whose served metric is the one reported."""
    monkeypatch.setenv("SEGSERVE_DEVICE", "cuda")
    from app.training import finetune as module

    original = module.Trainer._remember_rng
    calls = {"n": 0}

    def interrupt_at_step_4(self: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            self.interrupts.append(2)
        original(self)

    monkeypatch.setattr(module.Trainer, "_remember_rng", interrupt_at_step_4)
    assert finetune(home, shapes, "--epochs", "2", "--device", "cuda") == 130
    saved = torch.load(home / "runs/shapes/weights/last.pt", weights_only=True)
    assert saved["scaler"]["scale"] > 0 and saved["cuda_rng"] is not None
    monkeypatch.setattr(module.Trainer, "_remember_rng", original)
    assert cli.main(["finetune", "--resume", str(home / "runs/shapes")]) == 0
    rows = results(home)
    assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) for r in rows)
    spec = load_spec(home / "models/shapes.toml")
    predictor = load_predictor(spec, Settings())
    assert predictor.device.type == "cuda"
    dataset = load_dataset(shapes)
    served = evaluate_predictor(predictor, dataset.val, dataset.categories)
    best = max(rows, key=lambda r: float(r["val_miou"]))
    assert served.miou == pytest.approx(float(best["val_miou"]), abs=1e-12)
