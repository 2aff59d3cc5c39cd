"""Masks as COCO run-length encoding (the `rle` of /instances' JSON)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from app.results import Instance


def _rle_dict(rle: dict[str, Any]) -> dict[str, Any]:
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a (h, w) mask: {"size": [h, w], "counts": "<str>"}."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (h, w), got shape {mask.shape}")
    # COCO RLE runs go down the columns, hence Fortran order.
    rle = coco_mask.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return _rle_dict(rle)


def instance_rle(instance: Instance, height: int, width: int) -> dict[str, Any]:
    """COCO RLE of the instance's mask in the full (height, width) image.

    Built from the crop alone (run boundaries shifted to full-image positions), so the cost
    follows the crop's size; identical to `mask_to_rle(instance.full_mask(height, width))`.
    """
    x0, y0 = instance.origin
    crop = instance.mask != 0
    h, w = crop.shape
    # One row per crop column, with a 0 above and below: every run starts and ends inside.
    columns = np.zeros((w, h + 2), dtype=np.int8)
    columns[:, 1:-1] = crop.T
    col, row = np.nonzero(np.diff(columns, axis=1))
    changes = (x0 + col) * height + y0 + row  # column-major index where the value flips
    # A run ending at the image's bottom row and one starting at the top of the next column
    # meet at the same index: drop both flips so the runs merge, as pycocotools' encode does.
    # A flip at the very end is no run boundary either.
    flips, seen = np.unique(changes, return_counts=True)
    flips = flips[(seen == 1) & (flips < height * width)]
    counts = np.diff(np.concatenate(([0], flips, [height * width])))
    uncompressed = {"size": [height, width], "counts": counts.tolist()}
    return _rle_dict(coco_mask.frPyObjects(uncompressed, height, width))
