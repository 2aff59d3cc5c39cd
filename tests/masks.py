"""Random and structured masks for tests of polygons and RLE."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np


def nested_rings(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Concentric square rings (three or more nesting levels), some with gaps or pinches."""
    mask = np.zeros((h, w), dtype=bool)
    for k in range(0, min(h, w) // 2, 2):
        mask[k : h - k, k : w - k] = True
        mask[k + 1 : h - k - 1, k + 1 : w - k - 1] = False
    flips = rng.random((h, w)) < rng.uniform(0.0, 0.08)
    return mask ^ flips


def random_masks(seed: int, count: int) -> Iterator[np.ndarray]:
    """Small masks of many kinds: noise, blobs with holes and islands, sparse pixels, nested
    rings, checkerboards, full and empty masks; most touch the image border somewhere."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        h, w = (int(v) for v in rng.integers(1, 25, size=2))
        kind = rng.integers(0, 8)
        if kind == 0:  # salt-and-pepper: diagonal contacts, single pixels, pinched holes
            yield rng.random((h, w)) < rng.uniform(0.1, 0.9)
        elif kind == 1:  # smooth blobs, often with holes and islands
            noise = (rng.random((h, w)) < 0.5).astype(np.float32)
            yield cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.6, 2.0)) > 0.5
        elif kind == 2:  # dense: many small holes, diagonal-touching holes, all borders
            yield rng.random((h, w)) < 0.8
        elif kind == 3:  # sparse: isolated pixels and short diagonal chains
            yield rng.random((h, w)) < 0.15
        elif kind == 4:  # rings in rings in rings
            yield nested_rings(rng, max(h, 7), max(w, 7))
        elif kind == 5:  # checkerboards of 1-3 px cells, a few cells flipped
            cell = int(rng.integers(1, 4))
            yy, xx = np.mgrid[:h, :w]
            board = ((yy // cell + xx // cell) % 2) == 0
            yield board ^ (rng.random((h, w)) < 0.1)
        elif kind == 6:  # full with a few holes, or empty with a few pixels
            full = rng.random() < 0.5
            yield (rng.random((h, w)) < 0.05) ^ full
        else:  # 2x upscaled noise: 2-px-wide parts and holes, pinched at corners
            small = rng.random(((h + 1) // 2, (w + 1) // 2)) < rng.uniform(0.3, 0.8)
            yield np.kron(small, np.ones((2, 2), dtype=bool))[:h, :w]
