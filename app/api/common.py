"""What the inference endpoints share: output query parameters, and infer-then-render."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Header, Query, Response
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.errors import DeadlineExceeded, InvalidParameter
from app.rendering import OutputFormat, RenderOptions
from app.serving import ServedModel
from app.timing import StageTimer

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


def output_query(
    format: FormatQuery = None,
    classes: ClassesQuery = None,
    tolerance: ToleranceQuery = 1.0,
    min_area: MinAreaQuery = 0.0,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> OutputQuery:
    return OutputQuery(format, classes, tolerance, min_area, accept)


OutputQueryDep = Annotated[OutputQuery, Depends(output_query)]


async def infer_and_render(
    model: ServedModel[Any],
    image: np.ndarray,
    params: Any,
    settings: Settings,
    timer: StageTimer,
    render: Callable[[Any], tuple[bytes, str]],
) -> Response:
    """Queue the image for the model, render its result off the loop, time every stage."""
    try:
        done = await model.infer(image, params, timer.remaining(settings.request_timeout_s))
    except DeadlineExceeded:
        raise DeadlineExceeded(
            f"no result within the request timeout of {settings.request_timeout_s:g} s "
            "(SEGSERVE_REQUEST_TIMEOUT_S), counted from the request's arrival"
        ) from None
    timer.record("queue", done.queue_s)
    timer.record("infer", done.infer_s)
    with timer.stage("encode"):
        body, media_type = await run_in_threadpool(render, done.result)
    return Response(body, media_type=media_type, headers={"Server-Timing": timer.header()})
