"""POST /instances: instance segmentation."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Response

from app.api.deps import InstanceInference
from app.api.inference import infer_and_encode
from app.api.openapi import IMAGE_REQUEST_BODY, image_responses
from app.api.params import (
    MaskEncodingQuery,
    MaskThresholdQuery,
    MaxInstancesQuery,
    ScoreThresholdQuery,
    choose_format,
)
from app.output.encode import encode_instances
from app.predictors import InstanceParams
from app.schemas import InstancesResponse

router = APIRouter(tags=["inference"])


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
    inference: InstanceInference,
    score_threshold: ScoreThresholdQuery = 0.5,
    mask_threshold: MaskThresholdQuery = 0.5,
    max_instances: MaxInstancesQuery = 100,
    mask_encoding: MaskEncodingQuery = "polygons",
) -> Response:
    output = inference.output
    fmt = choose_format(output.format, output.accept, default="json")
    opts = output.options(inference.model, inference.settings)
    encode = partial(encode_instances, fmt=fmt, opts=opts, mask_encoding=mask_encoding)
    keep = None if opts.keep is None else frozenset(opts.keep)
    params = InstanceParams(score_threshold, mask_threshold, max_instances, keep)
    return await infer_and_encode(inference, params, encode)
