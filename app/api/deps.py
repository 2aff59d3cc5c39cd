"""Dependency providers and their ``Annotated`` aliases, so handlers read like prose.

The providers only fetch and hand over: body parsing lives in :mod:`app.api.body`, query
parameters in :mod:`app.api.params`, the deadline rule in :mod:`app.api.deadline`. The cheap
ones are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a hop that
costs more than the work and that every request (503s included) would pay.
"""

# No `from __future__ import annotations` here: FastAPI reads these signatures at runtime,
# and the inference dependency's model parameter names a provider local to its factory,
# which a string annotation could not resolve.

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Header, Request

from app.api import body
from app.api.deadline import REQUEST_TIMEOUT_HEADER, Deadline, parse_request_timeout
from app.api.inference import InferenceRequest
from app.api.params import (
    ClassesQuery,
    FormatQuery,
    MinAreaQuery,
    ModelName,
    OutputQuery,
    OverlapQuery,
    TileQuery,
    ToleranceQuery,
    resolve_tiling,
)
from app.config import Settings
from app.errors import NotReady
from app.imaging import ImageLimits
from app.predictors.repository import Task
from app.request_log import note_model, note_timer
from app.serving import ModelRegistry, ServedModel
from app.state import AppState, app_state
from app.timing import StageTimer


async def get_app_state(request: Request) -> AppState:
    return app_state(request.app)


StateDep = Annotated[AppState, Depends(get_app_state)]


async def get_app_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_registry(state: StateDep) -> ModelRegistry:
    """The model registry once the service is ready; 503 while starting or draining."""
    if not state.ready or state.registry is None:
        raise NotReady(
            "the service is not ready (models loading, or shutting down)",
            retry_after_s=state.settings.retry_after_s,
        )
    return state.registry


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


async def get_timer(request: Request) -> StageTimer:
    timer = StageTimer()
    note_timer(request, timer)  # the request's log line and metrics read its stages
    return timer


TimerDep = Annotated[StageTimer, Depends(get_timer)]


def _admitted(
    request: Request, registry: ModelRegistry, task: Task, name: str | None
) -> ServedModel[Any]:
    served = registry.get(task, name)
    note_model(request, served.spec.name)
    served.batcher.admit()  # a full queue refuses before the body is read or decoded
    return served


async def semantic_model(  # on the loop, where the batcher's queue lives
    request: Request, registry: RegistryDep, model: ModelName = None
) -> ServedModel[Any]:
    return _admitted(request, registry, "semantic", model)


async def instance_model(  # on the loop, where the batcher's queue lives
    request: Request, registry: RegistryDep, model: ModelName = None
) -> ServedModel[Any]:
    return _admitted(request, registry, "instance", model)


async def output_query(
    format: FormatQuery = None,
    classes: ClassesQuery = None,
    tolerance: ToleranceQuery = 1.0,
    min_area: MinAreaQuery = 0.0,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> OutputQuery:
    return OutputQuery(format, classes, tolerance, min_area, accept)


OutputQueryDep = Annotated[OutputQuery, Depends(output_query)]


async def request_deadline(
    settings: SettingsDep,
    timer: TimerDep,  # made by the first dependency that needs it: the deadline counts from then
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


def _decoder(
    state: AppState, timer: StageTimer, tiled: bool
) -> Callable[[bytes], Awaitable[np.ndarray]]:
    """How this request's images decode: under the app's decode slots, within the caps (a
    tiled request may be larger: SEGSERVE_MAX_TILED_PIXELS)."""
    settings = state.settings
    max_pixels = settings.max_tiled_pixels if tiled else settings.max_image_pixels
    limits = ImageLimits(max_pixels=max_pixels, max_side=settings.max_image_side)
    slots = state.decode_slots
    assert slots is not None, "made by the lifespan, before the service turns ready"
    return functools.partial(body.decode, limits=limits, slots=slots, timer=timer)


def _inference_of(
    model_provider: Callable[..., Awaitable[ServedModel[Any]]],
) -> Callable[..., Awaitable[InferenceRequest]]:
    """The dependency both inference routes use; its parameters are resolved in order, and
    the image is read and decoded last, once everything else has been accepted."""

    async def inference(
        request: Request,
        # First the model: an unknown one (404) or a full queue (503) is refused before
        # anything else is checked or read.
        model: Annotated[ServedModel[Any], Depends(model_provider)],
        output: OutputQueryDep,
        state: StateDep,
        # Before the image: a bad header is refused before the body is read and decoded.
        deadline: DeadlineDep,
        timer: TimerDep,
        tile: TileQuery = None,
        overlap: OverlapQuery = None,
    ) -> InferenceRequest:
        tiling = resolve_tiling(tile, overlap, model.spec.tiling)
        settings = state.settings
        upload = await body.read_upload(
            request,
            settings.max_body_bytes,
            settings.max_images_per_request,
            # The body may take the read timeout, never longer than the request has left.
            max(0.0, min(settings.body_read_timeout_s, timer.remaining(deadline.seconds))),
        )
        decode = _decoder(state, timer, tiled=tiling is not None)
        resolved = functools.partial(
            InferenceRequest, request, model, output, deadline, tiling, settings, timer
        )
        if not upload.many:
            image = upload.images[0]
            assert isinstance(image, bytes), "a single request's errors are raised"
            return resolved(image=await decode(image))
        model.batcher.admit(len(upload.images))  # all of them, or none
        return resolved(batch=upload.images, decode=decode)

    return inference


SemanticInference = Annotated[InferenceRequest, Depends(_inference_of(semantic_model))]
InstanceInference = Annotated[InferenceRequest, Depends(_inference_of(instance_model))]
