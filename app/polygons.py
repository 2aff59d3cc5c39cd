"""Masks as polygons (API.md, "Polygons"), with the reference decoder.

One polygon per 8-connected part of a mask; ring 0 runs through the centres of the part's
outermost pixels, every other ring through the centres of a hole's outermost pixels (a hole:
a 4-connected region the part encloses). Filling each polygon's outer ring with 1 and its holes
with 0, boundary pixels included, and taking the union (or painting the polygons in list
order) gives back the mask, exactly at `tolerance=0`.
"""

from __future__ import annotations

import cv2
import numpy as np

Polygon = list[list[list[int]]]  # rings; ring = list of [x, y]; first ring outer, rest holes
Rings = list[np.ndarray]  # a polygon as (n, 2) int64 arrays of [x, y]: outer ring, then holes


# --------------------------------------------------------------------------------- polygons
#
# Digital topology: a part is an 8-connected set of foreground pixels, a hole a 4-connected
# region it encloses (pixels not its own, cut off from the outside by it). Every ring runs
# through the centres of its own region's outermost pixels, so that filling it, boundary
# included, covers exactly the region (plus, for an outer ring, the part's holes):
#
# - outer ring: OpenCV's trace of the part. Its steps join 8-neighbouring pixel centres of the
#   part; a 4-connected path of other pixels never crosses such a step, so nothing that reaches
#   the outside that way is inside the ring, and the filled ring is the part plus its holes.
# - hole ring: the hole's pixels traced as a 4-connected set. OpenCV traces 8-connected sets:
#   where two hole pixels touch only at a corner and the part passes between the other two
#   pixels of that 2x2 block (a "pinch"), its ring would join two holes into one, or enclose
#   part pixels behind the pinch, and clear them when filled. The holes of all parts are
#   traced at once, by OpenCV where their 8-connected components have no corner contact at
#   all (the common case), else on a grid turned by 45 degrees, where 4-neighbours become
#   diagonal neighbours and OpenCV's 8-connected trace is the 4-connected one.
#
# Checked in tests/unit/test_encoding.py against independent decoders (cv2.fillPoly, PIL,
# pure geometry) on thousands of random masks.


def mask_to_polygons(
    mask: np.ndarray,
    tolerance: float = 1.0,
    min_area: float = 0.0,
    offset: tuple[int, int] = (0, 0),
) -> list[Polygon]:
    """:func:`mask_to_rings` as nested Python lists."""
    return [
        [ring.tolist() for ring in rings]
        for rings in mask_to_rings(mask, tolerance, min_area, offset)
    ]


def mask_to_rings(
    mask: np.ndarray,
    tolerance: float = 1.0,
    min_area: float = 0.0,
    offset: tuple[int, int] = (0, 0),
) -> list[Rings]:
    """The polygons of a (h, w) bool/uint8 mask, one per 8-connected part of it.

    A polygon is a list of rings, a ring a list of integer [x, y] points (x right, y down, plus
    `offset` (x, y)): ring 0 is the part's outer boundary, the others its holes. A hole is a
    4-connected region of pixels the part encloses (background, possibly with other parts
    inside it); two holes touching only at a corner are two holes.

    - The outer ring runs through the centres of the part's own outermost pixels (as
      `cv2.findContours(..., RETR_EXTERNAL)` traces them): filling it, boundary included,
      covers exactly the part's pixels plus its holes.
    - A hole ring runs through the centres of the *hole's* outermost pixels (every vertex is a
      pixel of the hole, not of the part): filling it, boundary included, covers exactly the
      hole's pixels.

    So the literal decoding is exact at `tolerance=0` (see `polygons_to_mask`): per polygon,
    fill the outer ring with 1 and then its hole rings with 0, boundary pixels included for
    both (`cv2.fillPoly`, PIL `ImageDraw.polygon` with `outline` = `fill`); the mask is the
    union of the polygons. A part lying in another's hole is a polygon of its own, listed
    after it (polygons are sorted by their top row, then left), so painting all polygons on
    one canvas in list order gives the same mask.

    `tolerance` > 0 simplifies every ring with Douglas-Peucker (`cv2.approxPolyDP`); `0` keeps
    the exact boundary (collinear vertices are left out, which changes no covered pixel).
    Single pixels give 1-point rings (a one-pixel part, or a one-pixel hole), 1-px lines
    2-point rings; none is dropped.
    `min_area` drops parts of fewer pixels than that, counting the part's own pixels only
    (its holes, and any part inside them, excluded; a part inside a hole counts on its own).
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (h, w), got shape {mask.shape}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    binary = (mask != 0).astype(np.uint8)
    if not binary.any():
        return []
    # A zero frame keeps parts touching the image edge ordinary closed contours.
    padded = cv2.copyMakeBorder(binary, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    # Every part's outer ring at once: the top level of OpenCV's two-level hierarchy (parts
    # inside holes included); the second level says whether there are holes at all.
    contours, hierarchy = cv2.findContours(padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    links = hierarchy[0]  # per contour: next, previous, first child, parent
    any_holes = bool((links[:, 3] != -1).any())
    labels = None
    if any_holes or min_area > 0:
        labels = cv2.connectedComponents(padded, connectivity=8)[1]
    areas = np.bincount(labels.ravel()) if labels is not None and min_area > 0 else None

    holes: dict[int, list[np.ndarray]] = {}
    if labels is not None and any_holes:
        holey = [contours[i] for i in np.flatnonzero((links[:, 3] == -1) & (links[:, 2] != -1))]
        for ring in _hole_rings(padded, holey):
            # A hole's top-left pixel has its part right above it (see `_hole_rings`).
            x, y = ring[0]
            holes.setdefault(int(labels[y - 1, x]), []).append(ring)

    parts: list[tuple[int, int, list[np.ndarray]]] = []
    for i in np.flatnonzero(links[:, 3] == -1):
        outer = contours[i].reshape(-1, 2)  # starts at the part's top-left pixel
        k = int(labels[outer[0, 1], outer[0, 0]]) if labels is not None else 0
        if areas is not None and areas[k] < min_area:
            continue
        parts.append((int(outer[0, 1]), int(outer[0, 0]), [outer, *holes.get(k, [])]))
    # A part inside another's hole starts strictly below that part's top row: sorting by top
    # row puts it after its container.
    parts.sort(key=lambda p: (p[0], p[1]))

    if not parts:
        return []
    flat = [ring.reshape(-1, 2) for _, _, rings in parts for ring in rings]
    if tolerance > 0:
        flat = [
            cv2.approxPolyDP(ring.reshape(-1, 1, 2).astype(np.int32), tolerance, True).reshape(
                -1, 2
            )
            for ring in flat
        ]
    # One shift for all rings (a noisy mask has thousands of tiny ones); each ring is then a
    # C-contiguous view, which the JSON encoder writes without a Python list in between.
    shift = np.array((offset[0] - 1, offset[1] - 1), dtype=np.int64)  # undo the padding
    points = np.concatenate(flat).astype(np.int64) + shift
    shifted = np.split(points, np.cumsum([len(ring) for ring in flat])[:-1])
    polygons: list[Rings] = []
    first = 0
    for _, _, rings in parts:
        polygons.append(shifted[first : first + len(rings)])
        first += len(rings)
    return polygons


def _fill(shape: tuple[int, ...], ring: np.ndarray) -> np.ndarray:
    canvas = np.zeros(shape[:2], dtype=np.uint8)
    cv2.fillPoly(canvas, [ring.astype(np.int32).reshape(-1, 1, 2)], 1)
    return canvas


def _hole_rings(padded: np.ndarray, outers: list[np.ndarray]) -> list[np.ndarray]:
    """The hole rings of the parts of a 0/1 mask with a zero frame whose outer rings (OpenCV's
    contours) are `outers`, sorted by first point (top, left).

    The background pixels inside the outer rings are the background's 4-connected regions
    other than the outside. A hole, as `mask_to_polygons` defines it, is such a region with
    the parts inside it (and their own holes...), which its ring encloses without touching.
    Each ring starts at its hole's top-left pixel, right below a pixel of the part around it.
    """
    inside = np.zeros_like(padded)
    for outer in outers:  # one by one: a part in another's hole must not cancel it out
        cv2.fillPoly(inside, [outer], 1)
    rings = _region_rings(inside & (padded ^ 1))
    rings.sort(key=lambda r: (int(r[0, 1]), int(r[0, 0])))
    return rings


def _turning_points(contours: list[np.ndarray]) -> list[np.ndarray]:
    """OpenCV traces (`CHAIN_APPROX_NONE`) cut down to their turning points, as
    `CHAIN_APPROX_SIMPLE` gives them, all at once."""
    lengths = np.array([len(c) for c in contours])
    points = np.concatenate(contours).reshape(-1, 2)
    owner = np.repeat(np.arange(len(contours)), lengths)
    starts = np.cumsum(lengths) - lengths
    ends = starts + lengths - 1
    index = np.arange(len(points))
    following, preceding = index + 1, index - 1
    following[ends], preceding[starts] = starts, ends
    step = points[following] - points
    turn = (step[preceding] != step).any(axis=1) | (lengths[owner] == 1)
    kept = np.bincount(owner[turn], minlength=len(contours))
    return np.split(points[turn], np.cumsum(kept)[:-1])


def _region_rings(region: np.ndarray) -> list[np.ndarray]:
    """One ring per 4-connected component of `region` (0/1 uint8 with a zero frame), traced
    as a 4-connected set: its fill is the component plus what it cuts off from the outside
    in the 8-connected sense."""
    # All boundaries of all 8-connected components (those lying in another's hole included):
    # outer ones (no parent) and those of their holes.
    contours, hierarchy = cv2.findContours(region, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return []
    parents = hierarchy[0][:, 3]
    outers = np.flatnonzero(parents == -1)
    simple = _turning_points([contours[i] for i in outers.tolist()])
    # A corner contact (a 2x2 block with one diagonal in the region and the other out of it)
    # is where 4- and 8-connectivity part; its pixels lie on a boundary. An 8-connected
    # component without one is a single 4-connected one, whose OpenCV trace is its 4-connected
    # trace; one with a corner contact is split below.
    lengths = np.array([len(c) for c in contours])
    px, py = np.concatenate(contours).reshape(-1, 2).T
    contact = np.zeros(len(px), dtype=bool)
    for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        contact |= region[py + dy, px + dx] > (region[py, px + dx] | region[py + dy, px])
    component = np.where(parents == -1, np.arange(len(contours)), parents)
    pinched = np.isin(outers, np.repeat(component, lengths)[contact])

    rings = [ring for ring, bad in zip(simple, pinched, strict=True) if not bad]
    if pinched.any():
        # Trace those components, all at once and alone, as 4-connected sets: in a crop
        # around them (a 1-px frame, inside `region` thanks to its zero frame).
        boxes = np.array([cv2.boundingRect(contours[i]) for i in outers[pinched]])
        x0, y0 = boxes[:, :2].min(axis=0) - 1
        x1, y1 = (boxes[:, :2] + boxes[:, 2:]).max(axis=0) + 1
        crop = np.ascontiguousarray(region[y0:y1, x0:x1])
        labels = cv2.connectedComponents(crop, connectivity=8)[1]
        firsts = np.array([contours[i][0, 0] for i in outers[pinched]]) - (x0, y0)
        alone = np.isin(labels, labels[firsts[:, 1], firsts[:, 0]]).astype(np.uint8)
        corner = np.array((x0, y0))
        rings += [ring + corner for ring in _four_connected_rings(alone)]
    return rings


def _four_connected_rings(region: np.ndarray) -> list[np.ndarray]:
    """The outer boundaries of the 4-connected components of `region` (0/1 uint8), traced
    with 4-connectivity: one ring per component, starting at its top-left pixel.

    Pixel (x, y) goes to (u, v) = (x + y, x - y): 4-neighbours become diagonal neighbours and
    diagonal ones two cells apart, so OpenCV's 8-connected trace of the turned region is the
    4-connected trace of the region. The map is linear, so the filled rings correspond too:
    a ring's fill covers its component plus what that cuts off from the outside in the
    8-connected sense (for a hole: the parts inside it, never the part around it, which is
    8-connected).
    """
    h, w = region.shape
    ys, xs = np.nonzero(region)
    turned = np.zeros((h + w + 1, h + w + 1), dtype=np.uint8)  # rows v, columns u, 1-px frame
    turned[xs - ys + h, xs + ys + 1] = 1
    # The cell between four region pixels (a full 2x2 block) would be a one-cell hole of the
    # turned region, traced for nothing: fill it (it is inside, and joins nothing new).
    ys, xs = np.nonzero(region[:-1, :-1] & region[1:, :-1] & region[:-1, 1:] & region[1:, 1:])
    turned[xs - ys + h, xs + ys + 2] = 1
    # All outer boundaries (top level), those of components in another's hole included.
    contours, hierarchy = cv2.findContours(turned, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    rings = []
    for contour, link in zip(contours, hierarchy[0], strict=True):
        if link[3] != -1:
            continue
        u, v = contour.reshape(-1, 2).T.astype(np.int64)
        u, v = u - 1, v - h
        ring = np.stack(((u + v) // 2, (u - v) // 2), axis=1)[::-1]  # undo the mirroring
        # Start at the top-left pixel, as OpenCV's own traces do.
        first = int(np.lexsort((ring[:, 0], ring[:, 1]))[0])
        rings.append(np.roll(ring, -first, axis=0))
    return rings


def polygons_to_mask(
    polygons: list[Polygon], height: int, width: int, offset: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """The reference decoder of `mask_to_polygons`: a (height, width) bool mask.

    The literal reading of the rings: for each polygon, its outer ring is filled with 1, then
    each hole ring with 0, boundary pixels included for both (`cv2.fillPoly`); the mask is the
    union of the polygons. Exact at `tolerance=0`, where it also equals painting all polygons
    in list order on one canvas. `offset` is subtracted from every point (the inverse of
    `mask_to_polygons`' offset); points outside the image are clipped.
    """
    out = np.zeros((height, width), dtype=bool)
    shift = np.array(offset, dtype=np.int64)
    for polygon in polygons:
        rings = [np.asarray(r, dtype=np.int64).reshape(-1, 2) - shift for r in polygon]
        if not rings or not len(rings[0]):
            continue
        x0, y0 = rings[0].min(axis=0)
        x1, y1 = rings[0].max(axis=0)
        # Rasterise in the outer ring's box (holes outside it clear nothing), so the cost
        # follows the polygon's size, not the image's.
        canvas = _fill((int(y1 - y0 + 1), int(x1 - x0 + 1)), rings[0] - (x0, y0))
        for hole in rings[1:]:
            if len(hole):
                local = (hole - (x0, y0)).astype(np.int32).reshape(-1, 1, 2)
                cv2.fillPoly(canvas, [local], 0)
        # Paste the part of the box that lies inside the image.
        cx0, cy0 = max(int(x0), 0), max(int(y0), 0)
        cx1, cy1 = min(int(x1) + 1, width), min(int(y1) + 1, height)
        if cx0 < cx1 and cy0 < cy1:
            out[cy0:cy1, cx0:cx1] |= canvas[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] != 0
    return out
