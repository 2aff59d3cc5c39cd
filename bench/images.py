"""Deterministic photo-like test images.

A flat or pure-noise image is a poor benchmark input: JPEG sizes, decode cost and (for trained
models) the number of detections differ from a photo's. This one has what a photo has at
the scales that matter: a sky-to-ground gradient, smooth low-frequency shading, a few solid
objects with soft edges and texture, and sensor-like noise. The same seed gives the same bytes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An (height, width, 3) uint8 RGB image, a function of its arguments only."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    sky = np.array([110.0, 160.0, 225.0])
    ground = np.array([95.0, 120.0, 60.0])
    horizon = rng.uniform(0.35, 0.6)
    image = np.where(y < horizon, sky + (y / horizon) * 30, ground * (0.7 + 0.5 * y))
    image = np.broadcast_to(image, (height, width, 3)).copy()
    # Low-frequency shading: coarse noise upsampled smoothly (like uneven light).
    coarse = rng.normal(0.0, 18.0, (4, 6, 3)).astype(np.float32)
    shading = np.stack(
        [
            np.asarray(
                Image.fromarray(coarse[..., c]).resize((width, height), Image.Resampling.BICUBIC)
            )
            for c in range(3)
        ],
        axis=-1,
    )
    image += shading
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(6):
        cy = rng.uniform(horizon * height, height)
        cx = rng.uniform(0, width)
        ry = rng.uniform(0.05, 0.25) * height
        rx = rng.uniform(0.05, 0.2) * width
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        else:
            inside = (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
        colour = rng.uniform(20, 235, 3)
        texture = rng.normal(0.0, 10.0, (height, width, 1))
        image[inside] = (colour + texture[inside]).clip(0, 255)
    image += rng.normal(0.0, 4.0, image.shape)  # sensor noise
    pil = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    # Soft edges, as a lens gives; also keeps JPEG sizes photo-like.
    return np.asarray(pil.filter(ImageFilter.GaussianBlur(0.8)))


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
