"""The application factory and its lifespan, which owns every long-lived resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import faults
from app.api import handlers, health, instances, models, segment, ui
from app.api import metrics as metrics_route
from app.api.auth import require_api_key
from app.api.deadline import REQUEST_TIMEOUT_HEADER
from app.config import Settings, get_settings
from app.errors import ConfigError
from app.metrics import ServiceMetrics
from app.predictors import load_repository
from app.request_log import REQUEST_ID_HEADER, RequestLogMiddleware, configure_access_log
from app.serving import ModelRegistry
from app.state import AppState, Lifecycle, app_state
from app.threads import available_cpus, configure_torch_threads

log = logging.getLogger(__name__)

RegistryLoader = Callable[[Settings], ModelRegistry]


def load_registry(settings: Settings) -> ModelRegistry:
    """Read the model repository and load every model onto the device."""
    configure_torch_threads(settings.torch_threads)
    return ModelRegistry.load(load_repository(settings.models_dir), settings)


async def _start(state: AppState, loader: RegistryLoader) -> None:
    """Load, warm up and start every model; the lifecycle turns ready only at the end."""
    # Loading blocks (disk, device transfers): keep it off the event loop.
    registry = await asyncio.to_thread(loader, state.settings)
    state.registry = registry
    state.metrics.watch(registry)
    if state.settings.warmup:
        await registry.warmup()
    registry.start()
    if state.lifecycle is Lifecycle.STARTING:  # not if a SIGTERM came meanwhile
        state.lifecycle = Lifecycle.READY
    log.info("ready: %s", ", ".join(registry.models))


async def wait_until_started(app: FastAPI) -> None:
    """Wait for the background start of the lifespan (raises what it raised)."""
    startup = app_state(app).startup_task
    assert startup is not None, "the app's lifespan has not begun"
    await startup


def create_app(
    settings: Settings | None = None,
    *,
    loader: RegistryLoader = load_registry,
    on_startup_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """Build the app.

    ``loader`` lets tests serve fake predictors through the real stack;
    ``on_startup_failure`` is told when loading or warm-up fails (the CLI stops the server).
    """
    settings = settings or get_settings()
    state = AppState(settings, ServiceMetrics(lambda: state.registry))

    async def start() -> None:
        try:
            await _start(state, loader)
        except Exception as exc:
            log.error("startup failed: %s", exc, exc_info=not isinstance(exc, ConfigError))
            state.lifecycle = Lifecycle.FAILED
            state.startup_error = exc
            if on_startup_failure is not None:
                on_startup_failure(exc)
            raise

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Decoding is CPU-bound and a large image briefly takes hundreds of MB: more decodes
        # at once than CPUs gain nothing and could exhaust memory (the thread pool has 40).
        state.decode_slots = asyncio.Semaphore(settings.max_concurrent_decodes or available_cpus())
        # Models load in the background so that the process answers /healthz (200) and
        # /readyz (503) while they load, as probes expect; the server binds at once.
        state.startup_task = asyncio.create_task(start(), name="segserve-startup")
        try:
            yield
        finally:
            state.begin_draining()
            if not state.startup_task.done():
                state.startup_task.cancel()
            await asyncio.wait([state.startup_task])
            if not state.startup_task.cancelled():
                state.startup_task.exception()  # retrieved: start() has logged it
            if state.registry is not None:
                # Readiness is already false; queued work drains before the threads stop.
                await state.registry.stop()
            log.info("stopped")

    app = FastAPI(
        title="segserve",
        version="0.1.0",
        summary="Semantic and instance segmentation with torchvision models, over HTTP.",
        lifespan=lifespan,
    )
    app.state.service = state
    configure_access_log(settings.log_format)
    handlers.register(app)
    if armed := faults.arm_from_setting(settings.debug_faults):
        log.warning("SEGSERVE_DEBUG_FAULTS armed fault points %s: not for production", armed)
    if settings.cors_origins:
        # Off unless configured: browsers then may call the API from these origins only.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                REQUEST_TIMEOUT_HEADER,
                REQUEST_ID_HEADER,
            ],
            expose_headers=["Server-Timing", "Retry-After", REQUEST_ID_HEADER],
        )
    # Added last, so outermost: it times, ids and logs what CORS answers too.
    app.add_middleware(RequestLogMiddleware, metrics=state.metrics)
    app.include_router(health.router)  # open: probes carry no keys
    app.include_router(metrics_route.router)  # open too: scrapers carry no keys
    for module in (segment, instances, models):
        app.include_router(module.router, dependencies=[Depends(require_api_key)])
    if settings.ui:
        app.include_router(ui.router)  # the page is open; its API calls carry the key
    return app
