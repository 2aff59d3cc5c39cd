"""app/evaluation.py: the confusion matrix against hand-computed values, and COCO AP against
known values and against pycocotools run the documented way on hand-made JSON files."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from app.evaluate import evaluate_predictor
from app.evaluation import ConfusionMatrix, Detection, instance_metrics
from app.output.rle import mask_to_rle
from app.results import Instance, InstanceResult, SemanticResult
from app.training.datasets import InstanceAnnotation, InstanceSample, SemanticSample

NAMES = ["background", "cat", "dog", "bird"]

# ------------------------------------------------------------------------------ semantic


def test_confusion_matrix_by_hand() -> None:
    target = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
    prediction = np.array([[0, 1, 1], [1, 0, 2]], dtype=np.uint8)
    matrix = ConfusionMatrix(4, NAMES)
    matrix.update(target, prediction)
    metrics = matrix.compute()
    # The 255 pixel (predicted 2) counts nowhere: class 2 is never predicted.
    assert metrics.confusion == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert metrics.pixel_accuracy == pytest.approx(3 / 5)
    assert metrics.iou["background"] == pytest.approx(1 / 3)  # 1 / (2 + 2 - 1)
    assert metrics.iou["cat"] == pytest.approx(2 / 3)  # 2 / (2 + 3 - 2)
    assert metrics.iou["dog"] == 0.0  # labelled, never found
    assert metrics.iou["bird"] is None  # neither labelled nor predicted
    assert metrics.miou == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)  # bird left out


def test_a_class_only_predicted_has_iou_zero_and_counts() -> None:
    matrix = ConfusionMatrix(3)
    matrix.update(np.zeros((2, 2), np.uint8), np.array([[0, 0], [0, 2]], np.uint8))
    metrics = matrix.compute()
    assert metrics.iou == {"0": 0.75, "1": None, "2": 0.0}
    assert metrics.miou == pytest.approx(0.375)


def test_confusion_matrix_accumulates_and_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    matrix = ConfusionMatrix(5)
    targets, predictions = [], []
    for shape in [(7, 9), (12, 5), (3, 3)]:
        target = rng.integers(0, 5, shape).astype(np.uint8)
        target[rng.random(shape) < 0.2] = 255
        prediction = rng.integers(0, 4, shape).astype(np.uint8)  # class 4 never predicted
        matrix.update(target, prediction)
        targets.append(target.ravel())
        predictions.append(prediction.ravel())
    metrics = matrix.compute()
    t, p = np.concatenate(targets), np.concatenate(predictions)
    keep = t != 255
    t, p = t[keep], p[keep]
    assert metrics.pixel_accuracy == pytest.approx(float(np.mean(t == p)))
    for k in range(5):
        both = np.sum((t == k) & (p == k))
        either = np.sum((t == k) | (p == k))
        assert metrics.iou[str(k)] == pytest.approx(both / either)
        assert metrics.confusion[k] == [int(np.sum((t == k) & (p == j))) for j in range(5)]


def test_nothing_labelled_gives_zeros_not_nan() -> None:
    matrix = ConfusionMatrix(3)
    matrix.update(np.full((4, 4), 255, np.uint8), np.ones((4, 4), np.uint8))
    metrics = matrix.compute()
    assert metrics.pixel_accuracy == 0.0 and metrics.miou == 0.0
    assert set(metrics.iou.values()) == {None}
    json.dumps(metrics.as_dict(), allow_nan=False)


def test_bad_inputs_are_refused() -> None:
    matrix = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape|labels are"):
        matrix.update(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="class indices"):
        matrix.update(np.full((2, 2), 3, np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="class indices"):
        matrix.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 7, np.uint8))
    with pytest.raises(ValueError, match="names"):
        ConfusionMatrix(3, ["a", "b"])


def test_semantic_table_and_dict() -> None:
    matrix = ConfusionMatrix(4, NAMES)
    matrix.update(np.array([[0, 1]], np.uint8), np.array([[0, 1]], np.uint8))
    metrics = matrix.compute()
    table = metrics.table()
    assert "mIoU" in table and "pixel accuracy" in table
    bird = next(line for line in table.splitlines() if line.startswith("bird"))
    assert bird.split() == ["bird", "-", "0"]
    data = json.loads(json.dumps(metrics.as_dict()))
    assert data["task"] == "semantic" and data["miou"] == 1.0 and data["iou"]["bird"] is None
    assert metrics.headline == ("miou", 1.0)


# ------------------------------------------------------------------------------ instance

H, W = 40, 50


def _square(x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
    return (x0, y0, x1, y0, x1, y1, x0, y1)


def _polygon_mask(polygons: list[tuple[float, ...]]) -> np.ndarray:
    """pycocotools' own rasterisation of polygons (what COCOeval compares masks with)."""
    rle = coco_mask.merge(coco_mask.frPyObjects([list(p) for p in polygons], H, W))
    return coco_mask.decode(rle).astype(bool)


def _sample(index: int, *annotations: InstanceAnnotation) -> InstanceSample:
    return InstanceSample(Path(f"im{index}.png"), H, W, annotations, image_id=100 + index)


def _annotation(label: int, box: tuple[float, float, float, float]) -> InstanceAnnotation:
    return InstanceAnnotation(label=label, box=box, polygons=(_square(*box),))


def _instance(label: int, score: float, mask: np.ndarray, box: Any) -> Instance:
    ys, xs = np.nonzero(mask)
    y0, x0 = int(ys.min()), int(xs.min())
    crop = mask[y0 : ys.max() + 1, x0 : xs.max() + 1]
    return Instance(label, score, tuple(box), crop, (x0, y0))


def _detection(label: int, score: float, mask: np.ndarray, box: Any) -> Detection:
    return Detection(label, score, tuple(box), mask_to_rle(mask))


SAMPLES = [
    _sample(0, _annotation(1, (2, 3, 20, 18)), _annotation(2, (25, 5, 45, 35))),
    _sample(1, _annotation(1, (10, 10, 30, 30))),
]


def test_perfect_predictions_give_ap_one() -> None:
    results = [
        InstanceResult(
            H,
            W,
            [
                _instance(a.label, 0.9 - 0.1 * k, _polygon_mask(list(a.polygons)), a.box)
                for k, a in enumerate(sample.annotations)
            ],
        )
        for sample in SAMPLES
    ]
    metrics = instance_metrics(SAMPLES, results, NAMES)
    for value in (metrics.mask_ap, metrics.mask_ap50, metrics.mask_ap75):
        assert value == pytest.approx(1.0)
    for value in (metrics.box_ap, metrics.box_ap50, metrics.box_ap75):
        assert value == pytest.approx(1.0)
    # bird has no ground truth: left out as COCOeval leaves it out, not scored 0.
    assert metrics.mask_ap_per_class == {
        "cat": pytest.approx(1.0),
        "dog": pytest.approx(1.0),
        "bird": None,
    }
    assert (metrics.images, metrics.annotations, metrics.detections) == (2, 3, 3)
    assert metrics.headline == ("mask_ap", pytest.approx(1.0))


def test_no_predictions_give_zero() -> None:
    metrics = instance_metrics(SAMPLES, [InstanceResult(H, W, []), []], NAMES)
    assert metrics.as_dict()["mask_ap"] == 0.0
    assert (metrics.mask_ap, metrics.mask_ap50, metrics.box_ap, metrics.box_ap75) == (0, 0, 0, 0)
    assert metrics.mask_ap_per_class == {"cat": 0.0, "dog": 0.0, "bird": None}
    table = metrics.table()
    assert "mask" in table and "bird" in table
    json.dumps(metrics.as_dict(), allow_nan=False)


def test_no_ground_truth_at_all_gives_zero() -> None:
    samples = [_sample(0)]
    mask = np.zeros((H, W), bool)
    mask[5:10, 5:10] = True
    metrics = instance_metrics(samples, [[_detection(1, 0.5, mask, (5, 5, 10, 10))]], NAMES)
    assert metrics.mask_ap == 0.0 and metrics.box_ap == 0.0
    assert set(metrics.mask_ap_per_class.values()) == {None}


def test_a_false_positive_above_the_true_one_halves_ap() -> None:
    """One object, two detections: a miss scored 0.9, then a perfect hit scored 0.8.

    Precision is 1/2 at recall 1 and, interpolated, at every recall threshold: AP = 0.5.
    """
    annotation = _annotation(1, (2, 3, 20, 18))
    samples = [_sample(0, annotation)]
    miss = np.zeros((H, W), bool)
    miss[25:35, 30:45] = True
    found = [
        _detection(1, 0.9, miss, (30, 25, 45, 35)),
        _detection(1, 0.8, _polygon_mask(list(annotation.polygons)), annotation.box),
    ]
    metrics = instance_metrics(samples, [found], NAMES)
    for value in (metrics.mask_ap, metrics.mask_ap50, metrics.mask_ap75, metrics.box_ap):
        assert value == pytest.approx(0.5)


def test_mask_iou_087_counts_at_eight_of_ten_thresholds() -> None:
    """A mask overlapping its object with IoU 0.87 is a hit at IoU 0.50..0.85 (8 of the 10
    thresholds) and a miss at 0.90 and 0.95: mask AP 0.8; its box is exact: box AP 1."""
    samples = [_sample(0, InstanceAnnotation(1, (0, 0, 10, 10), rle=_rle_square(10, 10)))]
    mask = np.zeros((H, W), bool)
    mask[:10, :10] = True
    mask[9, :10] = False
    mask[8, :3] = False  # 100 - 13 = 87 pixels, all inside the object
    metrics = instance_metrics(samples, [[_detection(1, 0.7, mask, (0, 0, 10, 10))]], NAMES)
    assert metrics.mask_ap == pytest.approx(0.8)
    assert metrics.mask_ap50 == pytest.approx(1.0) and metrics.mask_ap75 == pytest.approx(1.0)
    assert metrics.box_ap == pytest.approx(1.0)


def _rle_square(h: int, w: int) -> dict[str, Any]:
    mask = np.zeros((H, W), bool)
    mask[:h, :w] = True
    return mask_to_rle(mask)


def _coco_reference(tmp_path: Path, gt: dict[str, Any], dts: list[dict[str, Any]]) -> dict:
    """pycocotools the documented way: a ground-truth file, loadRes, COCOeval per type."""
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    stats = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        for iou_type in ("segm", "bbox"):
            keep = "segmentation" if iou_type == "segm" else "bbox"
            results = [
                {k: v for k, v in d.items() if k in (keep, "image_id", "category_id", "score")}
                for d in dts
            ]
            evaluator = COCOeval(coco, coco.loadRes(results), iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            stats[iou_type] = evaluator.stats[:3].tolist()
    return stats


def test_an_imperfect_case_equals_pycocotools_on_json_files(tmp_path: Path) -> None:
    """Sparse COCO ids, polygons, compressed and uncompressed RLE, a crowd region, misses,
    duplicates and false positives: the in-memory evaluation equals the file-based one."""
    rng = np.random.default_rng(7)
    coco_ids = {1: 5, 2: 9, 3: 11}  # label -> the dataset's own id
    rows = [
        (1, (2, 3, 20, 18), "polygon", False),
        (2, (25, 5, 45, 35), "rle", False),
        (1, (30, 2, 48, 12), "raw", False),
        (3, (0, 20, 22, 39), "polygon", True),
        (2, (5, 22, 30, 38), "polygon", False),
    ]
    images, gt_anns, samples, dts, found = [], [], [], [], []
    for index in range(3):
        anns = []
        for label, box, kind, crowd in rows[index : index + 3]:
            x0, y0, x1, y1 = box
            mask = np.zeros((H, W), bool)
            mask[y0:y1, x0:x1] = True
            if kind == "polygon":
                polygons = (_square(*box),)
                segmentation: Any = [list(polygons[0])]
                ann = InstanceAnnotation(label, box, polygons=polygons, iscrowd=crowd)
                mask = _polygon_mask(list(polygons))
            else:
                rle = mask_to_rle(mask)
                if kind == "raw":  # uncompressed counts, as some COCO files have
                    rle = {"size": [H, W], "counts": _uncompressed_counts(mask)}
                segmentation = rle
                ann = InstanceAnnotation(label, box, rle=rle, iscrowd=crowd)
            anns.append(ann)
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": 100 + index,
                    "category_id": coco_ids[label],
                    "segmentation": segmentation,
                    "area": float(mask.sum()),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": int(crowd),
                }
            )
            # Detections: a jittered copy of the object (sometimes the wrong class), and
            # a random false positive.
            for _ in range(2):
                jitter = rng.integers(-3, 4, 4)
                jx0, jy0 = max(0, x0 + jitter[0]), max(0, y0 + jitter[1])
                jx1, jy1 = min(W, x1 + jitter[2]), min(H, y1 + jitter[3])
                found_mask = np.zeros((H, W), bool)
                found_mask[jy0:jy1, jx0:jx1] = True
                found_mask &= rng.random((H, W)) < 0.95
                guess = label if rng.random() < 0.8 else int(rng.integers(1, 4))
                score = float(np.float32(rng.random()))
                found.append((index, _detection(guess, score, found_mask, (jx0, jy0, jx1, jy1))))
        samples.append(InstanceSample(Path(f"{index}.png"), H, W, tuple(anns), 100 + index))
        images.append({"id": 100 + index, "height": H, "width": W, "file_name": f"{index}.png"})
    for index, d in found:
        x0, y0, x1, y1 = d.box
        dts.append(
            {
                "image_id": 100 + index,
                "category_id": coco_ids[d.class_id],
                "segmentation": d.rle,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": d.score,
            }
        )
    gt = {
        "images": images,
        "annotations": gt_anns,
        "categories": [{"id": i, "name": NAMES[k]} for k, i in coco_ids.items()],
    }
    reference = _coco_reference(tmp_path, gt, dts)
    per_image = [[d for i, d in found if i == index] for index in range(3)]
    metrics = instance_metrics(samples, per_image, NAMES, list(coco_ids.values()))
    got_segm = [metrics.mask_ap, metrics.mask_ap50, metrics.mask_ap75]
    got_bbox = [metrics.box_ap, metrics.box_ap50, metrics.box_ap75]
    assert got_segm == pytest.approx(reference["segm"], abs=1e-12)
    assert got_bbox == pytest.approx(reference["bbox"], abs=1e-12)
    assert 0.05 < metrics.mask_ap < 0.95, "an imperfect case, not a trivial one"


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts: run lengths down the columns, starting with 0s."""
    flat = mask.ravel(order="F")
    counts, current, run = [], False, 0
    for value in flat:
        if bool(value) == current:
            run += 1
        else:
            counts.append(run)
            current, run = bool(value), 1
    counts.append(run)
    return counts


def test_results_must_match_samples() -> None:
    with pytest.raises(ValueError, match="2 samples but 1 results"):
        instance_metrics(SAMPLES, [[]], NAMES)


# ------------------------------------------------- app/evaluate.py with a fake predictor


class _EchoPredictor:
    """Predicts each image's own red channel as its class map; records the batches."""

    task = "semantic"

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def network_shape(self, height: int, width: int) -> tuple[int, int]:
        return (height, width)

    def default_params(self) -> None:
        return None

    def predict_batch(self, images: list[np.ndarray], params: list[Any]) -> list[Any]:
        assert len({image.shape for image in images}) == 1, "one network shape a batch"
        self.batches.append([image.shape[:2] for image in images])
        return [SemanticResult(class_map=image[..., 0].copy()) for image in images]


def test_evaluate_predictor_batches_by_shape_and_scores_every_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    samples, expected = [], ConfusionMatrix(3)
    for k, shape in enumerate([(8, 8), (8, 9), (8, 8), (8, 8), (8, 9), (8, 8), (6, 5)]):
        classes = rng.integers(0, 3, shape).astype(np.uint8)
        labels = classes.copy()
        labels[0, :] = rng.integers(0, 3, shape[1])  # some errors
        labels[-1, -1] = 255
        image, mask = tmp_path / f"{k}.png", tmp_path / f"{k}-mask.png"
        Image.fromarray(np.stack([classes] * 3, axis=-1)).save(image)
        Image.fromarray(labels).save(mask)
        samples.append(SemanticSample(image, mask))
        expected.update(labels, classes)
    predictor = _EchoPredictor()
    seen: list[str] = []

    class Sink:
        def update(self, source: str, error: str | None, output: str | None) -> None:
            assert error is None and output is not None and output.endswith("classes")
            seen.append(source)

    metrics = evaluate_predictor(predictor, samples, ["a", "b", "c"], batch_size=3, progress=Sink())
    assert metrics.confusion == expected.compute().confusion
    assert sorted(seen) == sorted(str(s.image) for s in samples)
    assert sum(len(b) for b in predictor.batches) == len(samples)
    assert max(len(b) for b in predictor.batches) == 3


def test_a_model_naming_classes_differently_is_compared_by_index_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from app.evaluate import check_model

    with caplog.at_level("WARNING", logger="app.evaluate"):
        check_model("m", "semantic", "semantic", ["bg", "cat", "dog"], ["bg", "dog", "cat"])
    assert "1: cat / dog" in caplog.text and "2: dog / cat" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="app.evaluate"):
        check_model("m", "semantic", "semantic", ["bg", "cat"], ["bg", "cat"])
    assert caplog.text == ""
