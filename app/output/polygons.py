"""Masks as polygons (docs/api.md, "Polygons"), with the reference decoder.

One polygon per 8-connected part of a mask; ring 0 runs through the centres of the part's
outermost pixels, every other ring through the centres of a hole's outermost pixels (a hole:
a 4-connected region the part encloses). Filling each polygon's outer ring with 1 and its holes
with 0, boundary pixels included, and taking the union (or painting the polygons in list
order) gives back the mask, exactly at `tolerance=0`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.lib.stride_tricks import as_strided

Polygon = list[list[list[int]]]  # rings; ring = list of [x, y]; first ring outer, rest holes
Rings = list[np.ndarray]  # a polygon as (n, 2) int64 arrays of [x, y]: outer ring, then holes


@dataclass(frozen=True)
class _RingSet:
    """Many rings in one array, so that work per ring is array work, not a Python loop (a
    speckled mask has thousands of rings): ``points`` (n, 2) int64 [x, y], ring ``i`` being
    the next ``lengths[i]`` of them."""

    points: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, rings: Sequence[np.ndarray]) -> _RingSet:
        if not rings:
            return cls(np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64))
        lengths = np.array([len(ring) for ring in rings], dtype=np.int64)
        return cls(np.concatenate(rings).reshape(-1, 2).astype(np.int64), lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.lengths) - self.lengths

    def firsts(self) -> np.ndarray:
        """(rings, 2): each ring's first point."""
        return self.points[self.starts]

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Per point: the index of its ring, and its position in that ring."""
        owner = np.repeat(np.arange(len(self.lengths)), self.lengths)
        return owner, np.arange(len(self.points)) - self.starts[owner]

    def take(self, order: np.ndarray) -> _RingSet:
        """The rings at indices ``order``, in that order."""
        lengths = self.lengths[order]
        shift = np.repeat(self.starts[order] - (np.cumsum(lengths) - lengths), lengths)
        return _RingSet(self.points[np.arange(len(shift)) + shift], lengths)

    def shifted(self, dx: int, dy: int) -> _RingSet:
        return _RingSet(self.points + np.array((dx, dy), dtype=np.int64), self.lengths)

    def __add__(self, other: _RingSet) -> _RingSet:
        return _RingSet(
            np.concatenate([self.points, other.points]),
            np.concatenate([self.lengths, other.lengths]),
        )

    def split(self) -> list[np.ndarray]:
        """One (n, 2) view per ring (C-contiguous, so the JSON encoder writes it directly)."""
        return [self.points[start:end] for start, end in _spans(self.lengths)]


def _spans(lengths: np.ndarray) -> zip[tuple[int, int]]:
    """(start, end) of consecutive runs of these lengths."""
    ends = np.cumsum(lengths)
    return zip((ends - lengths).tolist(), ends.tolist(), strict=True)


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
# Checked in tests/unit/test_polygons.py against independent decoders (cv2.fillPoly, PIL,
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
    binary = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).astype(np.uint8)
    # Only the box around the mask's pixels is traced: one class of a big class map may
    # cover a corner of it. A zero frame keeps parts touching the edge closed contours.
    x, y, w, h = cv2.boundingRect(binary)
    if not w:
        return []
    padded = _framed(binary[y : y + h, x : x + w])
    offset = (offset[0] + x, offset[1] + y)
    # Every part's outer ring at once: the top level of OpenCV's two-level hierarchy (parts
    # inside holes included); the second level says whether there are holes at all.
    contours, hierarchy = cv2.findContours(padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    links = hierarchy[0]  # per contour: next, previous, first child, parent
    any_holes = bool((links[:, 3] != -1).any())
    outers = _RingSet.of([contours[i] for i in np.flatnonzero(links[:, 3] == -1).tolist()])
    tops = outers.firsts()  # each part's top-left pixel: its ring starts there
    part_label = np.zeros(len(outers), dtype=np.int64)
    keep = np.ones(len(outers), dtype=bool)
    holes, hole_label = _RingSet.of([]), np.zeros(0, dtype=np.int64)
    if any_holes or min_area > 0:
        count, labels = cv2.connectedComponents(padded, connectivity=8)
        part_label = labels[tops[:, 1], tops[:, 0]]
        if min_area > 0:
            keep = np.bincount(labels.ravel(), minlength=count)[part_label] >= min_area
        if any_holes:
            holey_parts = np.flatnonzero((links[:, 3] == -1) & (links[:, 2] != -1))
            holey = [contours[i] for i in holey_parts.tolist()]
            holes = _hole_rings(padded, holey)
            # A hole's top-left pixel has its part right above it (see `_hole_rings`).
            firsts = holes.firsts()
            hole_label = labels[firsts[:, 1] - 1, firsts[:, 0]]

    # A part inside another's hole starts strictly below that part's top row: sorting by top
    # row (then left; stable) puts it after its container.
    kept = np.flatnonzero(keep)
    parts = kept[np.lexsort((tops[kept, 0], tops[kept, 1]))]
    if not len(parts):
        return []
    rings, sizes = outers.take(parts), np.ones(len(parts), dtype=np.int64)
    if len(holes):
        # Each part's outer ring, then its holes in their order (top, left), the holes of a
        # dropped part left out: a stable sort of outers-then-holes by their part's rank.
        rank_of_label = np.full(int(part_label.max()) + 1, -1, dtype=np.int64)
        rank_of_label[part_label[parts]] = np.arange(len(parts))
        hole_rank = rank_of_label[hole_label]
        rank = np.concatenate([np.arange(len(parts)), hole_rank])
        order = np.argsort(rank, kind="stable")
        rings = (rings + holes).take(order[rank[order] >= 0])
        sizes += np.bincount(hole_rank[hole_rank >= 0], minlength=len(parts))

    if tolerance > 0:
        # One call per ring: a speckled mask's thousands of rings make the loop itself count,
        # so it slices the int32 points in place ((n, 2) is a curve to OpenCV as it is).
        exact = rings.points.astype(np.int32)
        rings = _RingSet.of(
            [
                cv2.approxPolyDP(exact[start:end], tolerance, True)
                for start, end in _spans(rings.lengths)
            ]
        )
    # One shift for all rings (undoing the padding), then a view per ring.
    views = rings.shifted(offset[0] - 1, offset[1] - 1).split()
    return [views[start:end] for start, end in _spans(sizes)]


def _framed(binary: np.ndarray) -> np.ndarray:
    """``binary`` (uint8) with a 1-px zero frame around it."""
    return cv2.copyMakeBorder(binary, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)


def _fill(shape: tuple[int, ...], ring: np.ndarray) -> np.ndarray:
    canvas = np.zeros(shape[:2], dtype=np.uint8)
    cv2.fillPoly(canvas, [ring.astype(np.int32).reshape(-1, 1, 2)], 1)
    return canvas


def _hole_rings(padded: np.ndarray, outers: list[np.ndarray]) -> _RingSet:
    """The hole rings of the parts of a uint8 mask (nonzero: part) with a zero frame whose
    outer rings (OpenCV's contours) are `outers`, sorted by first point (top, left).

    The background pixels inside the outer rings are the background's 4-connected regions
    other than the outside. A hole, as `mask_to_polygons` defines it, is such a region with
    the parts inside it (and their own holes...), which its ring encloses without touching.
    Each ring starts at its hole's top-left pixel, right below a pixel of the part around it.
    """
    inside = np.zeros_like(padded)
    for outer in outers:  # one by one: a part in another's hole must not cancel it out
        cv2.fillPoly(inside, [outer], 1)
    region = inside & (padded == 0)
    x, y, w, h = cv2.boundingRect(region)  # holes are where the parts are: trace that box
    rings = _region_rings(_framed(region[y : y + h, x : x + w]))
    rings = rings.shifted(x - 1, y - 1)
    firsts = rings.firsts()
    return rings.take(np.lexsort((firsts[:, 0], firsts[:, 1])))


def _region_rings(region: np.ndarray) -> _RingSet:
    """One ring per 4-connected component of `region` (0/1 uint8 with a zero frame), traced
    as a 4-connected set: its fill is the component plus what it cuts off from the outside
    in the 8-connected sense."""
    # The outer boundaries of all 8-connected components (those lying in another's hole
    # included): the top level of OpenCV's two-level hierarchy.
    contours, hierarchy = cv2.findContours(region, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return _RingSet.of([])
    traces = _RingSet.of([contours[i] for i in np.flatnonzero(hierarchy[0][:, 3] == -1).tolist()])
    # A corner contact (a 2x2 block with one diagonal in the region and the other out of it)
    # is where 4- and 8-connectivity part. An 8-connected component without one is a single
    # 4-connected one, whose OpenCV trace is its 4-connected trace; those with one (both
    # pixels of a contact's diagonal are in the same 8-connected component) are split below.
    inside = region.astype(bool)
    a, b, c, d = inside[:-1, :-1], inside[:-1, 1:], inside[1:, :-1], inside[1:, 1:]
    count, labels = cv2.connectedComponents(region, connectivity=8)
    pinched_label = np.zeros(count, dtype=bool)
    pinched_label[labels[:-1, :-1][a & d & ~b & ~c]] = True  # a-d diagonal in, b-c out
    pinched_label[labels[:-1, 1:][b & c & ~a & ~d]] = True  # b-c diagonal in, a-d out
    firsts = traces.firsts()
    pinched = pinched_label[labels[firsts[:, 1], firsts[:, 0]]]

    rings = traces.take(np.flatnonzero(~pinched))
    if pinched.any():
        # Trace those components, all at once and alone, as 4-connected sets: in a crop
        # around them (a 1-px frame, inside `region` thanks to its zero frame; a trace's
        # extremes are among its turning points).
        bad = traces.take(np.flatnonzero(pinched))
        x0, y0 = bad.points.min(axis=0) - 1
        x1, y1 = bad.points.max(axis=0) + 2
        alone = pinched_label[labels[y0:y1, x0:x1]].astype(np.uint8)
        four = _four_connected_rings(alone)
        rings += four.shifted(x0, y0)
    return rings


def _four_connected_rings(region: np.ndarray) -> _RingSet:
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
    turned = np.zeros((h + w + 1, h + w + 1), dtype=np.uint8)  # rows v, columns u, 1-px frame
    # Pixel (x, y) lands on row x - y + h, column x + y + 1: a view of `turned` with those
    # strides is the region's grid, written in one copy (rows and columns 1..h+w-1 of it,
    # so the view never leaves `turned`).
    row, column = turned.strides
    as_strided(turned[h, 1:], (h, w), (column - row, row + column))[...] = region
    # The cell between four region pixels (a full 2x2 block), right of the top-left one's,
    # would be a one-cell hole of the turned region, traced for nothing: fill it (it is
    # inside, and joins nothing new). No pixel lands on such cells, so assigning keeps them.
    full = region[:-1, :-1] & region[1:, :-1] & region[:-1, 1:] & region[1:, 1:]
    as_strided(turned[h, 2:], (h - 1, w - 1), (column - row, row + column))[...] = full
    # All outer boundaries (top level), those of components in another's hole included.
    contours, hierarchy = cv2.findContours(turned, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return _RingSet.of([])
    traces = _RingSet.of([contours[i] for i in np.flatnonzero(hierarchy[0][:, 3] == -1).tolist()])
    u, v = traces.points[:, 0] - 1, traces.points[:, 1] - h
    x, y = (u + v) // 2, (u - v) // 2
    # Each ring backwards (the turn mirrors the grid), starting at its top-left pixel as
    # OpenCV's own traces do: the first such point in the backward order.
    owner, position = traces.positions()
    lengths, starts = traces.lengths[owner], traces.starts[owner]
    backward = starts + lengths - 1 - position
    by_corner = np.lexsort((position, x[backward], y[backward], owner))
    first = position[by_corner[traces.starts]][owner]
    source = backward[starts + (position + first) % lengths]
    return _RingSet(np.stack((x[source], y[source]), axis=1), traces.lengths)


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
