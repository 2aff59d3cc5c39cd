"""Turning predictor results into what the HTTP API returns: polygons, PNGs, COCO RLE, overlays.

Pure functions on numpy arrays and the dataclasses of `app.results`; nothing here knows about
FastAPI or models. Torch appears only in the overlays (tensor blending, torchvision's boxes).
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, PngImagePlugin
from pycocotools import mask as coco_mask
from torchvision.utils import draw_bounding_boxes

from app.results import Instance, InstanceResult

Polygon = list[list[list[int]]]  # rings; ring = list of [x, y]; first ring outer, rest holes

# Instance PNGs: 8-bit while ids fit, 16-bit beyond (API.md, POST /instances png).
_MAX_U8_INSTANCES = 255
_MAX_U16_INSTANCES = 65535
# Compress the `instances` text chunk only when it is big enough for zlib to pay off.
_ZIP_TEXT_OVER = 1024


# --------------------------------------------------------------------------------- polygons


def mask_to_polygons(
    mask: np.ndarray,
    tolerance: float = 1.0,
    min_area: float = 0.0,
    offset: tuple[int, int] = (0, 0),
) -> list[Polygon]:
    """The polygons of a (h, w) bool/uint8 mask, one per 8-connected part of it.

    Coordinates are the centres of boundary pixels, exactly as `cv2.findContours`
    (`RETR_CCOMP`) gives them, x right, y down, plus `offset` (x, y). Ring 0 of a polygon is
    its outer boundary; the other rings are its holes (the 4-connected background regions it
    encloses). Following OpenCV, **every ring vertex is a foreground pixel**: a hole ring runs
    through the part's own pixels that border the hole, not through the hole's pixels.

    Decoding convention (exact at `tolerance=0`, see `polygons_to_mask`): a polygon covers the
    pixels whose centre lies inside *or on* its outer ring and not *strictly* inside any of its
    holes, i.e. the closed polygon with holes (GeoJSON / shapely `covers` semantics). The mask is
    the union of its polygons. Painting them in the order returned also works (fill the outer
    ring including its boundary, clear only the inside of each hole ring): polygons are sorted
    top to bottom, so one lying in another's hole always comes after it.

    `tolerance` > 0 simplifies every ring with Douglas-Peucker (`cv2.approxPolyDP`); `0` keeps
    the exact boundary (collinear vertices are left out, which changes no covered pixel).
    Single pixels and 1-px lines give rings of 1 or 2 points; none is dropped.
    `min_area` drops polygons covering fewer pixels than that (the part's pixel count: its
    outer region minus its holes, an island in a hole counting as a polygon of its own).
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (h, w), got shape {mask.shape}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    binary = (mask != 0).astype(np.uint8)
    # A zero frame keeps parts touching the image edge ordinary closed contours; the
    # findContours offset maps the points back into the unpadded frame.
    padded = cv2.copyMakeBorder(binary, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    contours, hierarchy = cv2.findContours(
        padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=(-1, -1)
    )
    if hierarchy is None:
        return []
    links = hierarchy[0]  # per contour: next, previous, first child, parent

    areas = None
    if min_area > 0:
        # Each polygon is exactly one 8-connected component, so its pixel count is the
        # component's; any vertex of the outer ring is one of its pixels.
        _, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        areas = stats[:, cv2.CC_STAT_AREA]

    groups: list[tuple[int, int, list[np.ndarray]]] = []
    for i, (_, _, child, parent) in enumerate(links):
        if parent != -1:
            continue  # a hole: collected with its outer ring
        outer = contours[i].reshape(-1, 2)
        if areas is not None and areas[labels[outer[0, 1], outer[0, 0]]] < min_area:
            continue
        rings = [outer]
        while child != -1:
            rings.append(contours[child].reshape(-1, 2))
            child = links[child][0]
        top = int(outer[:, 1].min())
        groups.append((top, int(outer[outer[:, 1] == top, 0].min()), rings))
    # findContours' own order is not guaranteed nesting-first; an island inside a hole lies
    # strictly below the top row of the part around it, so sorting by top row puts it after.
    groups.sort(key=lambda g: (g[0], g[1]))

    shift = np.array(offset, dtype=np.int64)
    polygons: list[Polygon] = []
    for _, _, rings in groups:
        polygon: Polygon = []
        for ring in rings:
            if tolerance > 0:
                ring = cv2.approxPolyDP(ring.reshape(-1, 1, 2), tolerance, True).reshape(-1, 2)
            polygon.append((ring.astype(np.int64) + shift).tolist())
        polygons.append(polygon)
    return polygons


def polygons_to_mask(
    polygons: list[Polygon], height: int, width: int, offset: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """The reference decoder of `mask_to_polygons`: a (height, width) bool mask.

    `offset` is subtracted from every point (the inverse of `mask_to_polygons`' offset). Each
    polygon is rasterised on its own: outer ring filled with its boundary (`drawContours`,
    thickness -1), the holes' insides cleared (filled with 0, then their rings, which are the
    part's own pixels, drawn back with thickness 1); the mask is the union. That reproduces
    the encoded mask exactly at `tolerance=0`, whatever the polygon order.
    """
    out = np.zeros((height, width), dtype=bool)
    shift = np.array(offset, dtype=np.int64)
    for polygon in polygons:
        rings = [np.asarray(r, dtype=np.int64).reshape(-1, 2) - shift for r in polygon if r]
        if not rings:
            continue
        points = np.concatenate(rings)
        x0, y0 = points.min(axis=0)
        x1, y1 = points.max(axis=0)
        # Rasterise in the polygon's own bounding box, so cost follows its size, not the image's.
        local = [(r - (x0, y0)).astype(np.int32).reshape(-1, 1, 2) for r in rings]
        canvas = np.zeros((int(y1 - y0 + 1), int(x1 - x0 + 1)), dtype=np.uint8)
        cv2.drawContours(canvas, local[:1], -1, 1, thickness=-1)
        if len(local) > 1:
            cv2.drawContours(canvas, local[1:], -1, 0, thickness=-1)
            cv2.drawContours(canvas, local[1:], -1, 1, thickness=1)
        # Paste the part of the box that lies inside the image.
        cx0, cy0 = max(int(x0), 0), max(int(y0), 0)
        cx1, cy1 = min(int(x1) + 1, width), min(int(y1) + 1, height)
        if cx0 < cx1 and cy0 < cy1:
            out[cy0:cy1, cx0:cx1] |= canvas[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] != 0
    return out


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


def png_bytes(
    image: Image.Image,
    compress_level: int = 1,
    *,
    pnginfo: PngImagePlugin.PngInfo | None = None,
) -> bytes:
    """`image` as PNG bytes. Low compression by default: latency matters more than bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level, pnginfo=pnginfo)
    return buffer.getvalue()


def class_map_to_png(class_map: np.ndarray, compress_level: int = 1) -> bytes:
    """A (H, W) uint8 class map as an 8-bit palette PNG: pixel value = class index."""
    if class_map.ndim != 2 or class_map.dtype != np.uint8:
        raise ValueError(f"class_map must be (H, W) uint8, got {class_map.shape} {class_map.dtype}")
    image = Image.fromarray(np.ascontiguousarray(class_map))
    image.putpalette(_palette())  # turns the "L" image into "P", keeping the values
    return png_bytes(image, compress_level)


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
    """An instance id map as a grayscale PNG (uint8: 8-bit "L", uint16: 16-bit "I;16").

    `instances_text` goes into the text chunk `instances` (iTXt, so any Unicode is kept).
    """
    if id_map.ndim != 2 or id_map.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"id_map must be (H, W) uint8/uint16, got {id_map.shape} {id_map.dtype}")
    # Pillow maps native uint8 to "L" and uint16 to "I;16", both saved as grayscale PNG.
    image = Image.fromarray(np.ascontiguousarray(id_map))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("instances", instances_text, zip=len(instances_text) > _ZIP_TEXT_OVER)
    return png_bytes(image, compress_level, pnginfo=info)


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


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    # torch.from_numpy warns on read-only arrays; copy only when needed.
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)


def _paint(
    image: torch.Tensor, labels: np.ndarray, colours: np.ndarray, alpha: float
) -> torch.Tensor:
    """Blend `colours[label]` over every pixel whose label is not 0; others stay bit-identical.

    The same arithmetic as torchvision's `draw_segmentation_masks` (float blend, truncated to
    uint8), but one table lookup for all labels: that function scatters each mask separately,
    which took 5 s for a 1080p map with 60 classes.
    """
    colour_image = torch.from_numpy(colours[labels]).permute(2, 0, 1)
    blended = (image * (1 - alpha) + colour_image * alpha).to(torch.uint8)
    return torch.where(torch.from_numpy(labels != 0), blended, image)


def _to_png(image: torch.Tensor, compress_level: int) -> bytes:
    return png_bytes(Image.fromarray(image.permute(1, 2, 0).numpy()), compress_level)


def semantic_overlay(
    image: np.ndarray, class_map: np.ndarray, alpha: float = 0.5, compress_level: int = 1
) -> bytes:
    """RGB PNG of `image` with each non-background class blended in its palette colour."""
    tensor = _image_tensor(image)
    if class_map.shape != image.shape[:2] or class_map.dtype != np.uint8:
        raise ValueError(f"class_map {class_map.shape} {class_map.dtype} does not fit the image")
    colours = np.array(_palette(), dtype=np.uint8).reshape(256, 3)
    return _to_png(_paint(tensor, class_map, colours, alpha), compress_level)


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
    tensor = _image_tensor(image)
    if (result.height, result.width) != image.shape[:2]:
        raise ValueError(f"result {result.height}x{result.width} does not match {image.shape}")
    if not result.instances:
        return _to_png(tensor, compress_level)
    class_ids = [inst.class_id for inst in result.instances]
    # Row k: the colour of instance k's class; row 0 (background) is never painted.
    colours = np.array([(0, 0, 0), *map(_colour, class_ids)], dtype=np.uint8)
    drawn = _paint(tensor, instance_map(result), colours, alpha)

    boxes = torch.tensor([inst.box for inst in result.instances], dtype=torch.float32)
    texts = [
        f"{labels[c] if 0 <= c < len(labels) else c} {inst.score:.2f}"
        for c, inst in zip(class_ids, result.instances, strict=True)
    ]
    box_colours: list[str | tuple[int, int, int]] = [_colour(c) for c in class_ids]
    width = max(1, min(result.height, result.width) // 300 + 1)
    drawn = draw_bounding_boxes(drawn, boxes, labels=texts, colors=box_colours, width=width)
    return _to_png(drawn, compress_level)
