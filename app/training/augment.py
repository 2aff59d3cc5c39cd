"""Training-time augmentation, as torchvision's reference recipes do it.

Semantic (references/segmentation ``SegmentationPresetTrain``): resize the short side to a
random size in [0.5, 2] x the base size, flip horizontally with probability 0.5, pad with
the ignore index to the crop size, crop at random, normalise with the preset's mean/std.
Instance (references/detection ``DetectionPresetTrain``, "hflip"): flip with probability 0.5;
Mask R-CNN's own transform resizes and normalises.

All randomness comes from torch's global generator: in DataLoader workers it is seeded per
worker from the loader's generator, so a seeded run draws the same augmentations again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from app.training.datasets import IGNORE_INDEX

IGNORE = IGNORE_INDEX  # mask value excluded from loss and metrics


def _uniform_int(low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,)).item())


def _flip() -> bool:
    return bool(torch.rand(1).item() < 0.5)


def semantic_train(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    base_size: int,
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) uint8 + (H, W) uint8 -> normalised (3, c, c) float, (c, c) int64 target."""
    img = torch.from_numpy(image).permute(2, 0, 1)
    target = torch.from_numpy(mask)[None]
    size = _uniform_int(base_size // 2, base_size * 2)
    img = TF.resize(img, [size], antialias=True)
    target = TF.resize(target, [size], interpolation=InterpolationMode.NEAREST)
    if _flip():
        img, target = img.flip(-1), target.flip(-1)
    img, target = _pad_to(img, crop_size, 0), _pad_to(target, crop_size, IGNORE)
    top = _uniform_int(0, img.shape[-2] - crop_size)
    left = _uniform_int(0, img.shape[-1] - crop_size)
    img = img[:, top : top + crop_size, left : left + crop_size]
    target = target[:, top : top + crop_size, left : left + crop_size]
    normalised = TF.normalize(img.float() / 255.0, list(mean), list(std))
    return normalised, target[0].long()


def _pad_to(tensor: torch.Tensor, size: int, fill: int) -> torch.Tensor:
    """Pad bottom and right to at least ``size`` a side (the reference's pad_if_smaller)."""
    pad_h = max(size - tensor.shape[-2], 0)
    pad_w = max(size - tensor.shape[-1], 0)
    if not pad_h and not pad_w:
        return tensor
    return F.pad(tensor, (0, pad_w, 0, pad_h), value=fill)


def instance_train(
    image: np.ndarray, boxes: np.ndarray, masks: np.ndarray, *, flip: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(H, W, 3) uint8, (N, 4) boxes, (N, H, W) masks -> float image in [0, 1], boxes, masks."""
    img = torch.from_numpy(image).permute(2, 0, 1)
    box = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    mask = torch.from_numpy(masks)
    if flip if flip is not None else _flip():
        width = img.shape[-1]
        img, mask = img.flip(-1), mask.flip(-1)
        box = torch.stack([width - box[:, 2], box[:, 1], width - box[:, 0], box[:, 3]], dim=1)
    # The detection preset's only step (ObjectDetection: uint8 -> float in [0, 1]).
    return TF.convert_image_dtype(img, torch.float32), box, mask
