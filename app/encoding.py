"""Turning predictor results into what the HTTP API returns: PNGs, COCO RLE, overlays.

Pure functions on numpy arrays and the dataclasses of `app.results`; nothing here knows about
FastAPI or models. Torch appears only in the overlays (tensor blending, torchvision's boxes).

Polygons live in `app.polygons`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as coco_mask
from torchvision.utils import draw_bounding_boxes

from app import png
from app.results import Instance, InstanceResult

# Instance PNGs: 8-bit while ids fit, 16-bit beyond (API.md, POST /instances png).
_MAX_U8_INSTANCES = 255
_MAX_U16_INSTANCES = 65535

# ------------------------------------------------------------------------------------- PNGs


@lru_cache(maxsize=1)
def _palette() -> tuple[int, ...]:
    # The PASCAL VOC colormap: the bits of the index spread over the high bits of R, G and B.
    # Injective, so all 256 colours differ, and index 0 is black.
    values: list[int] = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(7, -1, -1):
            r |= (c & 1) << bit
            g |= ((c >> 1) & 1) << bit
            b |= ((c >> 2) & 1) << bit
            c >>= 3
        values += (r, g, b)
    return tuple(values)


def palette() -> list[int]:
    """The fixed 256-colour palette (768 ints, RGB per index); index 0 (background) is black."""
    return list(_palette())


def _colour(class_id: int) -> tuple[int, int, int]:
    p = _palette()
    i = 3 * (class_id % 256)
    return (p[i], p[i + 1], p[i + 2])


def class_map_to_png(class_map: np.ndarray, compress_level: int = 1) -> bytes:
    """A (H, W) uint8 class map as an 8-bit palette PNG: pixel value = class index."""
    return png.palette_png(class_map, _palette(), compress_level)


def instance_map(result: InstanceResult) -> np.ndarray:
    """(H, W) map of instance ids: k = 1-based index in `result.instances`, 0 = background.

    uint8 up to 255 instances, uint16 beyond. Where instances overlap, the earliest (highest
    score) wins: they are painted last-to-first from their mask crops.
    """
    count = len(result.instances)
    if count > _MAX_U16_INSTANCES:
        raise ValueError(f"at most {_MAX_U16_INSTANCES} instances fit a 16-bit map, got {count}")
    dtype = np.uint8 if count <= _MAX_U8_INSTANCES else np.uint16
    ids = np.zeros((result.height, result.width), dtype=dtype)
    for k in range(count, 0, -1):
        instance = result.instances[k - 1]
        x, y = instance.origin
        h, w = instance.mask.shape
        ids[y : y + h, x : x + w][instance.mask.astype(bool)] = k
    return ids


def instance_map_to_png(id_map: np.ndarray, instances_text: str, compress_level: int = 1) -> bytes:
    """An instance id map as a greyscale PNG (uint8: 8-bit, uint16: 16-bit).

    `instances_text` goes into the text chunk `instances` (iTXt, so any Unicode is kept).
    """
    return png.grey_png(id_map, compress_level, {"instances": instances_text})


# -------------------------------------------------------------------------------------- RLE


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


# --------------------------------------------------------------------------------- overlays


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")


def _paint(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """Blend `colours[label]` over every pixel whose label is not 0; others stay bit-identical.

    The same arithmetic as torchvision's `draw_segmentation_masks` (float32 blend, truncated
    to uint8), computed once per (label, value, channel) into a table; each pixel is then a
    lookup. That function scatters each mask over a (3, H, W) copy (5 s for a 1080p map with
    60 classes); blending the labelled pixels in float took 120 ms at 1080p, the lookups
    10 ms. The table has one row per label: at most 256 classes, or 1001 instance ids
    (768 KB).
    """
    keep, paint = np.float32(1 - alpha), np.float32(alpha)
    values = np.arange(256, dtype=np.float32)
    table = (values[None, :, None] * keep + colours[:, None, :].astype(np.float32) * paint).astype(
        np.uint8
    )
    table[0] = np.arange(256, dtype=np.uint8)[:, None]  # label 0: the value itself
    # Channel by channel on contiguous planes (cv2 splits and merges the interleaved pixels
    # at memory speed): a gather into a strided channel of the (H, W, 3) result took twice
    # as long. The index is intp already, which np.take would otherwise convert to.
    rows = labels.astype(np.intp) << 8  # label * 256: the start of its row
    channels: list[np.ndarray] = list(cv2.split(image))
    planes = [
        np.take(np.ascontiguousarray(table[:, :, c]).ravel(), rows + channels[c]) for c in range(3)
    ]
    return cv2.merge(planes)


def semantic_overlay(
    image: np.ndarray, class_map: np.ndarray, alpha: float = 0.5, compress_level: int = 1
) -> bytes:
    """RGB PNG of `image` with each non-background class blended in its palette colour."""
    _check_rgb(image)
    if class_map.shape != image.shape[:2] or class_map.dtype != np.uint8:
        raise ValueError(f"class_map {class_map.shape} {class_map.dtype} does not fit the image")
    colours = np.array(_palette(), dtype=np.uint8).reshape(256, 3)
    return png.rgb_png(_paint(image, class_map, colours, alpha), compress_level)


def instance_overlay(
    image: np.ndarray,
    result: InstanceResult,
    labels: list[str],
    alpha: float = 0.5,
    compress_level: int = 1,
) -> bytes:
    """RGB PNG of `image` with instance masks (colour per class), boxes and "label score".

    Masks are taken from `instance_map`, so overlaps show the higher-scoring instance, as in
    the PNG output.
    """
    _check_rgb(image)
    if (result.height, result.width) != image.shape[:2]:
        raise ValueError(f"result {result.height}x{result.width} does not match {image.shape}")
    if not result.instances:
        return png.rgb_png(image, compress_level)
    class_ids = [inst.class_id for inst in result.instances]
    # Row k: the colour of instance k's class; row 0 (background) is never painted.
    colours = np.array([(0, 0, 0), *map(_colour, class_ids)], dtype=np.uint8)
    painted = torch.from_numpy(_paint(image, instance_map(result), colours, alpha))

    boxes = torch.tensor([inst.box for inst in result.instances], dtype=torch.float32)
    texts = [
        f"{labels[c] if 0 <= c < len(labels) else c} {inst.score:.2f}"
        for c, inst in zip(class_ids, result.instances, strict=True)
    ]
    box_colours: list[str | tuple[int, int, int]] = [_colour(c) for c in class_ids]
    width = max(1, min(result.height, result.width) // 300 + 1)
    drawn = draw_bounding_boxes(
        painted.permute(2, 0, 1), boxes, labels=texts, colors=box_colours, width=width
    )
    return png.rgb_png(np.ascontiguousarray(drawn.permute(1, 2, 0).numpy()), compress_level)
