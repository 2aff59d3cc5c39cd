"""Tiled inference on plain arrays: the window grid and the merge of detections found in
neighbouring windows (app/stitching.py sums semantic logits). No HTTP and no model here
(docs/api.md, "Tiling", states the rule this implements).

The grid: along each axis of length L, windows of T pixels start every S = T - overlap pixels
from 0, and the last one is aligned to the far edge (starts at L - T); an axis shorter than T
is one window of its own length. So every window of an image has the same shape.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from app.results import Instance


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the windows along one axis start (see the module docstring)."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile; got {tile}, {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    return [*range(0, length - tile, stride), length - tile]


def shared_spans(
    starts: Sequence[int], window: int, pairs: Sequence[int] | None = None
) -> list[tuple[int, int]]:
    """The [begin, end) pixel spans of one axis that two or more windows cover, merged; with
    ``pairs``, only the overlaps of those windows (by index) with their predecessors."""
    spans: list[tuple[int, int]] = []
    for index in range(1, len(starts)) if pairs is None else pairs:
        begin, end = starts[index], starts[index - 1] + window
        if begin >= end:
            continue
        if spans and begin <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((begin, end))
    return spans


def shares_only_with_predecessor(starts: Sequence[int], window: int) -> list[bool]:
    """Per window along one axis: whether the pixels it shares with its predecessor are
    covered by no third window (true wherever the overlap is at most half the window)."""
    return [
        index > 0
        and (index < 2 or starts[index - 2] + window <= starts[index])
        and (index + 1 == len(starts) or starts[index + 1] >= starts[index - 1] + window)
        for index in range(len(starts))
    ]


def own_span(starts: Sequence[int], index: int, window: int, length: int) -> tuple[int, int]:
    """The [begin, end) span, in the window's own coordinates, of the pixels along one axis
    that window ``index`` alone covers: after its predecessor's end, before its successor's
    start (empty, begin == end, when its neighbours overlap across it)."""
    start = starts[index]
    begin = starts[index - 1] + window if index > 0 else 0
    end = starts[index + 1] if index + 1 < len(starts) else length
    return begin - start, max(begin, end) - start


@dataclass(frozen=True)
class Tiling:
    """How a request is tiled: the window side and the pixels neighbouring windows share."""

    tile: int
    overlap: int

    def grid(self, height: int, width: int) -> TileGrid:
        return TileGrid(height, width, self.tile, self.overlap)


@dataclass(frozen=True)
class Window:
    """One window of the grid: its row and column in the grid and its top-left pixel."""

    row: int
    col: int
    y: int
    x: int


@dataclass(frozen=True)
class TileGrid:
    """The windows that cover a (height, width) image, in row-major order."""

    height: int
    width: int
    tile: int
    overlap: int

    @property
    def ys(self) -> list[int]:
        return axis_starts(self.height, self.tile, self.overlap)

    @property
    def xs(self) -> list[int]:
        return axis_starts(self.width, self.tile, self.overlap)

    @property
    def window_shape(self) -> tuple[int, int]:
        """(h, w) of every window: the tile, or the image's side where that is shorter."""
        return min(self.tile, self.height), min(self.tile, self.width)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def windows(self) -> Iterator[Window]:
        xs = self.xs
        for row, y in enumerate(self.ys):
            for col, x in enumerate(xs):
                yield Window(row, col, y, x)

    def crop(self, image: np.ndarray, window: Window) -> np.ndarray:
        """The window's pixels of ``image`` (a view)."""
        h, w = self.window_shape
        return image[window.y : window.y + h, window.x : window.x + w]


# ----------------------------------------------------------------------------- instances


def shifted(instance: Instance, dx: int, dy: int) -> Instance:
    """``instance`` moved from its window's frame into the image's (the window at dx, dy)."""
    x0, y0, x1, y1 = instance.box
    ox, oy = instance.origin
    return Instance(
        instance.class_id,
        instance.score,
        (x0 + dx, y0 + dy, x1 + dx, y1 + dy),
        instance.mask,
        (ox + dx, oy + dy),
    )


def _overlap_of_smaller(a: Instance, b: Instance) -> float:
    """Mask intersection over the smaller mask's area (0 when either mask is empty)."""
    ax, ay = a.origin
    bx, by = b.origin
    (ah, aw), (bh, bw) = a.mask.shape, b.mask.shape
    x0, y0 = max(ax, bx), max(ay, by)
    x1, y1 = min(ax + aw, bx + bw), min(ay + ah, by + bh)
    smaller = min(a.area, b.area)
    if x1 <= x0 or y1 <= y0 or smaller == 0:
        return 0.0
    a_part = a.mask[y0 - ay : y1 - ay, x0 - ax : x1 - ax]
    b_part = b.mask[y0 - by : y1 - by, x0 - bx : x1 - bx]
    return float(np.count_nonzero(a_part & b_part)) / smaller


def _union(a: Instance, b: Instance) -> Instance:
    """One instance for both: masks and boxes united, the higher score."""
    ax, ay = a.origin
    bx, by = b.origin
    (ah, aw), (bh, bw) = a.mask.shape, b.mask.shape
    x0, y0 = min(ax, bx), min(ay, by)
    x1, y1 = max(ax + aw, bx + bw), max(ay + ah, by + bh)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    mask[ay - y0 : ay - y0 + ah, ax - x0 : ax - x0 + aw] |= a.mask.astype(bool)
    mask[by - y0 : by - y0 + bh, bx - x0 : bx - x0 + bw] |= b.mask.astype(bool)
    box = (
        min(a.box[0], b.box[0]),
        min(a.box[1], b.box[1]),
        max(a.box[2], b.box[2]),
        max(a.box[3], b.box[3]),
    )
    return Instance(a.class_id, max(a.score, b.score), box, mask, (x0, y0))


def merge_instances(instances: Sequence[Instance], threshold: float) -> list[Instance]:
    """Merge detections of one object found in several windows (in the image's frame).

    Two instances of the same class whose masks overlap by more than ``threshold`` of the
    smaller mask's area become one: masks and boxes united, the higher score kept. Repeated
    until no such pair is left, so no two instances of a class in the answer overlap above
    the threshold. Highest score first, ties in input order.
    """
    merged: list[Instance] = []
    for instance in sorted(instances, key=lambda i: -i.score):
        current = instance
        while True:
            match = next(
                (
                    k
                    for k, kept in enumerate(merged)
                    if kept.class_id == current.class_id
                    and _overlap_of_smaller(kept, current) > threshold
                ),
                None,
            )
            if match is None:
                break
            current = _union(merged.pop(match), current)
        merged.append(current)
    return sorted(merged, key=lambda i: -i.score)
