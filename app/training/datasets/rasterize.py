"""Annotations to pixel masks, with pycocotools, so masks match COCO's own evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools import mask as mask_utils

from app.training.datasets.samples import InstanceAnnotation, InstanceSample


def instance_masks(sample: InstanceSample) -> npt.NDArray[np.uint8]:
    """(N, H, W) uint8 0/1 masks, one per annotation of ``sample``, in its order."""
    h, w = sample.height, sample.width
    out = np.zeros((len(sample.annotations), h, w), dtype=np.uint8)
    for index, annotation in enumerate(sample.annotations):
        rle = annotation_rle(annotation, h, w)
        if rle is not None:
            out[index] = mask_utils.decode(rle)
    return out


def annotation_rle(annotation: InstanceAnnotation, height: int, width: int) -> Any:
    """The annotation as one compressed pycocotools RLE (its polygons merged); None if empty."""
    if annotation.rle is not None:
        return compressed(annotation.rle)
    if not annotation.polygons:
        return None
    # One object may be several polygons (occluded into pieces): their union is the mask.
    parts = mask_utils.frPyObjects([list(p) for p in annotation.polygons], height, width)
    return mask_utils.merge(parts)


def compressed(rle: dict[str, Any]) -> dict[str, Any]:
    """A COCO RLE in pycocotools' compressed form (counts as bytes)."""
    height, width = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed: plain run lengths, column-major
        result: dict[str, Any] = mask_utils.frPyObjects(rle, height, width)
        return result
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [height, width], "counts": counts}


def rle_box(rle: dict[str, Any]) -> list[float]:
    """[x, y, width, height] of an RLE's extent."""
    return [float(v) for v in mask_utils.toBbox(compressed(rle))]
