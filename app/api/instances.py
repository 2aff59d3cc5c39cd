"""POST /instances: instance segmentation."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.api.common import DeadlineDep, OutputQueryDep, choose_format, infer_and_render
from app.api.deps import ImageDep, InstanceModelDep, SettingsDep, TimerDep
from app.api.openapi import IMAGE_REQUEST_BODY, image_responses
from app.predictors import MAX_INSTANCES, InstanceParams
from app.rendering import MaskEncoding, render_instances
from app.schemas import InstancesResponse

router = APIRouter(tags=["inference"])

Probability = Annotated[float, Query(ge=0, le=1, allow_inf_nan=False)]


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
    request: Request,
    output: OutputQueryDep,
    deadline: DeadlineDep,  # before the image: a bad header is refused before decoding
    image: ImageDep,
    settings: SettingsDep,
    timer: TimerDep,
    score_threshold: Annotated[
        Probability, Query(description="Drop detections scoring lower.")
    ] = 0.5,
    mask_threshold: Annotated[Probability, Query(description="Mask probability cut-off.")] = 0.5,
    max_instances: Annotated[
        int,
        Query(ge=1, le=MAX_INSTANCES, description="Keep at most this many, highest scores first."),
    ] = 100,
    mask_encoding: Annotated[
        MaskEncoding, Query(description="`polygons`, `rle` or `both`.")
    ] = "polygons",
) -> Response:
    fmt = choose_format(output.format, output.accept, default="json")
    opts = output.options(model, settings)
    render = partial(render_instances, image=image, fmt=fmt, opts=opts, mask_encoding=mask_encoding)
    keep = None if opts.keep is None else frozenset(opts.keep)
    params = InstanceParams(score_threshold, mask_threshold, max_instances, keep)
    return await infer_and_render(request, model, image, params, deadline, timer, render)
