"""DeepLabV3 / FCN / LR-ASPP: torchvision's preset transforms, forward, upsample, argmax.

The result equals torchvision's reference pipeline on the same weights::

    batch = weights.transforms()(read_image(path)).unsqueeze(0)
    logits = model(batch)["out"]
    class_map = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False).argmax(1)

All of it runs on the device; only the uint8 class map crosses to the host.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms._presets import SemanticSegmentation

from app.predictors.base import TorchPredictor
from app.results import SemanticResult


class SemanticPredictor(TorchPredictor[SemanticResult]):
    """DeepLabV3, FCN, LR-ASPP: preset transforms, forward, upsample and argmax on the device."""

    task = "semantic"
    cudnn_benchmark = True
    bf16_weights_on_cpu = True

    def _network_shape(self, height: int, width: int) -> tuple[int, int]:
        # The preset resizes the short side to a fixed length, so images of many sizes share
        # a network shape. Run torchvision's own resize on a meta tensor: exact, and free.
        size = self.preprocess.resize_size
        if size is None:
            return (height, width)
        probe = torch.empty((3, height, width), dtype=torch.uint8, device="meta")
        resized = TF.resize(
            probe,
            size,
            interpolation=self.preprocess.interpolation,
            antialias=self.preprocess.antialias,
        )
        return int(resized.shape[-2]), int(resized.shape[-1])

    def default_params(self) -> Any:
        return None

    @functools.cached_property
    def window_preprocess(self) -> SemanticSegmentation:
        """The preset's normalisation without its resize: tiles are seen at their own size."""
        preset = self.preprocess
        return SemanticSegmentation(resize_size=None, mean=preset.mean, std=preset.std)

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's ``out`` logits for a normalised batch, in fp32, at the input's size."""
        batch = batch.to(self.compute_dtype)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with self.forward_context():
            # Whatever the forward ran in, what follows (upsampling, argmax, stitching) runs
            # in fp32 (the network's own upsampling inside it runs in bf16 when the weights
            # are cast, and in fp32 under autocast).
            return self.model(batch)["out"].float()

    @torch.inference_mode()
    def predict_windows(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per window of a tiled request, its (classes, h, w) float32 logits on the host."""
        batch = torch.stack([self.window_preprocess(self.to_tensor(w)) for w in windows])
        return list(self._class_plane_logits(batch).cpu().numpy())

    def _class_plane_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """``_logits`` laid out as contiguous class planes, the layout the stitcher sums.

        A channels-last network returns channels-last logits, and reordering them afterwards
        copies the full-size logits (about a fifth of a 512-pixel window's forward on a
        2-core CPU). The classifier's output is far smaller (before the model's own upsampling
        to the input's size), so it is reordered there, and the upsampling writes the planes.
        """
        head = getattr(self.model, "classifier", None)
        hook = (
            head.register_forward_hook(lambda _module, _input, out: out.contiguous())
            if self.channels_last and isinstance(head, torch.nn.Module)
            else None
        )
        try:
            return self._logits(batch).contiguous()  # a no-op when the hook took effect
        finally:
            if hook is not None:
                hook.remove()

    @torch.inference_mode()
    def predict_batch(
        self, images: Sequence[np.ndarray], params: Sequence[Any]
    ) -> list[SemanticResult]:
        batch = torch.stack([self.preprocess(self.to_tensor(image)) for image in images])
        logits = self._logits(batch)
        maps = []
        for i, image in enumerate(images):
            # Each image is upsampled to its own size: images of one batch share the network
            # shape, not necessarily the input size.
            upsampled = F.interpolate(
                logits[i : i + 1], size=image.shape[:2], mode="bilinear", align_corners=False
            )
            maps.append(upsampled.argmax(1)[0].to(torch.uint8))
        return [SemanticResult(class_map=m.cpu().numpy()) for m in maps]
