"""GET /metrics: Prometheus exposition of this app's metrics (open, like the health probes)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import StateDep

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format; OpenMetrics when the scraper asks for it)",
    response_class=Response,
    responses={
        200: {
            "description": "Every `segserve_*` series, and the process's own.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(request: Request, state: StateDep) -> Response:
    body, content_type = state.metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
