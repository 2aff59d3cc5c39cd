"""Metrics shared by ``segserve finetune`` and ``segserve evaluate``; no model code here.

Semantic: a confusion matrix accumulated image by image (labels 255 ignored), giving pixel
accuracy and per-class IoU. Instance: pycocotools' COCOeval on a ground truth built in memory
from the samples, giving mask and box AP as the COCO leaderboards report them.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from app.output.rle import instance_rle
from app.results import InstanceResult
from app.training.datasets import IGNORE_INDEX, InstanceAnnotation, InstanceSample
from app.training.datasets.rasterize import annotation_rle

IGNORE = IGNORE_INDEX  # a semantic label excluded from metrics (and from the loss)


# ----------------------------------------------------------------------------- semantic


@dataclass
class SemanticMetrics:
    """Pixel accuracy and IoU over every labelled pixel of the images seen."""

    pixel_accuracy: float
    iou: dict[str, float | None]  # None: the class is in neither labels nor predictions
    miou: float  # mean over the classes whose IoU is not None
    confusion: list[list[int]]  # [label][prediction] pixel counts

    @property
    def headline(self) -> tuple[str, float]:
        """The one number to select a model by."""
        return "miou", self.miou

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": "semantic",
            "pixel_accuracy": self.pixel_accuracy,
            "miou": self.miou,
            "iou": dict(self.iou),
            "confusion": [list(row) for row in self.confusion],
        }

    def table(self) -> str:
        """Per class: IoU and labelled pixels; then mIoU and pixel accuracy."""
        pixels = [sum(row) for row in self.confusion]
        width = max([len("class"), *(len(name) for name in self.iou)])
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'pixels':>12}"]
        for (name, iou), count in zip(self.iou.items(), pixels, strict=True):
            shown = "-" if iou is None else f"{iou:.4f}"
            lines.append(f"{name:<{width}}  {shown:>6}  {count:>12}")
        lines.append(f"{'mIoU':<{width}}  {self.miou:>6.4f}")
        lines.append(f"{'pixel accuracy':<{width}}  {self.pixel_accuracy:>6.4f}")
        return "\n".join(lines)


class ConfusionMatrix:
    """Pixel counts of (label, prediction) pairs over many images; 255 labels are ignored."""

    def __init__(self, num_classes: int, names: Sequence[str] | None = None) -> None:
        if not 1 <= num_classes <= IGNORE:
            raise ValueError(f"num_classes must be 1..{IGNORE}, got {num_classes}")
        if names is not None and len(names) != num_classes:
            raise ValueError(f"{len(names)} names for {num_classes} classes")
        self.num_classes = num_classes
        self.names = list(names) if names is not None else [str(k) for k in range(num_classes)]
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, target: np.ndarray, prediction: np.ndarray) -> None:
        """Add one image: (H, W) integer label and predicted class maps."""
        if target.shape != prediction.shape:
            raise ValueError(f"labels are {target.shape} but the prediction is {prediction.shape}")
        labelled = target != IGNORE
        t = target[labelled].astype(np.int64)
        p = prediction[labelled].astype(np.int64)
        n = self.num_classes
        if t.size and (max(t.max(), p.max()) >= n or min(t.min(), p.min()) < 0):
            raise ValueError(f"class indices must be 0..{n - 1} (or {IGNORE} in labels)")
        # One pass over the pixels: each (label, prediction) pair is one bin of n * n.
        self.counts += np.bincount(t * n + p, minlength=n * n).reshape(n, n)

    def compute(self) -> SemanticMetrics:
        counts = self.counts
        total = int(counts.sum())
        correct = np.diag(counts)
        # The union of label and prediction per class = label pixels + predicted pixels - both.
        union = counts.sum(axis=1) + counts.sum(axis=0) - correct
        iou: dict[str, float | None] = {
            name: (float(correct[k] / union[k]) if union[k] else None)
            for k, name in enumerate(self.names)
        }
        present = [v for v in iou.values() if v is not None]
        return SemanticMetrics(
            # No labelled pixel at all: nothing was right; 0 rather than NaN in the JSON.
            pixel_accuracy=float(correct.sum() / total) if total else 0.0,
            iou=iou,
            miou=float(np.mean(present)) if present else 0.0,
            confusion=counts.tolist(),
        )


# ----------------------------------------------------------------------------- instance


@dataclass(frozen=True)
class Detection:
    """One predicted object as COCO scores it: full-image RLE, score, box (x0, y0, x1, y1)."""

    class_id: int  # 1..K
    score: float
    box: tuple[float, float, float, float]
    rle: dict[str, Any]  # {"size": [h, w], "counts": str}


def detections(result: InstanceResult) -> list[Detection]:
    """A predictor's result as detections (the same RLE the service's JSON sends)."""
    return [
        Detection(i.class_id, i.score, i.box, instance_rle(i, result.height, result.width))
        for i in result.instances
    ]


@dataclass
class InstanceMetrics:
    """COCO AP (IoU 0.50:0.95), AP50 and AP75 of masks and boxes, over every image seen."""

    mask_ap: float
    mask_ap50: float
    mask_ap75: float
    box_ap: float
    box_ap50: float
    box_ap75: float
    # Per class AP (IoU 0.50:0.95); None: no ground truth, excluded as COCOeval does.
    mask_ap_per_class: dict[str, float | None] = field(default_factory=dict)
    box_ap_per_class: dict[str, float | None] = field(default_factory=dict)
    images: int = 0
    annotations: int = 0
    detections: int = 0

    @property
    def headline(self) -> tuple[str, float]:
        """The one number to select a model by."""
        return "mask_ap", self.mask_ap

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": "instance",
            "mask_ap": self.mask_ap,
            "mask_ap50": self.mask_ap50,
            "mask_ap75": self.mask_ap75,
            "box_ap": self.box_ap,
            "box_ap50": self.box_ap50,
            "box_ap75": self.box_ap75,
            "mask_ap_per_class": dict(self.mask_ap_per_class),
            "box_ap_per_class": dict(self.box_ap_per_class),
            "images": self.images,
            "annotations": self.annotations,
            "detections": self.detections,
        }

    def table(self) -> str:
        """AP, AP50, AP75 of masks and boxes; then AP per class."""
        lines = [f"{'':<6}  {'AP':>6}  {'AP50':>6}  {'AP75':>6}"]
        for kind in ("mask", "box"):
            ap, ap50, ap75 = (getattr(self, f"{kind}_{s}") for s in ("ap", "ap50", "ap75"))
            lines.append(f"{kind:<6}  {ap:>6.4f}  {ap50:>6.4f}  {ap75:>6.4f}")
        width = max([len("class"), *(len(name) for name in self.mask_ap_per_class)])
        lines += ["", f"{'class':<{width}}  {'mask AP':>7}  {'box AP':>7}"]
        for name, mask_ap in self.mask_ap_per_class.items():
            box_ap = self.box_ap_per_class.get(name)
            cells = ["-" if v is None else f"{v:.4f}" for v in (mask_ap, box_ap)]
            lines.append(f"{name:<{width}}  {cells[0]:>7}  {cells[1]:>7}")
        lines.append(
            f"{self.images} images, {self.annotations} annotations, {self.detections} detections"
        )
        return "\n".join(lines)


def _xywh(box: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def _ground_truth_rle(annotation: InstanceAnnotation, height: int, width: int) -> dict[str, Any]:
    """One annotation's mask as COCO RLE, rasterised by pycocotools as training sees it
    (checked datasets have real polygons or an RLE; a maskless one stands as its box)."""
    rle = annotation_rle(annotation, height, width)
    if rle is not None:
        return dict(rle)
    x0, y0, x1, y1 = annotation.box
    box = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    return dict(coco_mask.merge(coco_mask.frPyObjects(box, height, width)))


def _coco(images: list[dict[str, Any]], categories: list[dict[str, Any]], anns: list[Any]) -> COCO:
    coco = COCO()  # no file: nothing is printed here
    coco.dataset = {"images": images, "categories": categories, "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _evaluate(
    gt: COCO, dt: COCO, iou_type: str, names: list[str]
) -> tuple[list[float], dict[str, float | None]]:
    """COCOeval's AP, AP50, AP75 and AP per category (None: no ground truth)."""
    evaluator = COCOeval(gt, dt, iouType=iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # -1 means "no ground truth anywhere": nothing to find, reported as 0 (not -1, not NaN).
    stats = [max(float(v), 0.0) for v in evaluator.stats[:3]]
    # precision: [IoU threshold, recall threshold, category, area range, max dets];
    # area "all" and the largest max dets are index 0 and -1, as stats[0] uses them.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class: dict[str, float | None] = {}
    for k, name in enumerate(names):
        values = precision[:, :, k]
        values = values[values > -1]
        per_class[name] = float(values.mean()) if values.size else None
    return stats, per_class


def instance_metrics(
    samples: Sequence[InstanceSample],
    results: Sequence[InstanceResult | Sequence[Detection]],
    categories: Sequence[str],
    coco_category_ids: Sequence[int] | None = None,
) -> InstanceMetrics:
    """COCO mask and box AP of ``results`` (one per sample, in order) against ``samples``.

    ``categories`` are the K + 1 names, background first; labels 1..K are the category ids
    COCOeval sees. ``coco_category_ids`` (a COCO dataset's own sparse ids) is accepted so
    callers can pass a Dataset's fields as they are; AP does not depend on what the ids are.
    Detections are scored as COCO scores a results file: an empty list scores 0.
    """
    del coco_category_ids  # AP is the same whatever the ids are called
    if len(samples) != len(results):
        raise ValueError(f"{len(samples)} samples but {len(results)} results")
    names = list(categories[1:])
    coco_categories = [{"id": k, "name": name} for k, name in enumerate(names, start=1)]
    # Images are numbered by position (ids must be unique; YOLO's are indices anyway).
    images: list[dict[str, Any]] = []
    gt_anns: list[dict[str, Any]] = []
    masks: list[dict[str, Any]] = []
    boxes: list[dict[str, Any]] = []
    for index, sample in enumerate(samples):
        h, w = sample.height, sample.width
        images.append({"id": index, "height": h, "width": w})
        for annotation in sample.annotations:
            rle = _ground_truth_rle(annotation, h, w)
            gt_anns.append(
                {
                    # COCOeval marks an unmatched pair with id 0: real ids start at 1.
                    "id": len(gt_anns) + 1,
                    "image_id": index,
                    "category_id": int(annotation.label),
                    "segmentation": rle,
                    "area": float(coco_mask.area(rle)),
                    "bbox": _xywh(annotation.box),
                    "iscrowd": int(annotation.iscrowd),
                }
            )
    for index, result in enumerate(results):
        found = detections(result) if isinstance(result, InstanceResult) else result
        for d in found:
            common = {"image_id": index, "category_id": int(d.class_id), "score": float(d.score)}
            # As COCO.loadRes would build them (it cannot take an empty list): a mask's area
            # and box come from the mask, a box's area from the box.
            masks.append(
                {
                    **common,
                    "id": len(masks) + 1,
                    "segmentation": d.rle,
                    "area": float(coco_mask.area(d.rle)),
                    "bbox": coco_mask.toBbox(d.rle).tolist(),
                }
            )
            box = _xywh(d.box)
            boxes.append({**common, "id": len(boxes) + 1, "bbox": box, "area": box[2] * box[3]})
    gt = _coco(images, coco_categories, gt_anns)
    mask_stats, mask_per_class = _evaluate(gt, _coco(images, coco_categories, masks), "segm", names)
    box_stats, box_per_class = _evaluate(gt, _coco(images, coco_categories, boxes), "bbox", names)
    (mask_ap, mask_ap50, mask_ap75), (box_ap, box_ap50, box_ap75) = mask_stats, box_stats
    return InstanceMetrics(
        mask_ap=mask_ap,
        mask_ap50=mask_ap50,
        mask_ap75=mask_ap75,
        box_ap=box_ap,
        box_ap50=box_ap50,
        box_ap75=box_ap75,
        mask_ap_per_class=mask_per_class,
        box_ap_per_class=box_per_class,
        images=len(samples),
        annotations=len(gt_anns),
        detections=len(masks),
    )
