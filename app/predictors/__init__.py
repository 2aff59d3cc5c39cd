"""Build predictors from the model repository."""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.predictors.base import Predictor, build_model, resolve_device
from app.predictors.instance import MAX_INSTANCES, InstanceParams, InstancePredictor
from app.predictors.repository import ModelSpec, load_repository
from app.predictors.semantic import SemanticPredictor
from app.predictors.weights import resolve_weights

__all__ = [
    "MAX_INSTANCES",
    "InstanceParams",
    "InstancePredictor",
    "Predictor",
    "SemanticPredictor",
    "load_predictor",
    "load_repository",
]


def load_predictor(spec: ModelSpec, settings: Settings) -> Predictor[Any]:
    """Resolve weights, build the architecture and move it to the configured device."""
    weights = resolve_weights(spec, settings.weights_dir, allow_download=settings.allow_download)
    model = build_model(spec, weights, seed=settings.seed)
    device = resolve_device(settings.device)
    cls = SemanticPredictor if spec.task == "semantic" else InstancePredictor
    return cls(
        spec,
        model,
        weights,
        device,
        precision=spec.precision or settings.precision,
        channels_last=settings.channels_last if spec.channels_last is None else spec.channels_last,
        fold_batchnorm=(
            settings.fold_batchnorm if spec.fold_batchnorm is None else spec.fold_batchnorm
        ),
    )
