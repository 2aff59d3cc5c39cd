"""Health, readiness, /models and the OpenAPI document."""

from __future__ import annotations

from app.config import Settings
from app.main import create_app
from app.serving import ModelRegistry
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
    assert sem["batching"] == {"max_batch_size": 4, "max_wait_ms": 1.0, "max_queue_size": 64}


async def test_readiness_is_503_until_the_lifespan_has_run_and_after_it() -> None:
    import httpx

    def loader(settings: Settings) -> ModelRegistry:
        return ModelRegistry([])

    app = create_app(make_settings(), loader=loader)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        before = await client.get("/readyz")
        assert before.status_code == 503
        assert before.headers["retry-after"] == "1"
        assert before.json()["error"]["code"] == "not_ready"
        assert (await client.get("/healthz")).status_code == 200
        async with app.router.lifespan_context(app):
            assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/v2/health/ready")).status_code == 503


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
