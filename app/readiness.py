"""Whether the app should take traffic: models loaded and warmed up, and not draining."""

from __future__ import annotations

from starlette.applications import Starlette


def is_ready(app: Starlette) -> bool:
    registry = getattr(app.state, "registry", None)
    return registry is not None and bool(registry.ready) and not app.state.draining
