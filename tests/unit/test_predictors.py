"""Predictor shapes: what the network sees, and images it cannot take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.config import Settings
from app.errors import ConfigError, ImageUnprocessable
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


def _lraspp(**fields: Any) -> ModelSpec:
    return ModelSpec(
        name="p",
        task="semantic",
        architecture="lraspp_mobilenet_v3_large",
        weights="none",
        **fields,
    )


def test_fp16_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        load_predictor(_lraspp(precision="fp16"), SETTINGS)


def test_a_models_precision_and_layout_override_the_settings() -> None:
    settings = SETTINGS.model_copy(update={"precision": "bf16", "channels_last": True})
    inherited = load_predictor(_lraspp(), settings)
    assert (inherited.precision, inherited.channels_last) == ("bf16", True)
    conv = inherited.model.backbone["0"][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    own = load_predictor(_lraspp(precision="fp32", channels_last=False), settings)
    assert (own.precision, own.channels_last) == ("fp32", False)
    assert own.model.backbone["0"][0].weight.is_contiguous()
    assert own.describe()["precision"] == "fp32"


def test_bf16_semantic_result_is_a_uint8_map_of_the_input_size() -> None:
    predictor = load_predictor(_lraspp(precision="bf16"), SETTINGS)
    image = np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    (result,) = predictor.predict_batch([image], [None])
    assert result.class_map.shape == (50, 70) and result.class_map.dtype == np.uint8
    # On CPU a semantic model runs bf16 as bf16 weights (no autocast casts around fp32 ops).
    assert predictor.describe()["precision_mode"] == "cast"
    assert {p.dtype for p in predictor.model.parameters()} == {torch.bfloat16}


def test_bf16_instance_model_keeps_fp32_weights_under_autocast(instance) -> None:  # type: ignore[no-untyped-def]
    # Boxes need fp32 coordinates: Mask R-CNN runs bf16 through autocast only.
    spec = instance.spec.model_copy(update={"precision": "bf16"})
    predictor = load_predictor(spec, SETTINGS)
    assert predictor.describe()["precision_mode"] == "autocast"
    assert {p.dtype for p in predictor.model.parameters()} == {torch.float32}
    assert instance.describe()["precision_mode"] == "full"
