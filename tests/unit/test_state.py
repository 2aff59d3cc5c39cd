"""AppState: one lifecycle (starting, ready, draining, failed) decides readiness."""

from __future__ import annotations

import threading

import httpx
import pytest

from app.main import create_app, wait_until_started
from app.serving import ModelRegistry
from app.state import Lifecycle, app_state
from tests.api.conftest import make_settings


async def test_a_drain_during_startup_keeps_the_service_unready() -> None:
    loading = threading.Event()

    def loader(settings: object) -> ModelRegistry:
        assert loading.wait(10)
        return ModelRegistry([])

    app = create_app(make_settings(), loader=loader)
    state = app_state(app)
    assert state.lifecycle is Lifecycle.STARTING and state.decode_slots is None
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        app.router.lifespan_context(app),
    ):
        assert state.decode_slots is not None  # the lifespan made it, before any request
        state.begin_draining()  # SIGTERM while the models load
        loading.set()
        await wait_until_started(app)
        assert state.registry is not None  # loaded and started...
        assert state.lifecycle is Lifecycle.DRAINING  # ...but never turned ready
        assert not state.ready
        assert (await client.get("/readyz")).status_code == 503


async def test_a_failed_start_stays_failed_when_draining() -> None:
    def loader(settings: object) -> ModelRegistry:
        raise RuntimeError("boom")

    app = create_app(make_settings(), loader=loader)
    state = app_state(app)
    async with app.router.lifespan_context(app):
        with pytest.raises(RuntimeError, match="boom"):
            await wait_until_started(app)
        assert state.lifecycle is Lifecycle.FAILED
        state.begin_draining()
        assert state.lifecycle is Lifecycle.FAILED
    assert isinstance(state.startup_error, RuntimeError)
