"""How far one server response is from the raw fp32 pipeline's result for the same image.

Every server holds the same weights, so at fp32 the answers should agree up to rounding;
at a reduced precision this is the agreement with fp32 the issue asks to report.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask


def class_map_agreement(body: bytes, reference: np.ndarray) -> dict[str, Any]:
    """Share of pixels whose class equals the reference's (a PNG class map body)."""
    with Image.open(io.BytesIO(body)) as image:
        got = np.array(image)  # palette index or grey value: the class id either way
    if got.shape != reference.shape:
        return {
            "pixels_equal": 0.0,
            "summary": f"class map shape {got.shape}, the reference's {reference.shape}",
        }
    equal = float((got == reference).mean())
    classes = len(np.unique(reference))
    summary = f"class map: {100 * equal:.3f}% of pixels equal ({classes} classes in the reference)"
    if classes == 1:
        # Untrained weights can predict one class everywhere: then agreement says little.
        summary += "; a one-class reference says little"
    return {"pixels_equal": equal, "reference_classes": classes, "summary": summary}


def _mask(rle: dict[str, Any]) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}) > 0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def instance_agreement(body: bytes, reference: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Instance counts, labels in score order, and the mean mask IoU of the pairs in order."""
    got = json.loads(body)["instances"]
    pairs = list(zip(got, reference, strict=False))
    labels_equal = sum(g["class_id"] == r["class_id"] for g, r in pairs)
    ious = [_iou(_mask(g["rle"]), _mask(r["rle"])) for g, r in pairs if "rle" in g]
    mean_iou = sum(ious) / len(ious) if ious else None
    summary = (
        f"{len(got)} instances (reference {len(reference)}), {labels_equal} of {len(pairs)} "
        f"labels equal in order"
    )
    if mean_iou is not None:
        summary += f", mean mask IoU {mean_iou:.4f}"
    return {
        "instances": len(got),
        "reference_instances": len(reference),
        "labels_equal": labels_equal,
        "mean_mask_iou": mean_iou,
        "summary": summary,
    }


def agreement(task: str, body: bytes, reference: Any) -> dict[str, Any]:
    if task == "semantic":
        return class_map_agreement(body, reference)
    return instance_agreement(body, reference)
