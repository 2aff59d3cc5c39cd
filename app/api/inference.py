"""Infer, then encode: queue the image for its model, encode the result off the event loop,
time every stage, and give up when the client disconnects or the deadline passes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from app import faults
from app.api.deadline import Deadline
from app.api.params import OutputQuery
from app.batching import Completed
from app.config import Settings
from app.errors import DeadlineExceeded
from app.serving import ServedModel
from app.tiled_inference import TiledResult, check_window_size, detect_tiled, segment_tiled
from app.tiling import Tiling
from app.timing import StageTimer

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499

T = TypeVar("T")


@dataclass(frozen=True)
class InferenceRequest:
    """One inference request, resolved: its model (admitted), output options, deadline,
    decoded image and tiling, with the settings and the request's stage timer."""

    request: Request
    model: ServedModel[Any]
    output: OutputQuery
    deadline: Deadline
    image: np.ndarray
    tiling: Tiling | None  # None: the whole image at the model's preset size
    settings: Settings
    timer: StageTimer


async def _client_gone(request: Request) -> None:
    """Return once the client disconnects (the ASGI `http.disconnect` message)."""
    # The body has been read by now, so the next message the server sends is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_abandoned(request: Request, work: Awaitable[T]) -> T | None:
    """The model's result, or None when the client disconnected first.

    Leaving cancels the queued entries, so an abandoned request costs no model time unless
    its batch has already started.
    """
    inference = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait([inference, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (inference, watcher):
            task.cancel()
    if not inference.done() or inference.cancelled():
        return None
    return inference.result()


def _infer(inference: InferenceRequest, params: Any) -> Awaitable[Completed[Any] | TiledResult]:
    """The model's work for the request: one image, or the windows of a tiled one."""
    model, image = inference.model, inference.image
    timeout_s = inference.timer.remaining(inference.deadline.seconds)
    if inference.tiling is None:
        return model.infer(image, params, timeout_s)
    grid = inference.tiling.grid(*image.shape[:2])
    check_window_size(model, grid, inference.settings.max_tile_windows)
    if model.spec.task == "semantic":
        return segment_tiled(model, image, grid, timeout_s)
    return detect_tiled(model, image, grid, params, timeout_s)


def _record(timer: StageTimer, done: Completed[Any] | TiledResult) -> None:
    timer.record("queue", done.queue_s)
    timer.record("infer", done.infer_s)
    if isinstance(done, TiledResult):
        timer.record("stitch", done.stitch_s)
        timer.count("windows", done.windows)


async def infer_and_encode(
    inference: InferenceRequest, params: Any, encode: Callable[[Any], tuple[bytes, str]]
) -> Response:
    """Queue the image (or its windows) for the model, encode the result off the loop, time
    every stage."""
    request, model, timer = inference.request, inference.model, inference.timer
    deadline = inference.deadline
    try:
        done = await _unless_abandoned(request, _infer(inference, params))
    except DeadlineExceeded:
        raise DeadlineExceeded(
            f"no result within the request timeout of {deadline.seconds:g} s "
            f"({deadline.source}), counted from the request's arrival"
        ) from None
    if done is None:
        log.info("client disconnected while its request waited for %s", model.spec.name)
        # Nobody reads this; 499 is the usual "client closed request" for logs and metrics.
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    _record(timer, done)
    with timer.stage("encode"):
        body, media_type = await run_in_threadpool(_encode, encode, done.result)
    return Response(body, media_type=media_type, headers={"Server-Timing": timer.header()})


def _encode(encode: Callable[[Any], tuple[bytes, str]], result: Any) -> tuple[bytes, str]:
    faults.point("encode", result)
    return encode(result)
