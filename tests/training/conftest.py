"""Fixtures: small generated datasets, made once a session and copied for each test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.training.broken import clean_dataset


@pytest.fixture(scope="session")
def dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shapes-cache")


@pytest.fixture
def make_dataset(dataset_cache: Path, tmp_path: Path) -> Callable[..., Path]:
    """make_dataset("masks" | "coco" | "yolo", train=6, val=2) -> a fresh copy's YAML."""
    count = 0

    def make(fmt: str, *, train: int = 6, val: int = 2) -> Path:
        nonlocal count
        count += 1
        return clean_dataset(dataset_cache, tmp_path / f"ds{count}", fmt, train=train, val=val)

    return make
