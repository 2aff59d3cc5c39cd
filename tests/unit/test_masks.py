"""Box-at-a-time mask pasting equals torchvision's paste_masks_in_image, thresholded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops.boxes import clip_boxes_to_image

from app.predictors.masks import paste_and_crop
from app.results import Instance


def random_boxes(rng: np.random.Generator, n: int, height: int, width: int) -> torch.Tensor:
    """Boxes as Mask R-CNN gives them (clipped to the image): large, thin, sub-pixel, and on
    the borders, where the expanded paste box reaches outside the image."""
    x0 = rng.uniform(-0.3 * width, 1.1 * width, n)
    y0 = rng.uniform(-0.3 * height, 1.1 * height, n)
    w = rng.choice([0.2, 1.0, 3.0, 20.0, 0.6 * width], n) * rng.uniform(0.5, 1.5, n)
    h = rng.choice([0.2, 1.0, 3.0, 20.0, 0.6 * height], n) * rng.uniform(0.5, 1.5, n)
    boxes = torch.tensor(np.stack([x0, y0, x0 + w, y0 + h], axis=1), dtype=torch.float32)
    return clip_boxes_to_image(boxes, (height, width))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.0, 0.35, 0.5, 0.9])
def test_crops_equal_torchvisions_full_canvas(seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(20, 90)), int(rng.integers(20, 90))
    n = 25
    masks = torch.from_numpy(rng.random((n, 1, 28, 28), dtype=np.float32))
    boxes = random_boxes(rng, n, height, width)
    reference = paste_masks_in_image(masks, boxes, (height, width))[:, 0] > threshold
    crops = paste_and_crop(masks, boxes, height, width, threshold)
    assert len(crops) == n
    for k, (crop, origin) in enumerate(crops):
        instance = Instance(class_id=1, score=1.0, box=(0, 0, 0, 0), mask=crop, origin=origin)
        np.testing.assert_array_equal(instance.full_mask(height, width), reference[k].numpy())
        if crop.size:  # crops are tight: every edge row and column holds a pixel
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
    assert any(c.size for c, _ in crops) and any(not c.size for c, _ in crops)


def test_no_detections() -> None:
    empty = torch.zeros((0, 1, 28, 28))
    assert paste_and_crop(empty, torch.zeros((0, 4)), 10, 10, 0.5) == []
