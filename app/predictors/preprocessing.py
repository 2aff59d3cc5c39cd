"""A model's preprocessing, from its model file: one source for serving, evaluation and
fine-tuning's validation (they all call :func:`model_preprocess`)."""

from __future__ import annotations

from typing import Any

from torchvision import models as tv_models
from torchvision.transforms._presets import SemanticSegmentation

from app.predictors.repository import ModelSpec


def model_preprocess(spec: ModelSpec) -> Any:
    """The architecture's published transforms, with the model file's ``[preprocessing]``.

    Mean and std always stay the preset's: a fine-tuned model keeps its backbone's
    normalisation; only the resize is the model's own (a model trained on 256-pixel images
    is served at 256).
    """
    preset = tv_models.get_model_weights(spec.architecture).DEFAULT.transforms()
    resize = spec.preprocessing.resize
    if spec.task != "semantic" or resize is None:
        return preset
    return SemanticSegmentation(
        resize_size=resize,
        mean=preset.mean,
        std=preset.std,
        interpolation=preset.interpolation,
        antialias=preset.antialias,
    )


def resize_of(spec: ModelSpec) -> int | None:
    """The short side a semantic model's images are resized to (None: native size)."""
    if spec.task != "semantic":
        return None
    size = model_preprocess(spec).resize_size  # a list of one, or None
    return None if size is None else int(size[0])
