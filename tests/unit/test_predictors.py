"""Predictor shapes: what the network sees, and images it cannot take."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings
from app.errors import ImageUnprocessable
from app.predictors import load_predictor
from app.predictors.repository import ModelSpec

SETTINGS = Settings(_env_file=None, device="cpu", weights_dir=Path("unused"))  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def semantic():  # type: ignore[no-untyped-def]
    spec = ModelSpec(
        name="s", task="semantic", architecture="lraspp_mobilenet_v3_large", weights="none"
    )
    return load_predictor(spec, SETTINGS)


@pytest.fixture(scope="module")
def instance():  # type: ignore[no-untyped-def]
    spec = ModelSpec(
        name="i",
        task="instance",
        architecture="maskrcnn_resnet50_fpn_v2",
        weights="none",
        options={"min_size": 160, "max_size": 256},
    )
    return load_predictor(spec, SETTINGS)


def test_semantic_shape_is_the_presets_short_side_resize(semantic) -> None:  # type: ignore[no-untyped-def]
    assert semantic.network_shape(480, 640) == (520, 693)
    assert semantic.network_shape(960, 1280) == (520, 693)  # same shape: may share a batch
    assert semantic.network_shape(640, 480) == (693, 520)
    assert semantic.network_shape(1, 300) == (520, 156000)  # the service caps this (413)


def test_instance_shape_is_resized_and_padded_to_32(instance) -> None:  # type: ignore[no-untyped-def]
    assert instance.network_shape(120, 160) == (160, 224)  # 160x213 padded
    assert instance.network_shape(240, 320) == (160, 224)
    assert instance.network_shape(160, 160) == (160, 160)


@pytest.mark.parametrize("size", [(1, 300), (2, 9000), (9000, 2)])
def test_too_thin_for_the_resize_is_unprocessable(instance, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageUnprocessable, match=f"{size[1]}x{size[0]}"):
        instance.network_shape(*size)
