"""What the serving layer needs of a predictor, whatever runs behind it.

:class:`app.predictors.base.TorchPredictor` is the implementation; tests serve fakes that
satisfy the same protocol structurally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from app.predictors.repository import ModelSpec

ResultT = TypeVar("ResultT")


class Predictor(Protocol[ResultT]):
    """A model on its device, run from one inference thread, a batch of one shape at a time."""

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def name(self) -> str: ...

    @property
    def categories(self) -> list[str]: ...

    @property
    def source(self) -> str:
        """Where the parameters came from (``torchvision:...``, ``checkpoint:...``, ...)."""
        ...

    @property
    def device(self) -> torch.device | str: ...

    def network_shape(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the network sees for an input of this size: the batch key."""
        ...

    def predict_batch(self, images: Sequence[np.ndarray], params: Sequence[Any]) -> list[ResultT]:
        """One result per image; every image has the same network shape."""
        ...

    def predict_windows(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Semantic models: each tile window's (classes, h, w) float32 logits, at the window's
        own size (docs/api.md, "Tiling"). Other models raise NotImplementedError."""
        ...

    def default_params(self) -> Any:
        """Request parameters used for warm-up and batch-size tuning."""
        ...

    def warmup(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """The model's entry in GET /models (without its batching)."""
        ...
