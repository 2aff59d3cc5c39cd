"""POST /segment: semantic segmentation."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Response

from app.api.deps import SemanticInference
from app.api.inference import infer_and_encode
from app.api.openapi import IMAGE_REQUEST_BODY, image_responses
from app.api.params import choose_format
from app.output.encode import encode_semantic
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
async def segment(inference: SemanticInference) -> Response:
    output = inference.output
    fmt = choose_format(output.format, output.accept, default="png")
    opts = output.options(inference.model, inference.settings)
    encode = partial(encode_semantic, fmt=fmt, opts=opts)
    return await infer_and_encode(inference, None, encode)
