"""Masks as PNG images: the class map of /segment and the instance id map of /instances."""

from __future__ import annotations

import numpy as np

from app.output import png
from app.output.palette import palette_values
from app.results import InstanceResult

# Instance PNGs: 8-bit while ids fit, 16-bit beyond (docs/api.md, POST /instances png).
_MAX_U8_INSTANCES = 255
_MAX_U16_INSTANCES = 65535


def class_map_to_png(class_map: np.ndarray, compress_level: int = 1) -> bytes:
    """A (H, W) uint8 class map as an 8-bit palette PNG: pixel value = class index."""
    return png.palette_png(class_map, palette_values(), compress_level)


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
