"""What a predictor hands back for one image: small, CPU-side, numpy-based.

Predictors reduce everything on the device first (argmax, thresholding, cropping), so only
uint8 class maps and boolean mask crops cross to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SemanticResult:
    """The class map of one image."""

    class_map: np.ndarray  # (H, W) uint8, class index per pixel, in the input's frame


@dataclass(frozen=True)
class Instance:
    """One detected object: class, score, box and its mask crop."""

    class_id: int
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the input
    # The thresholded mask cropped to its tight bounding box (empty masks: shape (0, 0));
    # `origin` is the (x, y) of the crop's top-left pixel in the full image.
    mask: np.ndarray  # (h, w) bool
    origin: tuple[int, int]

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def full_mask(self, height: int, width: int) -> np.ndarray:
        """The mask pasted into a (height, width) bool array."""
        full = np.zeros((height, width), dtype=bool)
        x, y = self.origin
        h, w = self.mask.shape
        full[y : y + h, x : x + w] = self.mask
        return full


@dataclass(frozen=True)
class InstanceResult:
    """The instances of one image, highest score first, with the image's size."""

    height: int
    width: int
    instances: list[Instance]  # sorted by score, highest first
