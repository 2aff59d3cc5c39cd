"""The one owner of the service's runtime state: what the app holds between requests.

:class:`AppState` is built by ``create_app`` and filled by its lifespan; routes reach it
through the providers of :mod:`app.api.deps`, the command line through :func:`app_state`.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from starlette.applications import Starlette

from app.config import Settings
from app.metrics import ServiceMetrics
from app.serving import ModelRegistry


class Lifecycle(str, enum.Enum):
    """Where the service is in its life; only ``READY`` takes inference traffic."""

    STARTING = "starting"  # the port is open, models load and warm up in the background
    READY = "ready"
    DRAINING = "draining"  # SIGTERM or shutdown: accepted work finishes, new work gets 503
    FAILED = "failed"  # loading or warm-up failed: ``startup_error`` says why


@dataclass(eq=False)
class AppState:
    """Settings, metrics, the model registry, the decode slots and the lifecycle of one app."""

    settings: Settings
    metrics: ServiceMetrics
    registry: ModelRegistry | None = None  # set by the lifespan once the models are loaded
    # How many images may decode at once; made by the lifespan, on the app's event loop.
    decode_slots: asyncio.Semaphore | None = None
    lifecycle: Lifecycle = Lifecycle.STARTING
    startup_error: BaseException | None = None
    startup_task: asyncio.Task[None] | None = None  # the lifespan's background start

    @property
    def ready(self) -> bool:
        return self.lifecycle is Lifecycle.READY and self.registry is not None

    def begin_draining(self) -> None:
        """Turn readiness false for good (a failed start stays failed)."""
        if self.lifecycle is not Lifecycle.FAILED:
            self.lifecycle = Lifecycle.DRAINING


def app_state(app: Starlette) -> AppState:
    """The :class:`AppState` that ``create_app`` attached to ``app``."""
    state = app.state.service
    assert isinstance(state, AppState), "not an app made by app.main.create_app"
    return state
