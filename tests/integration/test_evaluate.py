"""`segserve evaluate` on real torchvision architectures (seeded, batch norms calibrated):
in process (evaluate_predictor), over HTTP against a real `segserve serve` process
(evaluate_url) and computed here without segserve code all give the same metrics.

The served models take one image a batch and the in-process runs use batches of 1, so every
image runs the exact tensor operations of the plain torchvision pipeline (batching changes
float rounding only; see tests/integration/reference.py): the metrics must be equal, not
close.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torchvision.models import get_model, get_model_weights

from app.cli import main
from app.config import Settings
from app.evaluate import evaluate_predictor, evaluate_url
from app.evaluation import InstanceMetrics, SemanticMetrics
from app.predictors.loading import load_predictor
from app.predictors.repository import load_repository
from app.training.datasets import Dataset, load_dataset
from app.training.shapes import write_shapes_dataset
from tests.e2e.process import serve_until_ready
from tests.integration.conftest import model_toml
from tests.integration.reference import calibrate

pytestmark = pytest.mark.integration

SEMANTIC_ARCH = "lraspp_mobilenet_v3_large"
# Mask R-CNN v1 (its box head is two linear layers, v2's four convolutions) on small inputs
# and fewer proposals: a 2-core CPU runs it in well under a second an image.
INSTANCE_ARCH = "maskrcnn_resnet50_fpn"
INSTANCE_OPTIONS = {"min_size": 96, "max_size": 128, "rpn_post_nms_top_n_test": 100}
# The bit-exact path (no channels-last, no folded batch norms), nothing run at start-up.
EXACT = {
    "device": "cpu",
    "channels_last": False,
    "fold_batchnorm": False,
    "warmup": False,
    "batch_autotune": False,
    "allow_download": False,
}


@dataclass
class Setup:
    root: Path
    semantic_yaml: Path
    instance_yaml: Path
    semantic: Dataset
    instance: Dataset
    semantic_model: nn.Module
    instance_model: nn.Module

    def settings(self) -> Settings:
        return Settings(
            _env_file=None,  # type: ignore[call-arg]
            models_dir=self.root / "models",
            weights_dir=self.root / "weights",
            **EXACT,
        )


def _seeded(architecture: str, categories: int, seed: int, **options: Any) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_model(
            architecture,
            weights=None,
            weights_backbone=None,
            num_classes=categories,
            **options,
        )
    calibrate(model, architecture, seed=2000 + seed)
    return model.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("evaluate")
    # Small scenes, a third of them stored rotated with an EXIF tag (labels as displayed).
    semantic_yaml = write_shapes_dataset(
        root / "shapes-masks", format="masks", train=1, val=4, size=48, seed=1, exif_fraction=0.3
    )
    instance_yaml = write_shapes_dataset(
        root / "shapes-coco", format="coco", train=1, val=3, size=48, seed=2, exif_fraction=0.3
    )
    semantic, instance = load_dataset(semantic_yaml), load_dataset(instance_yaml)
    weights = root / "weights"
    weights.mkdir()
    semantic_model = _seeded(SEMANTIC_ARCH, len(semantic.categories), seed=3)
    instance_model = _seeded(INSTANCE_ARCH, len(instance.categories), seed=4, **INSTANCE_OPTIONS)
    torch.save(semantic_model.state_dict(), weights / "seg.pth")
    torch.save(instance_model.state_dict(), weights / "inst.pth")
    models = root / "models"
    models.mkdir()
    common: dict[str, Any] = {"max_batch_size": 1, "max_wait_ms": 0.0}
    (models / "seg.toml").write_text(
        model_toml(
            task="semantic",
            architecture=SEMANTIC_ARCH,
            checkpoint="seg.pth",
            categories=semantic.categories,
            **common,
        )
    )
    (models / "inst.toml").write_text(
        model_toml(
            task="instance",
            architecture=INSTANCE_ARCH,
            checkpoint="inst.pth",
            categories=instance.categories,
            options=INSTANCE_OPTIONS,
            **common,
        )
    )
    return Setup(
        root,
        semantic_yaml,
        instance_yaml,
        semantic,
        instance,
        semantic_model,
        instance_model,
    )


@pytest.fixture(scope="module")
def server(setup: Setup) -> Iterator[str]:
    tmp = setup.root / "server"
    tmp.mkdir()
    models = {p.stem: p.read_text() for p in sorted((setup.root / "models").glob("*.toml"))}
    # serve_until_ready writes its own models dir; the weights are the setup's.
    settings = {k: str(v).lower() for k, v in EXACT.items()}
    base, proc = serve_until_ready(models, tmp, weights_dir=str(setup.root / "weights"), **settings)
    yield base
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _predictor(setup: Setup, name: str) -> Any:
    spec = next(s for s in load_repository(setup.root / "models") if s.name == name)
    return load_predictor(spec, setup.settings())


@pytest.fixture(scope="module")
def semantic_in_process(setup: Setup) -> SemanticMetrics:
    """evaluate_predictor on the semantic val split, one image a batch (the exact path)."""
    samples, names = setup.semantic.val, setup.semantic.categories
    metrics = evaluate_predictor(_predictor(setup, "seg"), samples, names, batch_size=1)
    assert isinstance(metrics, SemanticMetrics)
    return metrics


# ------------------------------------------------------------- independent computations


def _displayed(path: Path) -> torch.Tensor:
    """The image as displayed, decoded by Pillow alone: (3, H, W) uint8."""
    with Image.open(path) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()


def _semantic_reference(setup: Setup) -> tuple[list[list[int]], dict[str, float | None], int]:
    """Confusion counts and IoUs by a plain torchvision forward and a per-class loop."""
    preprocess = get_model_weights(SEMANTIC_ARCH).DEFAULT.transforms()
    k = len(setup.semantic.categories)
    confusion = [[0] * k for _ in range(k)]
    classes_drawn: set[int] = set()
    for sample in setup.semantic.val:
        image = _displayed(sample.image)
        with torch.inference_mode():
            logits = setup.semantic_model(preprocess(image).unsqueeze(0))["out"]
            logits = F.interpolate(
                logits, size=image.shape[-2:], mode="bilinear", align_corners=False
            )
        predicted = logits.argmax(1)[0].numpy()
        classes_drawn |= set(np.unique(predicted).tolist())
        with Image.open(sample.mask) as mask_image:
            labels = np.array(mask_image)
        for t in range(k):
            for p in range(k):
                confusion[t][p] += int(np.sum((labels == t) & (predicted == p)))
    iou: dict[str, float | None] = {}
    for c, name in enumerate(setup.semantic.categories):
        both = confusion[c][c]
        union = sum(confusion[c]) + sum(row[c] for row in confusion) - both
        iou[name] = both / union if union else None
    return confusion, iou, len(classes_drawn)


def _instance_reference(setup: Setup) -> tuple[dict[str, list[float]], int]:
    """pycocotools, the documented way, on the dataset's own JSON and detections of the
    plain torchvision model (its defaults: score > 0.05, at most 100, masks > 0.5)."""
    data = yaml_labels(setup.instance_yaml)
    gt_file = setup.instance_yaml.parent / data["val"]["annotations"]
    preprocess = get_model_weights(INSTANCE_ARCH).DEFAULT.transforms()
    model = setup.instance_model
    assert model.roi_heads.score_thresh == 0.05 and model.roi_heads.detections_per_img == 100
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
    ids = sorted(gt.getCatIds())  # label k is the k-th smallest id
    by_name = {img["file_name"]: img["id"] for img in gt.dataset["images"]}
    results: list[dict[str, Any]] = []
    for sample in setup.instance.val:
        with torch.inference_mode():
            out = model([preprocess(_displayed(sample.image))])[0]
        for label, score, box, prob in zip(
            out["labels"].tolist(),
            out["scores"].tolist(),
            out["boxes"].tolist(),
            out["masks"][:, 0].numpy(),
            strict=True,
        ):
            rle = coco_mask.encode(np.asfortranarray(prob > 0.5, dtype=np.uint8))
            x0, y0, x1, y1 = box
            results.append(
                {
                    "image_id": by_name[sample.image.name],
                    "category_id": ids[label - 1],
                    "score": score,
                    "segmentation": rle,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                }
            )
    assert results, "the calibrated model detects something"
    stats = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for iou_type in ("segm", "bbox"):
            keep = "segmentation" if iou_type == "segm" else "bbox"
            dets = [
                {k: v for k, v in r.items() if k in (keep, "image_id", "category_id", "score")}
                for r in results
            ]
            evaluator = COCOeval(gt, gt.loadRes(dets), iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            stats[iou_type] = evaluator.stats[:3].tolist()
    return stats, len(results)


def yaml_labels(path: Path) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load(path.read_text()))


# ------------------------------------------------------------------------------- tests


def test_semantic_in_process_equals_http_equals_reference(
    setup: Setup, server: str, semantic_in_process: SemanticMetrics
) -> None:
    samples, names = setup.semantic.val, setup.semantic.categories
    in_process = semantic_in_process
    over_http = evaluate_url(server, "seg", samples, names, batch_size=2, concurrency=2)
    assert over_http == in_process

    confusion, iou, classes_drawn = _semantic_reference(setup)
    assert classes_drawn >= 2, "the calibrated model draws more than one class"
    assert in_process.confusion == confusion
    assert in_process.iou == pytest.approx(iou, rel=1e-12)
    present = [v for v in iou.values() if v is not None]
    assert in_process.miou == pytest.approx(sum(present) / len(present), rel=1e-12)
    total = sum(map(sum, confusion))
    correct = sum(confusion[c][c] for c in range(len(confusion)))
    assert in_process.pixel_accuracy == pytest.approx(correct / total, rel=1e-12)

    # Batched, images sharing a network shape run together: only rounding may differ.
    batched = evaluate_predictor(_predictor(setup, "seg"), samples, names, batch_size=4)
    assert batched.miou == pytest.approx(in_process.miou, abs=0.01)


def test_instance_in_process_equals_http_equals_pycocotools(setup: Setup, server: str) -> None:
    samples, names = setup.instance.val, setup.instance.categories
    in_process = evaluate_predictor(_predictor(setup, "inst"), samples, names, batch_size=1)
    over_http = evaluate_url(server, None, samples, names, concurrency=2)  # the default model
    assert isinstance(in_process, InstanceMetrics)
    assert over_http == in_process

    stats, detections = _instance_reference(setup)
    assert in_process.detections == detections
    # Not vacuous: some random boxes do hit (random masks, at IoU >= 0.5, do not).
    assert in_process.box_ap50 > 0
    got = {
        "segm": [in_process.mask_ap, in_process.mask_ap50, in_process.mask_ap75],
        "bbox": [in_process.box_ap, in_process.box_ap50, in_process.box_ap75],
    }
    for kind in ("segm", "bbox"):
        assert got[kind] == pytest.approx([max(v, 0.0) for v in stats[kind]], abs=1e-12)


def test_cli_json_in_process_and_over_http(
    setup: Setup,
    server: str,
    semantic_in_process: SemanticMetrics,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in setup.settings().model_dump().items():
        if key in {"models_dir", "weights_dir", *EXACT}:
            monkeypatch.setenv(f"SEGSERVE_{key.upper()}", str(value).lower())
    expected = semantic_in_process
    assert main(["evaluate", "--data", str(setup.semantic_yaml), "--json", "--batch", "1"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["model"] == "seg" and report["split"] == "val" and report["images"] == 4
    assert report["task"] == "semantic"
    assert report["miou"] == expected.miou and report["iou"] == expected.iou
    assert report["confusion"] == expected.confusion
    # Not a terminal: one plain line per image on stderr.
    assert captured.err.count("\n") >= 4 and "[4/4]" in captured.err

    argv = ["evaluate", "--data", str(setup.instance_yaml), "--url", server, "--limit", "2"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "inst" and report["images"] == 2
    assert set(report["mask_ap_per_class"]) == {"circle", "square", "triangle"}
    assert main([*argv[:-1], "1"]) == 0  # the table
    table = capsys.readouterr().out
    assert "mask" in table and "box" in table and "AP50" in table


def test_cli_refuses_a_model_of_another_task_or_size(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEGSERVE_MODELS_DIR", str(setup.root / "models"))
    monkeypatch.setenv("SEGSERVE_WEIGHTS_DIR", str(setup.root / "weights"))
    data = ["evaluate", "--data", str(setup.semantic_yaml)]
    assert main([*data, "--model", "inst"]) == 2
    assert "'inst' is for instance segmentation; the dataset is semantic" in capsys.readouterr().err

    other = setup.root / "models-other"
    other.mkdir()
    (other / "seg5.toml").write_text(
        model_toml(
            task="semantic",
            architecture=SEMANTIC_ARCH,
            checkpoint="seg.pth",
            categories=["background", "a", "b", "c", "d"],
        )
    )
    monkeypatch.setenv("SEGSERVE_MODELS_DIR", str(other))
    assert main(data) == 2
    err = capsys.readouterr().err
    assert "'seg5' has 5 categories" in err and "the dataset has 4" in err


def test_cli_lists_every_dataset_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "task: semantic\nformat: masks\nnames: [bg, a]\n"
        "train:\n  images: no-images\n  masks: no-masks\n"
    )
    assert main(["evaluate", "--data", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "is refused" in err and "no-images" in err and "no-masks" in err
