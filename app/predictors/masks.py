"""Mask R-CNN's mask pasting, thresholded and cropped one box at a time.

torchvision's ``paste_masks_in_image`` pastes every detection's 28x28 mask into a full-size
float canvas (N x H x W x 4 bytes: gigabytes for 100 detections on a 12 MP photo). Only the
pixels of each (expanded) box can be non-zero, so we resize each mask exactly as
``paste_mask_in_image`` does, keep just its box's part, threshold it on the device and move
the small boolean crops to the host in one transfer. The values are the same: the
``interpolate`` call and the slicing mirror torchvision's, and a unit test compares both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

Crop = tuple[np.ndarray, tuple[int, int]]  # (h, w) bool and the (x, y) of its top-left pixel
_EMPTY: Crop = (np.zeros((0, 0), dtype=bool), (0, 0))


def _box_region(
    mask: torch.Tensor, box: list[int], height: int, width: int, threshold: float
) -> tuple[torch.Tensor, int, int]:
    """The thresholded part of one pasted mask that lies in its box: (bool region, x0, y0)."""
    bx0, by0, bx1, by1 = box
    # As torchvision's paste_mask_in_image: the box is inclusive, at least 1 px.
    w, h = max(bx1 - bx0 + 1, 1), max(by1 - by0 + 1, 1)
    resized = F.interpolate(
        mask.expand((1, 1, -1, -1)), size=(h, w), mode="bilinear", align_corners=False
    )[0][0]
    x0, x1 = max(bx0, 0), min(bx1 + 1, width)
    y0, y1 = max(by0, 0), min(by1 + 1, height)
    if x1 <= x0 or y1 <= y0:  # the box lies outside the image
        return resized.new_zeros((0, 0), dtype=torch.bool), 0, 0
    return resized[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0] > threshold, x0, y0


def _tight(region: np.ndarray, x0: int, y0: int) -> Crop:
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return _EMPTY
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return region[top:bottom, left:right].copy(), (x0 + int(left), y0 + int(top))


def paste_and_crop(
    masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int, threshold: float
) -> list[Crop]:
    """(N, 1, M, M) mask probabilities and (N, 4) boxes in image pixels -> tight crops of
    ``pasted > threshold``, each with its origin; ``(0, 0)`` crops for empty masks."""
    if masks.shape[0] == 0:
        return []
    padded, scale = expand_masks(masks, padding=1)
    expanded = expand_boxes(boxes, scale).to(dtype=torch.int64).tolist()
    regions = [
        _box_region(m[0], box, height, width, threshold)
        for m, box in zip(padded, expanded, strict=True)
    ]
    flat = torch.cat([r.flatten() for r, _, _ in regions]).cpu().numpy()  # one transfer
    crops, offset = [], 0
    for region, x0, y0 in regions:
        size = region.numel()
        host = flat[offset : offset + size].reshape(region.shape)
        offset += size
        crops.append(_tight(host, x0, y0))
    return crops
