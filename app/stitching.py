"""Semantic stitching: window logits summed into a uint8 class map, one band at a time.

The rule (docs/api.md, "Tiling"): the class of a pixel is the argmax over classes of the sum
of the logits of every window covering it. Rows of windows arrive in grid order; once row r
is in, the image rows above row r + 1's first row are final (no later window covers them),
so they are reduced to classes at once and only one band of float sums (C x T x W) is held.

Most pixels lie under one window only (about 60% of them with 512-pixel tiles overlapping by
64): their classes come straight from that window's logits, which never enter the band. The
band holds the shared pixels only, and the first window to cover a pixel writes its logits
there instead of adding them, so the band is never cleared: summing and reducing cost what
the overlaps cost, not what the image costs. Columns that two neighbouring windows alone
share skip the band too, in the rows under one row of windows: the left window's logits are
kept until the right one comes, and the two are summed and reduced at once.
"""

from __future__ import annotations

import numpy as np

from app.tiling import TileGrid, Window, own_span, shared_spans, shares_only_with_predecessor

# Classes are reduced this many pixels at a time: the running maximum's arrays then stay in
# the CPU's cache between its passes over the class planes.
_PIXELS_PER_REDUCTION = 64_000


def _argmax_classes(sums: np.ndarray) -> np.ndarray:
    """``sums.argmax(axis=0)`` as uint8 (ties to the lowest class, as argmax breaks them),
    by a running maximum over the class planes: numpy's argmax over the first axis copies
    the block into another layout first, which takes longer and holds a second copy."""
    best = sums[0].copy()
    index = np.zeros(best.shape, dtype=np.uint8)
    better = np.empty(best.shape, dtype=bool)
    candidate = np.empty(best.shape, dtype=np.uint8)
    for class_id in range(1, sums.shape[0]):
        np.greater(sums[class_id], best, out=better)
        np.fmax(best, sums[class_id], out=best)  # as copying where greater: NaN never wins
        # index = class_id where better: classes come in increasing order, so the maximum of
        # index and better * class_id is that, without a masked copy (50x slower per pixel).
        np.multiply(better.view(np.uint8), class_id, out=candidate)
        np.maximum(index, candidate, out=index)
    return index


def _reduce_into(classes: np.ndarray, sums: np.ndarray) -> None:
    """``classes[...] = argmax of sums`` over (C, rows, cols) ``sums``, a few rows at a time."""
    rows, cols = classes.shape
    if rows == 0 or cols == 0:
        return
    step = max(1, _PIXELS_PER_REDUCTION // cols)
    for start in range(0, rows, step):
        classes[start : start + step] = _argmax_classes(sums[:, start : start + step])


class BandStitcher:
    """Sums window logits band by band into a uint8 class map (windows added in grid order).

    Holds the class map and one band of float32 sums, ``classes x window height x width``:
    never the whole image's logits.
    """

    def __init__(self, grid: TileGrid, classes: int) -> None:
        if classes > 256:
            raise ValueError(f"a uint8 class map holds at most 256 classes, got {classes}")
        self.grid = grid
        self.class_map = np.zeros((grid.height, grid.width), dtype=np.uint8)
        self._ys, self._xs = grid.ys, grid.xs
        self._window_h, self._window_w = grid.window_shape
        self._shared_rows = shared_spans(self._ys, self._window_h)
        # Where two neighbours alone share columns, the rows of them under one row of windows
        # are summed from the two windows' logits when the second arrives (the first is kept
        # until then) and never enter the band; the band keeps the other shared columns.
        self._pair = shares_only_with_predecessor(self._xs, self._window_w)
        in_band = [col for col, pair in enumerate(self._pair) if col > 0 and not pair]
        self._shared_cols = shared_spans(self._xs, self._window_w, in_band)
        self._previous: np.ndarray | None = None  # the last window's logits
        self._band_top = 0  # image row of the band's first row
        # Never cleared: every pixel of it that is read was first written (see ``add``).
        self._band = np.empty((classes, self._window_h, grid.width), dtype=np.float32)
        self._row = 0  # the grid row being added
        self._added_in_row = 0

    def add(self, window: Window, logits: np.ndarray) -> None:
        """Add one window's (classes, h, w) logits; windows must come in row-major order."""
        if (window.row, window.col) != (self._row, self._added_in_row):
            raise ValueError(
                f"window ({window.row}, {window.col}) out of order: expected "
                f"({self._row}, {self._added_in_row})"
            )
        if logits.shape != (self._band.shape[0], self._window_h, self._window_w):
            raise ValueError(f"logits of shape {logits.shape} do not fit the window")
        if window.col == 0 and window.row > 0:
            self._advance_to(window.y)
        h, w = self._window_h, self._window_w
        # In the window's frame: rows [y0, y1) and columns [x0, x1) are its alone. Above y0
        # and left of x0, an earlier window covered the pixels (add to its sums); everywhere
        # else outside its own pixels, this window is the first (write).
        y0, y1 = own_span(self._ys, window.row, h, self.grid.height)
        x0, x1 = own_span(self._xs, window.col, w, self.grid.width)
        top, left = window.y - self._band_top, window.x
        band = self._band[:, top : top + h, left : left + w]
        band[:, :y0] += logits[:, :y0]
        if self._pair[window.col]:
            band[:, y1:, :x0] += logits[:, y1:, :x0]
            assert self._previous is not None  # the window to the left, of this row
            sums = np.add(self._previous[:, y0:y1, w - x0 :], logits[:, y0:y1, :x0])
            _reduce_into(self.class_map[window.y + y0 : window.y + y1, left : left + x0], sums)
        else:
            band[:, y0:, :x0] += logits[:, y0:, :x0]
        band[:, y1:, x0:] = logits[:, y1:, x0:]
        pairs_with_next = window.col + 1 < len(self._xs) and self._pair[window.col + 1]
        if window.col + 1 < len(self._xs) and not pairs_with_next:
            band[:, y0:y1, x1:] = logits[:, y0:y1, x1:]
        # Kept only for the next window to sum with: it is a view of its batch's whole output.
        self._previous = logits if pairs_with_next else None
        # Whole rows are contiguous class planes, which reduce about twice as fast per pixel
        # as the own columns alone: reduce them and keep the own columns.
        rows = np.empty((y1 - y0, w), dtype=np.uint8)
        _reduce_into(rows, logits[:, y0:y1])
        self.class_map[window.y + y0 : window.y + y1, window.x + x0 : window.x + x1] = rows[
            :, x0:x1
        ]
        self._added_in_row += 1
        if self._added_in_row == len(self._xs):
            self._row += 1
            self._added_in_row = 0
            if self._row == len(self._ys):
                self._finalise(self.grid.height - self._band_top)

    def _advance_to(self, y: int) -> None:
        """A new row of windows starts at image row ``y``: rows above it are final."""
        done = y - self._band_top
        self._finalise(done)
        # Keep the sums of the rows the new windows overlap, moved to the band's top.
        kept = self._band.shape[1] - done
        self._band[:, :kept] = self._band[:, done:]
        self._band_top = y

    def _finalise(self, rows: int) -> None:
        """Reduce the shared pixels of the band's first ``rows`` rows (the others, each under
        one window, were reduced as their window came)."""
        top, bottom = self._band_top, self._band_top + rows
        covered = top
        for begin, end in [*self._shared_rows, (bottom, bottom)]:
            begin, end = (min(max(edge, top), bottom) for edge in (begin, end))
            if begin > covered:  # rows under one row of windows: shared columns only
                self._reduce(covered, begin, self._shared_cols)
            if end > begin:  # rows under two rows of windows: every column is shared
                self._reduce(begin, end, [(0, self.grid.width)])
            covered = max(covered, end)

    def _reduce(self, begin: int, end: int, columns: list[tuple[int, int]]) -> None:
        top = self._band_top
        for left, right in columns:
            _reduce_into(
                self.class_map[begin:end, left:right],
                self._band[:, begin - top : end - top, left:right],
            )

    @property
    def done(self) -> bool:
        return self._row == len(self._ys)
