"""What every predictor shares: the device, building a torchvision model, the interface.

A predictor is used from ONE inference thread (its batcher's), so it may keep per-batch state
on its model (Mask R-CNN thresholds) without locks.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.ops.misc import FrozenBatchNorm2d

from app.config import Precision
from app.errors import ConfigError, ImageUnprocessable
from app.predictors.bf16 import cast_to_bf16
from app.predictors.fusion import fold_batchnorm as fold_batchnorm_into_convs
from app.predictors.modules import replace_modules
from app.predictors.repository import ModelSpec
from app.predictors.weights import ResolvedWeights

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")

# Builders that, given pretrained weights, build their backbone with FrozenBatchNorm2d
# (see torchvision's maskrcnn_resnet50_fpn). We build untrained and load the state_dict
# ourselves, so we freeze the same layers to match `builder(weights=...)` exactly; a
# checkpoint saved from such a model shows it by lacking `num_batches_tracked` there.
_FROZEN_BN_WHEN_TRAINED = frozenset({"maskrcnn_resnet50_fpn"})


def _has_frozen_backbone(weights: ResolvedWeights) -> bool:
    if weights.source.startswith("torchvision:"):
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


AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: Precision, device: torch.device) -> None:
    """Refuse a precision the device cannot run fast (a config error at startup)."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            "precision fp16 needs a CUDA device (CPU kernels for half floats are slow or "
            "missing); use bf16 on CPU"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision bf16: {device} does not support bfloat16; use fp16")


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


class Predictor(ABC, Generic[ResultT]):
    """A model on its device: groups images by input shape and runs batches of one group."""

    task: str

    # cuDNN's autotuner pays off when input shapes repeat (semantic presets resize to a few
    # shapes); Mask R-CNN sees a new shape per aspect ratio and would re-tune each time.
    cudnn_benchmark = False

    # Whether bf16 on CPU may run as bf16 weights and inputs instead of autocast (faster: see
    # app/predictors/bf16.py). Only networks without coordinates to keep exact (no boxes) opt in.
    bf16_weights_on_cpu = False

    def __init__(
        self,
        spec: ModelSpec,
        model: nn.Module,
        weights: ResolvedWeights,
        device: torch.device,
        *,
        precision: Precision = "fp32",
        channels_last: bool = False,
        fold_batchnorm: bool = False,
    ) -> None:
        check_precision(precision, device)
        self.spec = spec
        self.name = spec.name
        self.categories = weights.categories
        self.source = weights.source
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.fold_batchnorm = fold_batchnorm
        if fold_batchnorm:
            folded = fold_batchnorm_into_convs(model)
            log.debug("model %r: %d batch norms folded into convolutions", spec.name, folded)
        self.model = model.to(device)
        # The dtype the network's weights and inputs are in (autocast leaves them fp32), and
        # how the precision is reached: `full` (fp32), `autocast` or `cast` (/models says).
        self.compute_dtype = torch.float32
        self.precision_mode = "full" if precision == "fp32" else "autocast"
        if precision == "bf16" and device.type == "cpu" and self.bf16_weights_on_cpu:
            # After folding: the folded weights are computed in fp32, then rounded once.
            self.compute_dtype = torch.bfloat16
            self.precision_mode = "cast"
            self.model = cast_to_bf16(self.model)
        if channels_last:
            # NHWC convolutions: oneDNN on CPU and cuDNN on GPU run them faster. The values
            # differ from NCHW by float rounding only (summation order).
            self.model = self.model.to(memory_format=torch.channels_last)
        # Every model uses its architecture's published preprocessing, trained or not.
        self.preprocess = tv_models.get_model_weights(spec.architecture).DEFAULT.transforms()

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 numpy -> (3, H, W) uint8 tensor on the device (as read_image gives)."""
        return (
            torch.from_numpy(image).to(self.device, non_blocking=True).permute(2, 0, 1).contiguous()
        )

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        """Where the model runs: autocast for reduced precisions (unless the weights were cast
        to the reduced dtype themselves), cuDNN tuned per model.

        ``cudnn.benchmark`` is process-wide; each model's thread sets it before its own
        forward. Two models on one GPU may run under each other's choice at worst, which
        changes only the algorithm picked, not what it computes beyond rounding.
        """
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        dtype = AUTOCAST_DTYPES.get(self.precision)
        if dtype is None or self.precision_mode != "autocast":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def network_shape(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the network sees for an input of this size.

        Images with equal shapes may share a batch: each then sees exactly what it would alone.
        An image the preprocessing cannot resize (a side rounds to 0 pixels) is refused here,
        before it is queued.
        """
        try:
            shape = self._network_shape(height, width)
        except (ArithmeticError, RuntimeError, ValueError):
            shape = (0, 0)
        if min(shape) < 1:
            raise ImageUnprocessable(
                f"an image of {width}x{height} pixels is too thin for model {self.name!r}: "
                "its resize leaves a side of 0 pixels"
            )
        return shape

    @abstractmethod
    def _network_shape(self, height: int, width: int) -> tuple[int, int]:
        """The shape from the architecture's own preprocessing (may raise on degenerate sizes)."""

    @abstractmethod
    def predict_batch(self, images: Sequence[np.ndarray], params: Sequence[Any]) -> list[ResultT]:
        """Run one batch of images with equal shape keys; one result per image."""

    @abstractmethod
    def default_params(self) -> Any:
        """Request parameters used for warm-up."""

    def warmup(self, height: int = 480, width: int = 640) -> None:
        """One inference so that lazy initialisation happens before the first request."""
        image = np.zeros((height, width, 3), dtype=np.uint8)
        self.predict_batch([image], [self.default_params()])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.spec.task,
            "architecture": self.spec.architecture,
            "categories": self.categories,
            "device": str(self.device),
            "precision": self.precision,
            "precision_mode": self.precision_mode,
            "channels_last": self.channels_last,
            "fold_batchnorm": self.fold_batchnorm,
            "weights": self.source,
            "default": self.spec.default,
        }
