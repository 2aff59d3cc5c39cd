"""Running a torchvision model on its device: what the semantic and instance predictors share.

Building and loading it is :mod:`app.predictors.loading`'s. A predictor is used from ONE
inference thread (its batcher's), so it may keep per-batch state on its model (Mask R-CNN
thresholds) without locks.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch import nn

from app.config import Precision
from app.errors import ConfigError, ImageUnprocessable
from app.predictors.bf16 import cast_to_bf16
from app.predictors.fusion import fold_batchnorm as fold_batchnorm_into_convs
from app.predictors.preprocessing import model_preprocess, resize_of
from app.predictors.repository import ModelSpec
from app.predictors.weights import ResolvedWeights

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")

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


class TorchPredictor(ABC, Generic[ResultT]):
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
        # The architecture's published preprocessing, with the model file's [preprocessing].
        self.preprocess = model_preprocess(spec)

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

    def predict_windows(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Window logits of a tiled request: semantic models only (instances tile through
        ``predict_batch``, the detector resizing each window as it would an image)."""
        raise NotImplementedError(f"model {self.name!r} gives no window logits")

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
            "resize": resize_of(self.spec),
        }
