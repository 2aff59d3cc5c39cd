"""Overlays: the input image with the class map or the instances drawn over it, as a PNG.

Torch appears here only for torchvision's box drawing.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

from app.output import png
from app.output.maps import instance_map
from app.output.palette import colour, palette_values
from app.results import InstanceResult


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")


def _paint(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """Blend `colours[label]` over every pixel whose label is not 0; others stay bit-identical.

    The same arithmetic as torchvision's `draw_segmentation_masks` (float32 blend, truncated
    to uint8), computed once per (label, value, channel) into a table; each pixel is then a
    lookup. That function scatters each mask over a (3, H, W) copy, and even a float blend of
    the labelled pixels is an order of magnitude slower than the lookups (docs/PERFORMANCE.md,
    "Encoding's share"). The table has one row per label: at most 256 classes, or 1001
    instance ids (768 KB).
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
    colours = np.array(palette_values(), dtype=np.uint8).reshape(256, 3)
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
    colours = np.array([(0, 0, 0), *map(colour, class_ids)], dtype=np.uint8)
    painted = torch.from_numpy(_paint(image, instance_map(result), colours, alpha))

    boxes = torch.tensor([inst.box for inst in result.instances], dtype=torch.float32)
    texts = [
        f"{labels[c] if 0 <= c < len(labels) else c} {inst.score:.2f}"
        for c, inst in zip(class_ids, result.instances, strict=True)
    ]
    box_colours: list[str | tuple[int, int, int]] = [colour(c) for c in class_ids]
    width = max(1, min(result.height, result.width) // 300 + 1)
    drawn = draw_bounding_boxes(
        painted.permute(2, 0, 1), boxes, labels=texts, colors=box_colours, width=width
    )
    return png.rgb_png(np.ascontiguousarray(drawn.permute(1, 2, 0).numpy()), compress_level)
