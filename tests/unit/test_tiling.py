"""app/tiling.py on plain arrays: the window grid and the instance merge.

The grid is checked against a naive implementation written from docs/api.md ("Tiling").
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from app.results import Instance
from app.tiling import (
    TileGrid,
    Tiling,
    Window,
    axis_starts,
    merge_instances,
    own_span,
    shared_spans,
    shares_only_with_predecessor,
    shifted,
)

THRESHOLD = 0.5  # app.tiled_inference.MERGE_THRESHOLD, the documented rule


# ------------------------------------------------------------------------------ the grid


def naive_starts(length: int, tile: int, overlap: int) -> list[int]:
    """docs/api.md: windows of T start at 0, T - O, 2(T - O), ... as long as they end before
    the edge, and one more ends exactly at the edge; a side shorter than T is one window."""
    if length <= tile:
        return [0]
    starts, start = [], 0
    while start + tile < length:
        starts.append(start)
        start += tile - overlap
    return [*starts, length - tile]


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (5, 10, 2, [0]),  # shorter than a tile: one window of its own length
        (10, 10, 2, [0]),  # exactly a tile
        (11, 10, 2, [0, 1]),  # one pixel over: the last window is aligned to the edge
        (26, 10, 2, [0, 8, 16]),  # exact fit: T + 2S, no duplicate last window
        (27, 10, 2, [0, 8, 16, 17]),  # one pixel over a multiple of the stride
        (30, 10, 0, [0, 10, 20]),  # no overlap, exact fit
        (31, 10, 0, [0, 10, 20, 21]),
        (1, 16, 4, [0]),
        (700, 64, 16, [*range(0, 636, 48), 636]),
    ],
)
def test_axis_starts_known_cases(length: int, tile: int, overlap: int, expected: list[int]) -> None:
    assert axis_starts(length, tile, overlap) == expected


def test_axis_starts_follow_the_documented_rule_everywhere() -> None:
    for tile in (1, 2, 3, 7, 16):
        for overlap in range(tile):
            for length in range(1, 4 * tile + 3):
                starts = axis_starts(length, tile, overlap)
                assert starts == naive_starts(length, tile, overlap), (length, tile, overlap)
                side = min(tile, length)
                # Strictly increasing, first at 0, last aligned to the far edge.
                assert starts[0] == 0
                assert all(a < b for a, b in itertools.pairwise(starts))
                assert starts[-1] + side == length
                # Every pixel covered; neighbours share at least the overlap (all but the
                # last step are exactly the stride).
                covered = np.zeros(length, dtype=int)
                for s in starts:
                    covered[s : s + side] += 1
                assert covered.min() >= 1
                steps = np.diff(starts)
                assert (steps[:-1] == tile - overlap).all()
                assert (steps <= tile - overlap).all()


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (10, 10), (10, 11), (10, -1)])
def test_axis_starts_refuses_an_impossible_grid(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="tile"):
        axis_starts(100, tile, overlap)


def test_grid_windows_are_row_major_and_share_one_shape() -> None:
    grid = Tiling(tile=10, overlap=2).grid(27, 11)
    assert grid.ys == [0, 8, 16, 17] and grid.xs == [0, 1]
    assert grid.window_shape == (10, 10)
    assert len(grid) == 8
    windows = list(grid.windows())
    assert [(w.row, w.col, w.y, w.x) for w in windows] == [
        (r, c, y, x) for r, y in enumerate(grid.ys) for c, x in enumerate(grid.xs)
    ]
    image = np.arange(27 * 11 * 3, dtype=np.int32).reshape(27, 11, 3)
    for window in windows:
        crop = grid.crop(image, window)
        assert crop.shape == (10, 10, 3)
        assert np.shares_memory(crop, image)  # a view, no copy
        np.testing.assert_array_equal(
            crop, image[window.y : window.y + 10, window.x : window.x + 10]
        )


def test_grid_of_an_image_smaller_than_the_tile_is_the_image() -> None:
    grid = TileGrid(height=7, width=30, tile=16, overlap=4)
    assert grid.window_shape == (7, 16)
    assert grid.ys == [0] and grid.xs == [0, 12, 14]
    single = TileGrid(height=7, width=9, tile=16, overlap=4)
    assert len(single) == 1 and single.window_shape == (7, 9)
    image = np.zeros((7, 9), dtype=np.uint8)
    assert single.crop(image, next(single.windows())).shape == (7, 9)


def coverage(length: int, tile: int, overlap: int) -> np.ndarray:
    """How many windows cover each pixel of one axis, counted window by window."""
    count = np.zeros(length, dtype=int)
    for start in axis_starts(length, tile, overlap):
        count[start : start + min(tile, length)] += 1
    return count


@pytest.mark.parametrize(
    ("length", "tile", "overlap"),
    [(7, 16, 4), (16, 16, 4), (41, 16, 4), (40, 16, 4), (200, 16, 5), (47, 16, 0), (45, 16, 15)],
)
def test_shared_and_own_spans_match_a_count_of_covering_windows(
    length: int, tile: int, overlap: int
) -> None:
    starts, window = axis_starts(length, tile, overlap), min(tile, length)
    count = coverage(length, tile, overlap)
    shared = np.zeros(length, dtype=bool)
    for begin, end in shared_spans(starts, window):
        assert not shared[begin:end].any()  # merged: the spans do not overlap
        shared[begin:end] = True
    np.testing.assert_array_equal(shared, count >= 2)
    alone = np.zeros(length, dtype=int)
    for index, start in enumerate(starts):
        begin, end = own_span(starts, index, window, length)
        assert 0 <= begin <= end <= window
        alone[start + begin : start + end] += 1
    np.testing.assert_array_equal(alone, count == 1)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"),
    [(41, 16, 4), (40, 16, 4), (200, 16, 5), (47, 16, 0), (45, 16, 15), (60, 16, 9)],
)
def test_pairs_of_windows_alone_over_their_overlap_match_a_count(
    length: int, tile: int, overlap: int
) -> None:
    starts, window = axis_starts(length, tile, overlap), min(tile, length)
    count = coverage(length, tile, overlap)
    pairs = shares_only_with_predecessor(starts, window)
    assert not pairs[0]  # the first window has no predecessor
    others = []
    for index in range(1, len(starts)):
        overlap_pixels = count[starts[index] : starts[index - 1] + window]
        assert pairs[index] == bool((overlap_pixels == 2).all()), index
        if not pairs[index]:
            others.append(index)
    # The shared spans of the other pairs: every pixel two or more windows cover, except
    # those of the pairs alone over their overlap.
    expected = count >= 2
    for index in range(1, len(starts)):
        if pairs[index]:
            expected[starts[index] : starts[index - 1] + window] = False
    covered = np.zeros(length, dtype=bool)
    for begin, end in shared_spans(starts, window, others):
        assert not covered[begin:end].any()
        covered[begin:end] = True
    np.testing.assert_array_equal(covered, expected)


# ------------------------------------------------------------------------------ instances


def instance_of(full: np.ndarray, class_id: int = 1, score: float = 0.9) -> Instance:
    """An instance from a full-image mask: the crop to its tight box, box = [x0, x1+1)."""
    ys, xs = np.nonzero(full)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Instance(
        class_id,
        score,
        (float(x0), float(y0), float(x1), float(y1)),
        full[y0:y1, x0:x1].copy(),
        (int(x0), int(y0)),
    )


def rect(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def full(instance: Instance, height: int = 60, width: int = 80) -> np.ndarray:
    return instance.full_mask(height, width)


def test_shifted_moves_box_and_origin_only() -> None:
    mask = np.array([[True, False], [True, True]])
    moved = shifted(Instance(2, 0.7, (1.5, 2.0, 3.5, 4.0), mask, (1, 2)), 10, 20)
    assert moved.box == (11.5, 22.0, 13.5, 24.0)
    assert moved.origin == (11, 22)
    assert (moved.class_id, moved.score) == (2, 0.7)
    assert moved.mask is mask


def test_an_object_cut_by_a_window_edge_merges_into_one() -> None:
    """A 12 px wide object straddles the right edge (x = 40) of window [0, 40); the next
    window [24, 64) holds all of it. Found in both, it becomes one instance."""
    h, w = 60, 80
    obj = rect(h, w, 10, 20, 34, 46)
    window_a = np.zeros((h, w), dtype=bool)
    window_a[:, 0:40] = True
    part = instance_of(obj & window_a, score=0.6)  # x 34..39
    whole = instance_of(obj, score=0.8)
    for order in ([part, whole], [whole, part]):
        merged = merge_instances(order, THRESHOLD)
        assert len(merged) == 1
        np.testing.assert_array_equal(full(merged[0]), obj)
        assert merged[0].box == (34.0, 10.0, 46.0, 20.0)
        assert merged[0].score == 0.8
        assert merged[0].origin == (34, 10)


def test_two_parts_merge_into_their_union_with_the_higher_score() -> None:
    h, w = 60, 80
    left = instance_of(rect(h, w, 10, 20, 10, 30), score=0.4)
    right = instance_of(rect(h, w, 12, 22, 16, 36), score=0.7)  # overlap: 8 rows x 14 cols
    merged = merge_instances([left, right], THRESHOLD)
    assert len(merged) == 1
    np.testing.assert_array_equal(full(merged[0]), full(left) | full(right))
    assert merged[0].box == (10.0, 10.0, 36.0, 22.0)
    assert merged[0].score == 0.7
    assert merged[0].class_id == 1


def test_the_threshold_is_half_of_the_smaller_mask() -> None:
    """Intersection over the *smaller* mask: a small mask mostly inside a large one merges
    (its IoU is tiny); two masks sharing exactly half of the smaller stay apart."""
    h, w = 60, 80
    big = instance_of(rect(h, w, 0, 50, 0, 70), score=0.9)
    small = instance_of(rect(h, w, 45, 55, 60, 75), score=0.5)  # 10x15 = 150, 5x10 = 50 in
    assert len(merge_instances([big, small], THRESHOLD)) == 2  # 50/150 = 1/3
    small_in = instance_of(rect(h, w, 40, 50, 60, 75), score=0.5)  # 10x10 of 10x15 inside
    assert len(merge_instances([big, small_in], THRESHOLD)) == 1
    a = instance_of(rect(h, w, 0, 10, 0, 10))
    half = instance_of(rect(h, w, 0, 10, 5, 15))  # shares 50 of 100 pixels: not above 0.5
    assert len(merge_instances([a, half], THRESHOLD)) == 2
    more = instance_of(rect(h, w, 0, 10, 4, 14))  # 60 of 100
    assert len(merge_instances([a, more], THRESHOLD)) == 1


def test_separate_objects_and_other_classes_never_merge() -> None:
    h, w = 60, 80
    a = instance_of(rect(h, w, 10, 20, 10, 20), score=0.9)
    b = instance_of(rect(h, w, 10, 20, 20, 30), score=0.8)  # touching, not overlapping
    c = instance_of(rect(h, w, 10, 20, 10, 20), class_id=2, score=0.7)  # a's pixels
    merged = merge_instances([c, b, a], THRESHOLD)
    assert [(i.class_id, i.score) for i in merged] == [(1, 0.9), (1, 0.8), (2, 0.7)]
    for got, want in zip(merged, [a, b, c], strict=True):
        np.testing.assert_array_equal(full(got), full(want))
        assert got.box == want.box


def test_a_chain_of_overlaps_ends_as_one_instance() -> None:
    """A overlaps B overlaps C, A and C apart: whatever the scores, one instance is left."""
    h, w = 60, 80
    masks = [rect(h, w, 10, 20, 0, 20), rect(h, w, 10, 20, 8, 28), rect(h, w, 10, 20, 16, 36)]
    for scores in itertools.permutations([0.3, 0.6, 0.9]):
        found = [instance_of(m, score=s) for m, s in zip(masks, scores, strict=True)]
        merged = merge_instances(found, THRESHOLD)
        assert len(merged) == 1, scores
        np.testing.assert_array_equal(full(merged[0]), masks[0] | masks[1] | masks[2])
        assert merged[0].score == 0.9
        assert merged[0].box == (0.0, 10.0, 36.0, 20.0)


def overlap_of_smaller(a: np.ndarray, b: np.ndarray) -> float:
    smaller = min(a.sum(), b.sum())
    return float((a & b).sum()) / smaller if smaller else 0.0


def test_merged_answers_keep_every_pixel_and_leave_no_pair_above_the_threshold() -> None:
    """Random blobs of two classes: the answer covers exactly the input pixels per class, its
    scores are input scores, and no two same-class instances overlap above the threshold."""
    h, w = 40, 50
    rng = np.random.default_rng(7)
    for trial in range(60):
        found = []
        for _ in range(rng.integers(2, 12)):
            y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
            y1, x1 = y0 + int(rng.integers(2, 15)), x0 + int(rng.integers(2, 20))
            mask = rect(h, w, y0, min(y1, h), x0, min(x1, w))
            mask &= rng.random((h, w)) < 0.9  # ragged
            if mask.any():
                found.append(
                    instance_of(mask, class_id=int(rng.integers(1, 3)), score=float(rng.random()))
                )
        merged = merge_instances(found, THRESHOLD)
        scores = [i.score for i in merged]
        assert scores == sorted(scores, reverse=True)
        for class_id in (1, 2):
            ins = [full(i, h, w) for i in found if i.class_id == class_id]
            outs = [i for i in merged if i.class_id == class_id]
            out_masks = [full(i, h, w) for i in outs]
            union_in = np.logical_or.reduce(ins) if ins else np.zeros((h, w), bool)
            union_out = np.logical_or.reduce(out_masks) if outs else np.zeros((h, w), bool)
            np.testing.assert_array_equal(union_out, union_in, err_msg=f"trial {trial}")
            for a, b in itertools.combinations(out_masks, 2):
                assert overlap_of_smaller(a, b) <= THRESHOLD, f"trial {trial}"
            in_scores = {i.score for i in found if i.class_id == class_id}
            assert {i.score for i in outs} <= in_scores
            if in_scores:
                assert max(i.score for i in outs) == max(in_scores)
            for instance in outs:  # each box bounds its own mask
                ys, xs = np.nonzero(full(instance, h, w))
                assert instance.box == (
                    float(xs.min()),
                    float(ys.min()),
                    float(xs.max() + 1),
                    float(ys.max() + 1),
                )


def test_window_is_a_plain_record() -> None:
    assert Window(1, 2, 30, 40) == Window(row=1, col=2, y=30, x=40)
