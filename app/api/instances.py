"""POST /instances: instance segmentation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ImageDep, InstanceModelDep, SettingsDep, TimerDep
from app.api.openapi import IMAGE_REQUEST_BODY, image_responses
from app.api.query import (
    ClassesQuery,
    FormatQuery,
    MinAreaQuery,
    ToleranceQuery,
    choose_format,
    class_ids,
)
from app.predictors import InstanceParams
from app.rendering import MaskEncoding, RenderOptions, render_instances
from app.schemas import InstancesResponse

router = APIRouter(tags=["inference"])

Probability = Annotated[float, Query(ge=0, le=1)]


@router.post(
    "/instances",
    summary="Instance segmentation: one mask per detected object",
    response_class=Response,
    responses=image_responses(
        InstancesResponse, "JSON instances (default), an id-map PNG or an overlay."
    ),
    openapi_extra=IMAGE_REQUEST_BODY,
)
async def instances(
    model: InstanceModelDep,
    image: ImageDep,
    settings: SettingsDep,
    timer: TimerDep,
    format: FormatQuery = None,
    classes: ClassesQuery = None,
    tolerance: ToleranceQuery = 1.0,
    min_area: MinAreaQuery = 0.0,
    score_threshold: Annotated[
        Probability, Query(description="Drop detections scoring lower.")
    ] = 0.5,
    mask_threshold: Annotated[Probability, Query(description="Mask probability cut-off.")] = 0.5,
    max_instances: Annotated[
        int, Query(ge=1, le=1000, description="Keep at most this many.")
    ] = 100,
    mask_encoding: Annotated[
        MaskEncoding, Query(description="`polygons`, `rle` or `both`.")
    ] = "polygons",
    accept: str | None = Header(None, include_in_schema=False),
) -> Response:
    fmt = choose_format(format, accept, default="json")
    opts = RenderOptions(
        model=model.spec.name,
        categories=model.predictor.categories,
        keep=class_ids(classes, model.predictor.categories),
        tolerance=tolerance,
        min_area=min_area,
        compress_level=settings.png_compress_level,
    )
    params = InstanceParams(score_threshold, mask_threshold, max_instances)
    done = await model.infer(image, params, settings.request_timeout_s)
    timer.record("queue", done.queue_s)
    timer.record("infer", done.infer_s)
    with timer.stage("encode"):
        body, media_type = await run_in_threadpool(
            render_instances, done.result, image, fmt, opts, mask_encoding
        )
    return Response(body, media_type=media_type, headers={"Server-Timing": timer.header()})
