"""Make docs/images/overlay.png: the `format=overlay` output of POST /segment on a generated image.

No model runs here, so the picture is reproducible on a machine without weights. A small
generator draws a scene of shaded shapes on a sky-and-ground background and, from the same
shapes, its true class map (0 = background, then one class id per kind of shape). The
service's own overlay encoder, `app.output.overlay.semantic_overlay` (what `format=overlay`
returns), blends that class map over the image and writes the PNG, as it does with a model's
class map.

    .venv/bin/python docs/images/make_overlay.py     # from the repository root
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from app.output.overlay import semantic_overlay

WIDTH, HEIGHT = 480, 320
OUT = Path(__file__).with_name("overlay.png")

# The generator's class ids (their palette colours: 1 maroon, 2 green, 3 olive, 4 navy).
SUN, HOUSE, TREE, BALL = 1, 2, 3, 4


def _background() -> np.ndarray:
    """Sky above the horizon, ground below, each a vertical gradient; float32 (H, W, 3)."""
    y = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    sky = (1 - y) * np.array([150, 190, 235], np.float32) + y * np.array([220, 230, 240])
    ground = (1 - y) * np.array([120, 160, 90], np.float32) + y * np.array([80, 110, 60])
    below = np.arange(HEIGHT)[:, None, None] >= int(HEIGHT * 0.62)
    return np.broadcast_to(np.where(below, ground, sky), (HEIGHT, WIDTH, 3)).astype(np.float32)


def _shapes() -> list[tuple[int, tuple[int, int, int], np.ndarray]]:
    """(class id, base colour, mask) of every shape, drawn in this order."""
    masks = {label: np.zeros((HEIGHT, WIDTH), np.uint8) for label in (SUN, HOUSE, TREE, BALL)}
    cv2.circle(masks[SUN], (395, 62), 38, 1, -1)
    cv2.rectangle(masks[HOUSE], (70, 140), (210, 250), 1, -1)  # wall
    cv2.fillPoly(masks[HOUSE], [np.array([[55, 142], [140, 80], [225, 142]], np.int32)], 1)
    cv2.rectangle(masks[HOUSE], (95, 165), (135, 200), 0, -1)  # a window: a hole, background
    cv2.ellipse(masks[TREE], (300, 165), (42, 60), 0, 0, 360, 1, -1)  # crown
    cv2.rectangle(masks[TREE], (293, 220), (307, 262), 1, -1)  # trunk
    cv2.circle(masks[BALL], (395, 262), 26, 1, -1)
    colours = {SUN: (250, 200, 60), HOUSE: (190, 120, 90), TREE: (60, 130, 60), BALL: (70, 90, 200)}
    return [(label, colours[label], mask.astype(bool)) for label, mask in masks.items()]


def _texture(labels: np.ndarray) -> np.ndarray:
    """Darker lines (grass, bricks, roof tiles, leaves, a ball's seam), each inside its own
    region, as a (H, W) float32 brightness factor: the blend then shows the picture through
    the class colours."""
    layers = {label: np.zeros((HEIGHT, WIDTH), np.uint8) for label in (0, HOUSE, TREE, BALL)}
    for y in range(206, HEIGHT, 12):  # grass
        cv2.line(layers[0], (0, y), (WIDTH - 1, y), 1, 1)
    for row, y in enumerate(range(140, 251, 10)):  # bricks
        cv2.line(layers[HOUSE], (70, y), (210, y), 1, 1)
        for x in range(70 + 10 * (row % 2), 211, 20):
            cv2.line(layers[HOUSE], (x, y), (x, min(y + 10, 250)), 1, 1)
    for y in range(92, 140, 8):  # roof tiles
        cv2.line(layers[HOUSE], (40, y), (240, y), 1, 1)
    rng = np.random.default_rng(0)  # leaves
    for x, y in zip(rng.integers(262, 339, 70), rng.integers(112, 218, 70), strict=True):
        cv2.circle(layers[TREE], (int(x), int(y)), 3, 1, 1)
    cv2.ellipse(layers[BALL], (395, 262), (26, 10), 0, 0, 360, 1, 2)  # the ball's seam
    cv2.ellipse(layers[BALL], (395, 262), (10, 26), 0, 0, 360, 1, 2)
    dark = np.zeros((HEIGHT, WIDTH), bool)
    for label, layer in layers.items():
        dark |= layer.astype(bool) & (labels == label)
    return np.where(dark, np.float32(0.7), np.float32(1.0))


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A (H, W, 3) uint8 RGB image and its true (H, W) uint8 class map."""
    image = _background()
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    # Lit from the left: every shape fades from brighter to darker across the picture.
    light = np.linspace(1.35, 0.65, WIDTH, dtype=np.float32)[None, :, None]
    for label, colour, mask in _shapes():
        lit = np.clip(np.array(colour, np.float32) * light, 0, 255)
        image[mask] = np.broadcast_to(lit, image.shape)[mask]
        labels[mask] = label
    image *= _texture(labels)[:, :, None]
    image[165:201, 95:136] = (235, 240, 250)  # the window's pane, seen through the hole
    return np.ascontiguousarray(image.astype(np.uint8)), labels


def main() -> None:
    image, class_map = scene()
    OUT.write_bytes(semantic_overlay(image, class_map, compress_level=9))
    print(f"{OUT}: {WIDTH}x{HEIGHT}, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
