"""POST /segment: semantic segmentation."""

from __future__ import annotations

from fastapi import APIRouter, Header, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ImageDep, SemanticModelDep, SettingsDep, TimerDep
from app.api.openapi import IMAGE_REQUEST_BODY, image_responses
from app.api.query import (
    ClassesQuery,
    FormatQuery,
    MinAreaQuery,
    ToleranceQuery,
    choose_format,
    class_ids,
)
from app.rendering import RenderOptions, render_semantic
from app.schemas import SegmentResponse

router = APIRouter(tags=["inference"])


@router.post(
    "/segment",
    summary="Semantic segmentation: a class per pixel",
    response_class=Response,
    responses=image_responses(
        SegmentResponse, "A PNG class map (default), JSON polygons or an overlay."
    ),
    openapi_extra=IMAGE_REQUEST_BODY,
)
async def segment(
    model: SemanticModelDep,
    image: ImageDep,
    settings: SettingsDep,
    timer: TimerDep,
    format: FormatQuery = None,
    classes: ClassesQuery = None,
    tolerance: ToleranceQuery = 1.0,
    min_area: MinAreaQuery = 0.0,
    accept: str | None = Header(None, include_in_schema=False),
) -> Response:
    fmt = choose_format(format, accept, default="png")
    opts = RenderOptions(
        model=model.spec.name,
        categories=model.predictor.categories,
        keep=class_ids(classes, model.predictor.categories),
        tolerance=tolerance,
        min_area=min_area,
        compress_level=settings.png_compress_level,
    )
    done = await model.infer(image, None, settings.request_timeout_s)
    timer.record("queue", done.queue_s)
    timer.record("infer", done.infer_s)
    with timer.stage("encode"):
        body, media_type = await run_in_threadpool(render_semantic, done.result, image, fmt, opts)
    return Response(body, media_type=media_type, headers={"Server-Timing": timer.header()})
