"""A tiled request through the model's batcher: windows fed a few at a time, results stitched.

The windows of a request share one network shape, so they batch together (and with other
requests' windows). They are submitted in grid order with a bounded number in flight, and
their results are taken in that order, so the semantic stitcher keeps one band of sums and
at most ``in_flight`` windows' logits are held at once. Leaving early (deadline, disconnect,
shutdown, a failed window) cancels every window not yet computed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.batching import Completed
from app.errors import ImageTooLarge
from app.results import Instance, InstanceResult, SemanticResult
from app.serving import ServedModel
from app.stitching import BandStitcher
from app.tiling import TileGrid, Window, merge_instances, shifted

# Detections of one object in two windows merge when their masks overlap by more than this
# share of the smaller mask (docs/api.md, "Tiling").
MERGE_THRESHOLD = 0.5


@dataclass(frozen=True)
class TiledResult:
    """What a tiled request's windows gave, with the times of their batches and of stitching."""

    result: Any  # SemanticResult or InstanceResult, in the image's frame
    windows: int
    queue_s: float  # wall time not spent computing this request's windows
    infer_s: float  # this request's share of its batches' time
    stitch_s: float


def check_window_size(model: ServedModel[Any], grid: TileGrid, max_windows: int) -> None:
    """413 for a request that would become too many windows, or windows too large to run."""
    if len(grid) > max_windows:
        raise ImageTooLarge(
            f"an image of {grid.width}x{grid.height} pixels with tile={grid.tile} and "
            f"overlap={grid.overlap} becomes {len(grid)} windows, over the limit of "
            f"{max_windows} (SEGSERVE_MAX_TILE_WINDOWS): use a larger tile"
        )
    height, width = grid.window_shape
    if model.spec.task == "semantic" and height * width > model.max_network_pixels:
        raise ImageTooLarge(
            f"a tile of {width}x{height} pixels is over the limit of {model.max_network_pixels} "
            "pixels a model may see (SEGSERVE_MAX_NETWORK_PIXELS): use a smaller tile"
        )


async def _run_windows(
    model: ServedModel[Any],
    image: np.ndarray,
    grid: TileGrid,
    params: Any,
    timeout_s: float,
    take: Callable[[Window, Any], None],
) -> tuple[float, float]:
    """Feed the windows through the batcher and hand each result to ``take`` (off the event
    loop, in grid order); returns (this request's share of batch time, time in ``take``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    # Enough in flight to fill two batches: the batcher never waits for this request's next
    # window, and no more results are held than that.
    in_flight = 2 * max(model.batcher.max_batch_size, 1)
    windows = grid.windows()
    pending: deque[tuple[Window, asyncio.Future[Completed[Any]]]] = deque()

    def top_up() -> None:
        while len(pending) < in_flight and (window := next(windows, None)) is not None:
            crop = grid.crop(image, window)
            remaining = deadline - loop.time()
            pending.append(
                (window, asyncio.ensure_future(model.infer_window(crop, params, remaining)))
            )

    infer_s = take_s = 0.0
    try:
        top_up()
        while pending:
            window, future = pending.popleft()
            done = await future
            top_up()
            infer_s += done.infer_s / done.batch_size
            started = time.perf_counter()
            await asyncio.to_thread(take, window, done.result)
            take_s += time.perf_counter() - started
    finally:
        for _, future in pending:
            future.cancel()  # cancels the queued entry: it costs no model time
    return infer_s, take_s


async def segment_tiled(
    model: ServedModel[Any], image: np.ndarray, grid: TileGrid, timeout_s: float
) -> TiledResult:
    """The class map by the tiling rule: argmax of the summed logits of the covering windows."""
    started = time.perf_counter()
    stitcher = BandStitcher(grid, len(model.predictor.categories))
    infer_s, stitch_s = await _run_windows(model, image, grid, None, timeout_s, stitcher.add)
    wall_s = time.perf_counter() - started
    result = SemanticResult(class_map=stitcher.class_map)
    return TiledResult(result, len(grid), _queue_s(wall_s, infer_s, stitch_s), infer_s, stitch_s)


async def detect_tiled(
    model: ServedModel[Any], image: np.ndarray, grid: TileGrid, params: Any, timeout_s: float
) -> TiledResult:
    """Instances of every window in the image's frame, those cut by a window's edge merged."""
    started = time.perf_counter()
    found: list[Instance] = []

    def take(window: Window, result: InstanceResult) -> None:
        found.extend(shifted(i, window.x, window.y) for i in result.instances)

    infer_s, take_s = await _run_windows(model, image, grid, params, timeout_s, take)
    merge_started = time.perf_counter()
    merged = await asyncio.to_thread(merge_instances, found, MERGE_THRESHOLD)
    stitch_s = take_s + time.perf_counter() - merge_started
    result = InstanceResult(grid.height, grid.width, merged[: params.max_instances])
    wall_s = time.perf_counter() - started
    return TiledResult(result, len(grid), _queue_s(wall_s, infer_s, stitch_s), infer_s, stitch_s)


def _queue_s(wall_s: float, infer_s: float, stitch_s: float) -> float:
    """The rest of the wall time: stitching overlaps the next windows' batches, so the three
    may add up to more than the wall time; queue is then 0, never negative."""
    return max(0.0, wall_s - infer_s - stitch_s)
