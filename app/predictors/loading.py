"""Loading a model: option checks, the device, building the torchvision architecture with its
weights, and the predictor that will run it. Running it is :mod:`app.predictors.base`'s."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.ops.misc import FrozenBatchNorm2d

from app.config import Settings
from app.errors import ConfigError
from app.predictors.base import TorchPredictor
from app.predictors.instance import InstancePredictor
from app.predictors.modules import replace_modules
from app.predictors.repository import ModelSpec
from app.predictors.semantic import SemanticPredictor
from app.predictors.weights import (
    ResolvedWeights,
    resolve_weights,
)

# Builders that, given pretrained weights, build their backbone with FrozenBatchNorm2d
# (see torchvision's maskrcnn_resnet50_fpn). We build untrained and load the state_dict
# ourselves, so we freeze the same layers to match `builder(weights=...)` exactly; a
# checkpoint saved from such a model shows it by lacking `num_batches_tracked` there.
_FROZEN_BN_WHEN_TRAINED = frozenset({"maskrcnn_resnet50_fpn"})


def _has_frozen_backbone(weights: ResolvedWeights) -> bool:
    if weights.source.startswith("torchvision:"):  # the published weights: frozen, always
        return True
    state = weights.state_dict or {}
    return (
        "backbone.body.bn1.weight" in state and "backbone.body.bn1.num_batches_tracked" not in state
    )


def resolve_device(setting: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; an unavailable CUDA device is a config error."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(setting)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"SEGSERVE_DEVICE={setting!r} but CUDA is not available here")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"SEGSERVE_DEVICE={setting!r} but only {torch.cuda.device_count()} CUDA "
            "device(s) are visible"
        )
    # fp32 means fp32: cuDNN would otherwise run convolutions in TF32 (10-bit mantissa),
    # and results would drift from the reference pipeline by far more than rounding.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    # Name the index, so /models says which GPU (`cuda:0`, not `cuda`).
    return torch.device(
        "cuda", device.index if device.index is not None else torch.cuda.current_device()
    )


def _freeze_batch_norm(module: nn.Module) -> None:
    replace_modules(
        module, nn.BatchNorm2d, lambda norm: FrozenBatchNorm2d(norm.num_features, eps=norm.eps)
    )


def _named_parameters(func: Callable[..., Any]) -> set[str]:
    return {
        n
        for n, p in inspect.signature(func).parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"
    }


def check_options(spec: ModelSpec) -> None:
    """Refuse ``[options]`` the architecture does not take (cheap: no model is built)."""
    builder = tv_models.get_model_builder(spec.architecture)
    # torchvision's builders pass **kwargs down to classes that end in a **kwargs sink
    # (segmentation builders, GeneralizedRCNNTransform) and silently ignore unknown names:
    # refuse them here rather than let a typo pass unnoticed.
    accepted = _named_parameters(builder)
    if spec.task == "instance":
        accepted |= _named_parameters(MaskRCNN.__init__) | _named_parameters(FasterRCNN.__init__)
    accepted -= {"weights", "weights_backbone", "num_classes", "progress", "backbone"}
    if unknown := sorted(set(spec.options) - accepted):
        raise ConfigError(
            f"model {spec.name!r}: bad [options] for {spec.architecture}: {', '.join(unknown)} "
            f"(accepted: {', '.join(sorted(accepted))})"
        )


def build_model(spec: ModelSpec, weights: ResolvedWeights, *, seed: int) -> nn.Module:
    """The torchvision architecture of ``spec`` with ``weights`` loaded, in eval mode, on CPU."""
    builder = tv_models.get_model_builder(spec.architecture)
    check_options(spec)
    kwargs: dict[str, Any] = dict(spec.options)
    kwargs.update(weights=None, weights_backbone=None, num_classes=len(weights.categories))
    state = weights.state_dict
    if spec.task == "semantic":
        # Build the auxiliary head only to accept a state_dict that has one; it is dropped below.
        kwargs["aux_loss"] = state is not None and any(
            k.startswith("aux_classifier.") for k in state
        )
    try:
        # A private RNG: untrained models are reproducible without touching global state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model {spec.name!r}: bad [options] for {spec.architecture}: {exc}"
        ) from None
    if spec.architecture in _FROZEN_BN_WHEN_TRAINED and _has_frozen_backbone(weights):
        _freeze_batch_norm(model.backbone.body)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            detail = str(exc)
            if len(detail) > 2000:
                detail = detail[:2000] + " ..."
            raise ConfigError(
                f"model {spec.name!r}: the weights ({weights.source}) do not fit "
                f"{spec.architecture} with {len(weights.categories)} categories: {detail}"
            ) from None
    if spec.task == "semantic":
        model.aux_classifier = None  # serving needs only the main head
    return model.eval()


def load_predictor(spec: ModelSpec, settings: Settings) -> TorchPredictor[Any]:
    """Resolve weights, build the architecture and move it to the configured device."""
    device = resolve_device(settings.device)
    weights = resolve_weights(spec, settings.weights_dir, allow_download=settings.allow_download)
    model = build_model(spec, weights, seed=settings.seed)
    return make_predictor(spec, model, weights, device, settings)


def make_predictor(
    spec: ModelSpec,
    model: nn.Module,
    weights: ResolvedWeights,
    device: torch.device,
    settings: Settings,
) -> TorchPredictor[Any]:
    """The predictor serving ``model`` as ``spec`` and ``settings`` say (precision,
    channels-last, folded batch norms): the service's, and `segserve finetune`'s validation,
    which must measure exactly what will be served."""
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
