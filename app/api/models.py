"""GET /models: what is served, and how."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import RegistryDep
from app.api.openapi import error_responses
from app.schemas import ModelsResponse

router = APIRouter(tags=["models"])


@router.get(
    "/models",
    response_model=ModelsResponse,
    summary="Every served model",
    responses=error_responses(401, 500, 503),  # API key, a fault, models still loading
)
async def list_models(registry: RegistryDep) -> dict[str, Any]:
    return {"models": [m.describe() for m in registry.models.values()]}
