"""Decoding what segserve sends: COCO compressed RLE, polygons with holes, PNG maps.

Pure numpy and Pillow: no pycocotools, no OpenCV.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

Ring = Sequence[Sequence[int]]  # [[x, y], ...]
Polygon = Sequence[Ring]  # outer ring, then holes

# A compressed RLE value is at most this many 5-bit groups (60 bits fit an int64).
_MAX_GROUPS = 12


def rle_counts(counts: str) -> np.ndarray:
    """The run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``).

    Each value is written in groups of 5 bits, least significant first, as the characters
    ``48 + group`` with bit 0x20 set on every group but the last and bit 0x10 of the last
    one the sign; from the fourth value on, a value is the difference to the value two
    places earlier.
    """
    data = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if data.size == 0:
        return np.zeros(0, dtype=np.int64)
    if (data < 0).any() or (data > 63).any():
        raise ValueError("RLE counts hold a character outside '0'..'o'")
    ends = np.flatnonzero((data & 0x20) == 0)  # the last group of each value
    if ends.size == 0 or ends[-1] != data.size - 1:
        raise ValueError("RLE counts end in the middle of a value")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_GROUPS:
        raise ValueError("RLE counts hold a value too large for a run length")
    position = np.arange(data.size) - np.repeat(starts, lengths)  # group index in its value
    values = np.add.reduceat((data & 0x1F) << (5 * position), starts)
    negative = (data[ends] & 0x10) != 0
    values = np.where(negative, values - np.left_shift(1, 5 * lengths), values)
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])  # x[m] = d[m] + x[m - 2] for m > 2
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """A COCO RLE ``{"size": [h, w], "counts": str | list[int]}`` as a (h, w) bool mask.

    Runs alternate 0s and 1s, starting with 0s, down the columns (Fortran order), as
    pycocotools writes them; compressed (string) and uncompressed (list) counts are read.
    """
    height, width = (int(v) for v in rle["size"])
    raw = rle["counts"]
    if isinstance(raw, str | bytes):
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
        runs = rle_counts(text)
    else:
        runs = np.asarray(raw, dtype=np.int64)
    if (runs < 0).any() or int(runs.sum()) != height * width:
        raise ValueError(
            f"RLE runs cover {int(runs.sum())} pixels, not {height} x {width} = "
            f"{height * width}, or one is negative"
        )
    bits = (np.arange(runs.size) % 2).astype(bool)
    flat = np.repeat(bits, runs)
    return flat.reshape(width, height).T.copy()


def polygons_to_mask(polygons: Sequence[Polygon], height: int, width: int) -> np.ndarray:
    """The (height, width) bool mask that segserve's polygons describe (docs/api.md,
    "Polygons"): per polygon, its outer ring filled with 1 and its hole rings with 0,
    boundaries included; the union of the polygons. Exact for polygons sent at
    ``tolerance=0``; with a tolerance, the simplified shape. Points outside the image are
    clipped.
    """
    out = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        rings = [np.asarray(ring, dtype=np.int64).reshape(-1, 2) for ring in polygon]
        if not rings or not len(rings[0]):
            continue
        x0, y0 = (int(v) for v in rings[0].min(axis=0))
        x1, y1 = (int(v) for v in rings[0].max(axis=0))
        # Drawn in the outer ring's box, so the cost follows the polygon, not the image.
        canvas = Image.new("L", (x1 - x0 + 1, y1 - y0 + 1), 0)
        draw = ImageDraw.Draw(canvas)
        for k, ring in enumerate(rings):
            if not len(ring):
                continue
            value = 0 if k else 1
            points = (ring - (x0, y0)).ravel().tolist()
            if len(ring) == 1:  # Pillow's polygon() needs two points
                draw.point(points, fill=value)
            else:
                draw.polygon(points, fill=value, outline=value)
        local = np.asarray(canvas) != 0
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x1 + 1, width), min(y1 + 1, height)
        if cx0 < cx1 and cy0 < cy1:
            out[cy0:cy1, cx0:cx1] |= local[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return out


def segments_to_class_map(
    segments: Sequence[tuple[int, Sequence[Polygon]]], height: int, width: int
) -> np.ndarray:
    """A (height, width) uint8 class map painted from ``(class_id, polygons)`` pairs, in
    order; 0 where no segment is (background, or a class left out by ``classes``)."""
    out = np.zeros((height, width), dtype=np.uint8)
    for class_id, polygons in segments:
        out[polygons_to_mask(polygons, height, width)] = class_id
    return out


def read_png(data: bytes) -> Image.Image:
    """The PNG (or any image Pillow reads) in ``data``, loaded."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_to_class_map(data: bytes) -> np.ndarray:
    """The (H, W) uint8 class map of ``/segment?format=png``: pixel value = class index."""
    image = read_png(data)
    if image.mode not in ("P", "L"):
        raise ValueError(f"a class map PNG is a palette or grey image, not mode {image.mode}")
    return np.asarray(image, dtype=np.uint8).copy()


def png_to_id_map(data: bytes) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The instance id map of ``/instances?format=png`` (uint8, or uint16 above 255
    instances; k > 0 = the k-th instance) and the instance list of its ``instances`` text
    chunk."""
    image = read_png(data)
    ids = np.asarray(image)
    dtype = np.uint8 if image.mode in ("L", "P") else np.uint16
    text = getattr(image, "text", {}).get("instances", "[]")
    return ids.astype(dtype, copy=True), list(json.loads(text))
