"""What the inference endpoints share: output query parameters, the request deadline, and
infer-then-render (which gives up when the client disconnects)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app import faults
from app.api.deps import SettingsDep, TimerDep
from app.batching import Completed
from app.config import Settings
from app.errors import DeadlineExceeded, InvalidParameter
from app.rendering import OutputFormat, RenderOptions
from app.serving import ServedModel
from app.timing import StageTimer

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499

FormatQuery = Annotated[
    OutputFormat | None,
    Query(
        description="`png`, `json` or `overlay` (absent: `Accept: application/json` selects json)."
    ),
]
ClassesQuery = Annotated[
    str | None, Query(description="Comma-separated labels to keep (default: all).")
]
ToleranceQuery = Annotated[
    float,
    Query(
        ge=0,
        le=1000,
        allow_inf_nan=False,
        description="Douglas-Peucker tolerance in pixels; 0 = exact boundary.",
    ),
]
MinAreaQuery = Annotated[
    float,
    Query(ge=0, allow_inf_nan=False, description="Drop polygons with a smaller area (pixels)."),
]


def choose_format(
    fmt: OutputFormat | None, accept: str | None, default: OutputFormat
) -> OutputFormat:
    if fmt is not None:
        return fmt
    if accept and "application/json" in accept.lower():
        return "json"
    return default


def class_ids(classes: str | None, categories: list[str]) -> set[int] | None:
    """The ids of the comma-separated labels in ``classes``; 422 naming any unknown label."""
    wanted = [c.strip() for c in (classes or "").split(",") if c.strip()]
    if not wanted:  # absent or empty (`classes=`): every class
        return None
    index = {label: i for i, label in enumerate(categories)}
    unknown = [c for c in wanted if c not in index]
    if unknown:
        raise InvalidParameter(
            f"classes: unknown label(s) {', '.join(map(repr, unknown))}; this model's labels "
            f"are {', '.join(c for c in categories if c)}"
        )
    return {index[c] for c in wanted}


@dataclass(frozen=True)
class OutputQuery:
    format: OutputFormat | None
    classes: str | None
    tolerance: float
    min_area: float
    accept: str | None

    def options(self, model: ServedModel[Any], settings: Settings) -> RenderOptions:
        categories = model.predictor.categories
        return RenderOptions(
            model=model.spec.name,
            categories=categories,
            keep=class_ids(self.classes, categories),
            tolerance=self.tolerance,
            min_area=self.min_area,
            compress_level=settings.png_compress_level,
        )


async def output_query(
    format: FormatQuery = None,
    classes: ClassesQuery = None,
    tolerance: ToleranceQuery = 1.0,
    min_area: MinAreaQuery = 0.0,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> OutputQuery:
    return OutputQuery(format, classes, tolerance, min_area, accept)


OutputQueryDep = Annotated[OutputQuery, Depends(output_query)]


REQUEST_TIMEOUT_HEADER = "X-Request-Timeout"


@dataclass(frozen=True)
class Deadline:
    """How long this request may take, counted from its arrival, and who set that."""

    seconds: float
    source: str  # named in the 504 message, so a client knows which limit it hit


def parse_request_timeout(value: str | None, server_s: float) -> Deadline:
    """The request's budget: the server's, or the client's header when shorter (422 if bad)."""
    server = Deadline(server_s, "SEGSERVE_REQUEST_TIMEOUT_S")
    if value is None:
        return server
    try:
        asked = float(value.strip())
    except ValueError:
        asked = math.nan
    if not math.isfinite(asked) or asked <= 0:
        raise InvalidParameter(
            f"{REQUEST_TIMEOUT_HEADER}: expected a positive number of seconds; got {value!r}"
        )
    # A client may ask for less time, never for more than the server grants.
    return Deadline(asked, REQUEST_TIMEOUT_HEADER) if asked < server_s else server


async def request_deadline(
    settings: SettingsDep,
    timer: TimerDep,  # created here, first, so the deadline counts from the request's arrival
    x_request_timeout: Annotated[
        str | None,
        Header(
            alias=REQUEST_TIMEOUT_HEADER,
            description="Seconds this request may take, counted from its arrival (504 after). "
            "Shortens the server's SEGSERVE_REQUEST_TIMEOUT_S; a longer value is capped to it.",
        ),
    ] = None,
) -> Deadline:
    return parse_request_timeout(x_request_timeout, settings.request_timeout_s)


DeadlineDep = Annotated[Deadline, Depends(request_deadline)]


async def _client_gone(request: Request) -> None:
    """Return once the client disconnects (the ASGI `http.disconnect` message)."""
    # The body has been read by now, so the next message the server sends is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _infer_unless_abandoned(
    request: Request, model: ServedModel[Any], image: np.ndarray, params: Any, timeout_s: float
) -> Completed[Any] | None:
    """The model's result, or None when the client disconnected first.

    Leaving cancels the queued entry, so an abandoned request costs no model time unless its
    batch has already started.
    """
    inference = asyncio.ensure_future(model.infer(image, params, timeout_s))
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait([inference, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (inference, watcher):
            task.cancel()
    if not inference.done() or inference.cancelled():
        return None
    return inference.result()


async def infer_and_render(
    request: Request,
    model: ServedModel[Any],
    image: np.ndarray,
    params: Any,
    deadline: Deadline,
    timer: StageTimer,
    render: Callable[[Any], tuple[bytes, str]],
) -> Response:
    """Queue the image for the model, render its result off the loop, time every stage."""
    try:
        done = await _infer_unless_abandoned(
            request, model, image, params, timer.remaining(deadline.seconds)
        )
    except DeadlineExceeded:
        raise DeadlineExceeded(
            f"no result within the request timeout of {deadline.seconds:g} s "
            f"({deadline.source}), counted from the request's arrival"
        ) from None
    if done is None:
        log.info("client disconnected while its request waited for %s", model.spec.name)
        # Nobody reads this; 499 is the usual "client closed request" for logs and metrics.
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    timer.record("queue", done.queue_s)
    timer.record("infer", done.infer_s)
    with timer.stage("encode"):
        body, media_type = await run_in_threadpool(_render, render, done.result)
    return Response(body, media_type=media_type, headers={"Server-Timing": timer.header()})


def _render(render: Callable[[Any], tuple[bytes, str]], result: Any) -> tuple[bytes, str]:
    faults.point("encode", result)
    return render(result)
