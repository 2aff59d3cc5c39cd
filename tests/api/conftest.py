from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from app.config import Settings
from app.main import create_app, wait_until_started
from app.state import app_state
from tests.fakes import FakeInstance, FakeSemantic, fake_loader, fake_pair


class Served:
    """The app under test with handles on its fake predictors."""

    def __init__(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        semantic: FakeSemantic,
        instance: FakeInstance,
    ) -> None:
        self.app = app
        self.client = client
        self.semantic = semantic
        self.instance = instance

    def app_queue_depth(self) -> int:
        registry = app_state(self.app).registry
        assert registry is not None
        return int(registry.models["fake-sem"].batcher.queue_depth)


def make_settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, warmup=False, device="cpu", **overrides)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def served(settings_overrides: dict[str, Any]) -> AsyncIterator[Served]:
    semantic, instance = fake_pair()
    app = create_app(make_settings(**settings_overrides), loader=fake_loader(semantic, instance))
    async with app.router.lifespan_context(app):
        await wait_until_started(app)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield Served(app, client, semantic, instance)
        finally:
            # A failed test may leave a batch held: release it so shutdown does not wait.
            for fake in (semantic, instance):
                if fake.gate is not None:
                    fake.gate.set()


def sample_image(width: int = 64, height: int = 48) -> np.ndarray:
    """Bright top-left block, red square, dark bottom band, mid-grey elsewhere."""
    image = np.full((height, width, 3), 120, dtype=np.uint8)
    image[: height // 3, : width // 3] = 250
    image[height // 3 : height // 3 + 8, width // 2 : width // 2 + 8] = (230, 10, 10)
    image[-6:, :] = 5
    return image


def encode(image: np.ndarray, fmt: str = "PNG", **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **save)
    return buffer.getvalue()
