"""Liveness and readiness, also at the KServe v2 paths."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.handlers import error_response
from app.readiness import is_ready
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
async def ready(request: Request) -> JSONResponse:
    if not is_ready(request.app):
        return error_response(
            503,
            "not_ready",
            "models are loading or the service is shutting down",
            {"Retry-After": str(request.app.state.settings.retry_after_s)},
        )
    return JSONResponse({"status": "ready"})
