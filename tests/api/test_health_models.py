"""Health, readiness, /models and the OpenAPI document."""

from __future__ import annotations

import threading

import httpx
import pytest

from app.config import Settings
from app.errors import ConfigError
from app.main import create_app, wait_until_started
from app.serving import ModelRegistry
from app.state import Lifecycle, app_state
from tests.api.conftest import Served, make_settings
from tests.fakes import INST_CATEGORIES, SEM_CATEGORIES


async def test_liveness_and_readiness_paths(served: Served) -> None:
    for path in ("/healthz", "/v2/health/live", "/readyz", "/v2/health/ready"):
        response = await served.client.get(path)
        assert response.status_code == 200, path


async def test_models_describes_every_model(served: Served) -> None:
    models = {m["name"]: m for m in (await served.client.get("/models")).json()["models"]}
    assert set(models) == {"fake-sem", "fake-inst"}
    sem = models["fake-sem"]
    assert sem["task"] == "semantic"
    assert sem["architecture"] == "deeplabv3_mobilenet_v3_large"
    assert sem["categories"] == SEM_CATEGORIES
    assert models["fake-inst"]["categories"] == INST_CATEGORIES
    assert sem["weights"] == "untrained"
    assert sem["default"] is True
    assert sem["device"] == "cpu" and sem["precision"] == "fp32"
    assert sem["channels_last"] is False
    assert sem["batching"] == {
        "max_batch_size": 4,
        "max_wait_ms": 1.0,
        "max_queue_size": 64,
        "autotune": None,  # warm-up is off in these tests, so nothing was measured
    }


async def test_readiness_follows_loading_and_shutdown() -> None:
    loading = threading.Event()

    def loader(settings: Settings) -> ModelRegistry:
        assert loading.wait(10)  # the test decides when loading finishes
        return ModelRegistry([])

    app = create_app(make_settings(), loader=loader)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/readyz")).status_code == 503
        async with app.router.lifespan_context(app):
            # The lifespan has started; models are still loading: alive, not ready.
            assert (await client.get("/healthz")).status_code == 200
            during = await client.get("/readyz")
            assert during.status_code == 503
            assert during.headers["retry-after"] == "1"
            assert during.json()["error"]["code"] == "not_ready"
            models = await client.get("/models")
            assert models.status_code == 503
            loading.set()
            await wait_until_started(app)
            assert (await client.get("/readyz")).status_code == 200
            app_state(app).begin_draining()  # what SIGTERM does, before connections drain
            assert app_state(app).lifecycle is Lifecycle.DRAINING
            assert (await client.get("/v2/health/ready")).status_code == 503
        assert (await client.get("/v2/health/ready")).status_code == 503


async def test_a_failed_start_is_reported_and_never_ready() -> None:
    failures: list[BaseException] = []

    def loader(settings: Settings) -> ModelRegistry:
        raise ConfigError("models/x.toml: broken")

    app = create_app(make_settings(), loader=loader, on_startup_failure=failures.append)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        app.router.lifespan_context(app),
    ):
        with pytest.raises(ConfigError):
            await wait_until_started(app)
        assert (await client.get("/readyz")).status_code == 503
    assert [str(f) for f in failures] == ["models/x.toml: broken"]
    assert isinstance(app_state(app).startup_error, ConfigError)
    assert app_state(app).lifecycle is Lifecycle.FAILED


async def test_openapi_documents_inputs_outputs_and_errors(served: Served) -> None:
    spec = (await served.client.get("/openapi.json")).json()
    for path in ("/segment", "/instances"):
        post = spec["paths"][path]["post"]
        assert {"multipart/form-data", "application/json", "image/jpeg", "image/png"} <= set(
            post["requestBody"]["content"]
        )
        assert {"200", "400", "404", "413", "415", "422", "500", "503", "504"} <= set(
            post["responses"]
        )
        assert "image/png" in post["responses"]["200"]["content"]
    assert "SegmentResponse" in spec["components"]["schemas"]
    assert (await served.client.get("/docs")).status_code == 200
