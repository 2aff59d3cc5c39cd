"""The application factory and its lifespan, which owns every long-lived resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import handlers, health, instances, models, segment
from app.config import Settings, get_settings
from app.predictors import load_repository
from app.serving import ModelRegistry

log = logging.getLogger(__name__)

RegistryLoader = Callable[[Settings], ModelRegistry]


def load_registry(settings: Settings) -> ModelRegistry:
    """Read the model repository and load every model onto the device."""
    return ModelRegistry.load(load_repository(settings.models_dir), settings)


def create_app(
    settings: Settings | None = None, *, loader: RegistryLoader = load_registry
) -> FastAPI:
    """Build the app; ``loader`` lets tests serve fake predictors through the real stack."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Loading blocks (disk, device transfers): keep it off the event loop.
        registry = await asyncio.to_thread(loader, settings)
        app.state.registry = registry
        if settings.warmup:
            await registry.warmup()
        registry.start()
        registry.ready = True
        log.info("ready: %s", ", ".join(registry.models))
        try:
            yield
        finally:
            # Readiness turns false first, then queued work drains before the threads stop.
            await registry.stop()
            log.info("stopped")

    app = FastAPI(
        title="segserve",
        version="0.1.0",
        summary="Semantic and instance segmentation with torchvision models, over HTTP.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    handlers.register(app)
    for module in (segment, instances, health, models):
        app.include_router(module.router)
    return app
