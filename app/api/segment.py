"""POST /segment: semantic segmentation."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request, Response

from app.api.common import DeadlineDep, OutputQueryDep, choose_format, infer_and_render
from app.api.deps import ImageDep, SemanticModelDep, SettingsDep, TimerDep
from app.api.openapi import IMAGE_REQUEST_BODY, image_responses
from app.rendering import render_semantic
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
    request: Request,
    output: OutputQueryDep,
    deadline: DeadlineDep,  # before the image: a bad header is refused before decoding
    image: ImageDep,
    settings: SettingsDep,
    timer: TimerDep,
) -> Response:
    fmt = choose_format(output.format, output.accept, default="png")
    render = partial(render_semantic, image=image, fmt=fmt, opts=output.options(model, settings))
    return await infer_and_render(request, model, image, None, deadline, timer, render)
