"""The optional API key."""

from __future__ import annotations

import pytest

from tests.api.conftest import Served, encode, sample_image

pytestmark = pytest.mark.parametrize("settings_overrides", [{"api_key": "s3cret-key"}])


async def test_inference_and_models_need_the_key(served: Served) -> None:
    data = encode(sample_image())
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret"}):
        response = await served.client.post(
            "/segment", content=data, headers={"Content-Type": "image/png", **headers}
        )
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "s3cret" not in response.text
    assert (await served.client.get("/models")).status_code == 401
    assert served.semantic.batches == []  # refused before any work


async def test_either_header_carries_the_key(served: Served) -> None:
    data = encode(sample_image())
    for headers in ({"Authorization": "Bearer s3cret-key"}, {"X-API-Key": "s3cret-key"}):
        response = await served.client.post(
            "/instances", content=data, headers={"Content-Type": "image/png", **headers}
        )
        assert response.status_code == 200, headers
    models = await served.client.get("/models", headers={"X-API-Key": "s3cret-key"})
    assert models.status_code == 200


async def test_health_and_docs_stay_open(served: Served) -> None:
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/openapi.json"):
        assert (await served.client.get(path)).status_code == 200, path
    schemes = (await served.client.get("/openapi.json")).json()["components"]["securitySchemes"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schemes)
