"""app/stitching.py on plain arrays: band stitching of window logits into a class map.

The rule is checked against a naive implementation written from docs/api.md ("Tiling"); the
memory of band stitching is measured with tracemalloc (numpy reports its buffers to it).
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from app.stitching import BandStitcher
from app.tiling import TileGrid


def naive_class_map(grid: TileGrid, logits: list[np.ndarray], classes: int) -> np.ndarray:
    """The rule as written: the whole image's float32 sums, windows added in grid order."""
    sums = np.zeros((classes, grid.height, grid.width), dtype=np.float32)
    h, w = grid.window_shape
    for window, window_logits in zip(grid.windows(), logits, strict=True):
        sums[:, window.y : window.y + h, window.x : window.x + w] += window_logits
    return sums.argmax(axis=0).astype(np.uint8)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [
        (7, 9, 16, 4),  # smaller than a tile: one window
        (16, 16, 16, 4),  # exactly a tile
        (29, 41, 16, 4),  # one pixel over a multiple of the stride (16 + 12 + 1, 16 + 24 + 1)
        (40, 52, 16, 4),  # exact fit
        (9, 200, 16, 5),  # very wide
        (200, 9, 16, 5),  # very tall
        (33, 47, 16, 0),  # no overlap
        (45, 45, 16, 15),  # stride 1 pixel: each pixel under many windows
    ],
)
def test_band_stitcher_equals_the_whole_image_sums(
    height: int, width: int, tile: int, overlap: int
) -> None:
    classes = 5
    grid = TileGrid(height, width, tile, overlap)
    rng = np.random.default_rng(height * 1000 + width)
    h, w = grid.window_shape
    # Values that round when added, so a different order of additions would show.
    logits = [rng.standard_normal((classes, h, w)).astype(np.float32) for _ in range(len(grid))]
    stitcher = BandStitcher(grid, classes)
    # The band is never cleared: any pixel read before a window wrote it would win here.
    stitcher._band.fill(1e30)
    for window, window_logits in zip(grid.windows(), logits, strict=True):
        assert not stitcher.done
        stitcher.add(window, window_logits)
    assert stitcher.done
    expected = naive_class_map(grid, logits, classes)
    assert len(np.unique(expected)) == classes  # not vacuous
    assert stitcher.class_map.dtype == np.uint8
    # Each pixel's sum adds the same float32 values in the same (grid) order: exactly equal.
    np.testing.assert_array_equal(stitcher.class_map, expected)


def test_band_stitcher_breaks_ties_to_the_lowest_class() -> None:
    grid = TileGrid(20, 20, 16, 4)
    stitcher = BandStitcher(grid, 3)
    for window in grid.windows():
        stitcher.add(window, np.ones((3, 16, 16), dtype=np.float32))
    assert (stitcher.class_map == 0).all()


def test_band_stitcher_refuses_windows_out_of_order_or_of_the_wrong_shape() -> None:
    grid = TileGrid(29, 41, 16, 4)
    windows = list(grid.windows())
    logits = np.zeros((3, 16, 16), dtype=np.float32)
    stitcher = BandStitcher(grid, 3)
    with pytest.raises(ValueError, match="out of order"):
        stitcher.add(windows[1], logits)
    stitcher.add(windows[0], logits)
    with pytest.raises(ValueError, match="out of order"):
        stitcher.add(windows[0], logits)  # twice
    with pytest.raises(ValueError, match="out of order"):
        stitcher.add(windows[len(grid.xs)], logits)  # the next row before this one is done
    with pytest.raises(ValueError, match="do not fit"):
        stitcher.add(windows[1], np.zeros((3, 16, 15), dtype=np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        stitcher.add(windows[1], np.zeros((4, 16, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="256 classes"):
        BandStitcher(grid, 257)  # a uint8 map cannot hold the classes


def test_stitching_a_large_image_holds_one_band_not_the_images_logits() -> None:
    """6000x4000, 21 classes, tile 512, overlap 64: the whole image's float32 logits would be
    2 GB; the stitcher holds the class map and one band (21 x 512 x 6000 floats)."""
    height, width, classes, tile, overlap = 4000, 6000, 21, 512, 64
    grid = TileGrid(height, width, tile, overlap)
    assert len(grid) == 9 * 14
    rng = np.random.default_rng(0)
    # Cheap logits: two random windows, made before measuring, fed in turn.
    feed = [rng.standard_normal((classes, tile, tile)).astype(np.float32) for _ in range(2)]
    full_logits = classes * height * width * 4
    class_map = height * width
    band = classes * tile * width * 4
    window = classes * tile * tile * 4

    started = time.perf_counter()
    tracemalloc.start()
    try:
        stitcher = BandStitcher(grid, classes)
        for k, w in enumerate(grid.windows()):
            stitcher.add(w, feed[k % 2])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started

    assert stitcher.done
    assert len(np.unique(stitcher.class_map[::97, ::89])) > 10  # really stitched
    assert peak < full_logits / 3, f"peak {peak / 1e6:.0f} MB"
    # The class map, the band, and small transients: the band is reduced a few rows at a
    # time (numpy's argmax over the class axis copies the rows it reduces) and shifting it
    # copies its overlap rows.
    assert peak >= class_map + band
    assert peak <= class_map + band + band // 2, (
        f"peak {peak / 1e6:.0f} MB; class map {class_map / 1e6:.0f} MB, band "
        f"{band / 1e6:.0f} MB, window {window / 1e6:.0f} MB"
    )
    print(
        f"stitched {len(grid)} windows in {elapsed:.1f} s; peak {peak / 1e6:.0f} MB = class "
        f"map {class_map / 1e6:.0f} + band {band / 1e6:.0f} + {(peak - class_map - band) / 1e6:.0f}"
        f" MB (whole-image logits: {full_logits / 1e6:.0f} MB)"
    )
