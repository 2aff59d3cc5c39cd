"""Liveness and readiness, also at the KServe v2 paths."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import StateDep
from app.api.handlers import service_error_response
from app.errors import NotReady
from app.schemas import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, summary="200 while the process is alive")
@router.get("/v2/health/live", response_model=HealthResponse, include_in_schema=False)
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=HealthResponse,
    summary="200 once every model is loaded and warmed up",
    responses={503: {"description": "Starting or shutting down."}},
)
@router.get("/v2/health/ready", response_model=HealthResponse, include_in_schema=False)
async def ready(state: StateDep) -> JSONResponse:
    if not state.ready:
        # Answered, not raised: a probe's 503 is the expected answer, not a request error.
        return service_error_response(
            NotReady(
                "models are loading or the service is shutting down",
                retry_after_s=state.settings.retry_after_s,
            )
        )
    return JSONResponse({"status": "ready"})
