"""Infer, then encode: queue the image (or its windows, or each of many images) for its
model, encode the result off the event loop, time every stage, and give up when the client
disconnects or the deadline passes."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from app import faults
from app.api.deadline import Deadline
from app.api.params import OutputQuery
from app.batching import Completed
from app.config import Settings
from app.errors import DeadlineExceeded, InternalError, ServiceError, status_of
from app.output.encode import JSON
from app.serving import ServedModel
from app.tiled_inference import TiledResult, check_window_size, detect_tiled, segment_tiled
from app.tiling import Tiling
from app.timing import StageTimer

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499

T = TypeVar("T")


# How a route turns a result into a body: ``encode(result, image) -> (bytes, media type)``.
Encode = Callable[[Any, np.ndarray], tuple[bytes, str]]


@dataclass(frozen=True)
class InferenceRequest:
    """One inference request, resolved: its model (admitted), output options, deadline and
    tiling, with the settings and the request's stage timer; and its image, decoded, or, for
    a many-images request, the images' bytes (each decoded on its own way through)."""

    request: Request
    model: ServedModel[Any]
    output: OutputQuery
    deadline: Deadline
    tiling: Tiling | None  # None: the whole image at the model's preset size
    settings: Settings
    timer: StageTimer
    image: np.ndarray | None = None  # a single request's image
    batch: list[bytes | ServiceError] | None = None  # a many-images request's images
    decode: Callable[[bytes], Awaitable[np.ndarray]] | None = None  # how batch images decode


async def _client_gone(request: Request) -> None:
    """Return once the client disconnects (the ASGI `http.disconnect` message)."""
    # The body has been read by now, so the next message the server sends is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_abandoned(request: Request, work: Awaitable[T]) -> T | None:
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


def infer_image(
    inference: InferenceRequest, image: np.ndarray, params: Any, *, admitted: bool = False
) -> Awaitable[Completed[Any] | TiledResult]:
    """The model's work for one image of the request: the image, or its windows if tiled."""
    model = inference.model
    timeout_s = inference.timer.remaining(inference.deadline.seconds)
    if inference.tiling is None:
        return model.infer(image, params, timeout_s, admitted=admitted)
    grid = inference.tiling.grid(*image.shape[:2])
    check_window_size(model, grid, inference.settings.max_tile_windows)
    if model.spec.task == "semantic":
        return segment_tiled(model, image, grid, timeout_s)
    return detect_tiled(model, image, grid, params, timeout_s)


def record(timer: StageTimer, done: Completed[Any] | TiledResult) -> None:
    timer.record("queue", done.queue_s)
    timer.record("infer", done.infer_s)
    if isinstance(done, TiledResult):
        timer.record("stitch", done.stitch_s)
        timer.count("windows", done.windows)


async def infer_and_encode(inference: InferenceRequest, params: Any, encode: Encode) -> Response:
    """Queue the image (or its windows, or each image of many) for the model, encode the
    result off the loop, time every stage; 504 past the deadline, 499 when the client left."""
    if inference.batch is None:
        work = _infer_and_encode_one(inference, params, encode)
    else:
        work = _infer_and_encode_many(inference, inference.batch, params, encode)
    deadline = inference.deadline
    try:
        answer = await unless_abandoned(inference.request, work)
    except DeadlineExceeded:
        raise DeadlineExceeded(
            f"no result within the request timeout of {deadline.seconds:g} s "
            f"({deadline.source}), counted from the request's arrival"
        ) from None
    if answer is None:
        log.info("client disconnected while its request waited for %s", inference.model.spec.name)
        # Nobody reads this; 499 is the usual "client closed request" for logs and metrics.
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    body, media_type = answer
    headers = {"Server-Timing": inference.timer.header()}
    return Response(body, media_type=media_type, headers=headers)


async def _infer_and_encode_one(
    inference: InferenceRequest, params: Any, encode: Encode
) -> tuple[bytes, str]:
    image = inference.image
    assert image is not None, "a single request's image is decoded before it is queued"
    done = await infer_image(inference, image, params)
    record(inference.timer, done)
    return await encode_off_loop(inference.timer, encode, done.result, image)


async def _infer_and_encode_many(
    inference: InferenceRequest, batch: list[bytes | ServiceError], params: Any, encode: Encode
) -> tuple[bytes, str]:
    """One JSON entry per image, in order: its answer, or its own error (docs/api.md, "Many
    images in one request"). Only the deadline fails the request as a whole."""
    inference.timer.count("images", len(batch))
    tasks = [asyncio.ensure_future(_entry(inference, item, params, encode)) for item in batch]
    try:
        entries = await asyncio.gather(*tasks)
    finally:
        for task in tasks:  # a deadline or a disconnect: what is not computed is cancelled
            task.cancel()
    return b'{"results":[' + b",".join(entries) + b"]}", JSON


async def _entry(
    inference: InferenceRequest, item: bytes | ServiceError, params: Any, encode: Encode
) -> bytes:
    """One image's entry of a many-images answer."""
    try:
        if isinstance(item, ServiceError):
            raise item
        assert inference.decode is not None, "a many-images request says how to decode"
        image = await inference.decode(item)
        done = await infer_image(inference, image, params, admitted=True)
        record(inference.timer, done)
        body, media_type = await encode_off_loop(inference.timer, encode, done.result, image)
    except DeadlineExceeded:
        raise  # the deadline covers the whole request
    except ServiceError as exc:
        return _error_entry(exc)
    except Exception:
        log.exception("an image of a many-images request failed on %s", inference.model.spec.name)
        return _error_entry(InternalError("inference failed"))
    if media_type == JSON:
        return body  # the single answer's JSON object, as is
    return orjson.dumps({"media_type": media_type, "data": base64.b64encode(body).decode()})


def _error_entry(error: ServiceError) -> bytes:
    return orjson.dumps(
        {"error": {"code": error.code, "message": error.message}, "status": status_of(error)}
    )


async def encode_off_loop(
    timer: StageTimer, encode: Encode, result: Any, image: np.ndarray
) -> tuple[bytes, str]:
    """The response body of ``result``, made in the thread pool and timed as ``encode``."""
    with timer.stage("encode"):
        return await run_in_threadpool(_encode, encode, result, image)


def _encode(encode: Encode, result: Any, image: np.ndarray) -> tuple[bytes, str]:
    faults.point("encode", result)
    return encode(result, image)
