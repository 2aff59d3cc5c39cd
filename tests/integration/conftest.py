"""Fixtures for integration tests: real torchvision architectures on seeded random weights.

Each model is built once per session with ``weights=None, weights_backbone=None``, seeded,
its BatchNorms calibrated (see ``reference.calibrate``), and saved as a state_dict
checkpoint. segserve serves that checkpoint through a model repository TOML; the tests compute
the reference on the very same in-memory model object, without segserve code.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi import FastAPI
from torch import nn
from torchvision.models import get_model

from app.config import Settings
from app.main import create_app, wait_until_started
from app.serving import ModelRegistry
from app.state import app_state
from tests.integration.reference import calibrate

SEMANTIC_CATEGORIES = ["__background__", "sky", "road", "tree", "car", "person"]
INSTANCE_CATEGORIES = ["__background__", "cat", "dog", "bird"]
# Mask R-CNN resize bounds small enough for a 2-core CPU; the reference is built the same.
MASKRCNN_OPTIONS: dict[str, Any] = {"min_size": 128, "max_size": 192}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # strings and lists of strings: JSON is valid TOML here


def model_toml(
    *,
    task: str,
    architecture: str,
    checkpoint: str | None = None,
    weights: str | None = None,
    categories: list[str] | None = None,
    default: bool = True,
    max_batch_size: int = 8,
    max_wait_ms: float = 5.0,
    options: dict[str, Any] | None = None,
) -> str:
    lines = [f"task = {_toml_value(task)}", f"architecture = {_toml_value(architecture)}"]
    if checkpoint is not None:
        lines.append(f"checkpoint = {_toml_value(checkpoint)}")
    if weights is not None:
        lines.append(f"weights = {_toml_value(weights)}")
    if categories is not None:
        lines.append(f"categories = {_toml_value(categories)}")
    lines.append(f"default = {_toml_value(default)}")
    lines += ["", "[batching]", f"max_batch_size = {max_batch_size}"]
    lines.append(f"max_wait_ms = {_toml_value(float(max_wait_ms))}")
    if options:
        lines += ["", "[options]", *(f"{k} = {_toml_value(v)}" for k, v in options.items())]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ModelCase:
    """A seeded model, its checkpoint in the weights dir, and how to serve it."""

    task: str
    architecture: str
    categories: list[str]
    model: nn.Module  # the reference: the same object the checkpoint was saved from
    checkpoint: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.architecture}-ckpt"

    def toml(self, extra_options: dict[str, Any] | None = None, **batching: Any) -> tuple[str, str]:
        """(model name, TOML text) serving the checkpoint."""
        text = model_toml(
            task=self.task,
            architecture=self.architecture,
            checkpoint=self.checkpoint,
            categories=self.categories,
            options={**self.options, **(extra_options or {})},
            **batching,
        )
        return self.name, text


class Checkpoints:
    """Builds each (architecture, seed) once per session and saves its state_dict."""

    def __init__(self, weights_dir: Path) -> None:
        self.weights_dir = weights_dir
        self._cases: dict[tuple[str, int], ModelCase] = {}

    def get(self, architecture: str, seed: int = 0) -> ModelCase:
        key = (architecture, seed)
        if key not in self._cases:
            self._cases[key] = self._build(architecture, seed)
        return self._cases[key]

    def _build(self, architecture: str, seed: int) -> ModelCase:
        task = "instance" if architecture.startswith("maskrcnn") else "semantic"
        categories = INSTANCE_CATEGORIES if task == "instance" else SEMANTIC_CATEGORIES
        options = dict(MASKRCNN_OPTIONS) if task == "instance" else {}
        # A private RNG so that test order never changes the weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = get_model(
                architecture,
                weights=None,
                weights_backbone=None,
                num_classes=len(categories),
                **options,
            )
        calibrate(model, architecture, seed=1000 + seed)
        checkpoint = f"{architecture}-seed{seed}.pth"
        torch.save(model.state_dict(), self.weights_dir / checkpoint)
        return ModelCase(task, architecture, categories, model, checkpoint, options)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def checkpoints(weights_dir: Path) -> Checkpoints:
    return Checkpoints(weights_dir)


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def registry(self) -> ModelRegistry:
        registry = app_state(self.app).registry
        assert registry is not None
        return registry


Serve = Callable[..., AbstractAsyncContextManager[Service]]


@pytest.fixture
def serve(tmp_path: Path, weights_dir: Path) -> Serve:
    """``async with serve(("name", toml_text), ..., seed=...) as service``: the real app.

    The app's own lifespan runs (loading every model of the repository, starting the
    batchers); requests go through ``httpx.ASGITransport``, so they are concurrent on the
    test's event loop.
    """

    repositories = itertools.count()

    @asynccontextmanager
    async def _serve(*models: tuple[str, str], **overrides: Any) -> AsyncIterator[Service]:
        models_dir = tmp_path / f"models{next(repositories)}"
        models_dir.mkdir()
        for name, text in models:
            (models_dir / f"{name}.toml").write_text(text, encoding="utf-8")
        # channels_last and batch-norm folding off: the exact path, compared bit for bit with
        # the reference (the fast path is compared within rounding in test_precision.py).
        fields: dict[str, Any] = {
            "device": "cpu",
            "warmup": False,
            "allow_download": False,
            "channels_last": False,
            "fold_batchnorm": False,
        }
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            models_dir=models_dir,
            weights_dir=weights_dir,
            **(fields | overrides),
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            await wait_until_started(app)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://segserve", timeout=120
            ) as client:
                yield Service(app, client)

    return _serve
