"""Unit tests for app.output: mask PNGs, RLE and overlays."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from pycocotools import mask as coco_mask
from torchvision.utils import draw_segmentation_masks

from app.output.maps import class_map_to_png, instance_map, instance_map_to_png
from app.output.overlay import instance_overlay, semantic_overlay
from app.output.palette import palette
from app.output.rle import instance_rle, mask_to_rle
from app.results import Instance, InstanceResult
from tests.masks import random_masks


def _decode(data: bytes) -> PngImagePlugin.PngImageFile:
    image = Image.open(io.BytesIO(data))
    assert isinstance(image, PngImagePlugin.PngImageFile)
    image.load()
    return image


# -------------------------------------------------------------------------------- PNGs


def test_palette_is_voc_and_distinct() -> None:
    colours = palette()
    assert len(colours) == 768
    assert all(type(v) is int and 0 <= v <= 255 for v in colours)
    triples = [tuple(colours[i : i + 3]) for i in range(0, 768, 3)]
    assert triples[0] == (0, 0, 0)
    assert triples[1] == (128, 0, 0)
    assert triples[15] == (192, 128, 128)  # VOC "person"
    assert len(set(triples)) == 256
    colours[0] = 99  # callers get a copy
    assert palette()[0] == 0


def test_class_map_png_round_trip() -> None:
    rng = np.random.default_rng(4)
    class_map = rng.integers(0, 256, size=(37, 53), dtype=np.uint8)
    image = _decode(class_map_to_png(class_map))
    assert image.mode == "P"
    assert image.size == (53, 37)
    np.testing.assert_array_equal(np.asarray(image), class_map)
    stored = image.getpalette()
    assert stored is not None
    assert stored[:768] == palette()
    with pytest.raises(ValueError, match="uint8"):
        class_map_to_png(class_map.astype(np.int32))


def _instance(class_id: int, score: float, mask: np.ndarray, origin: tuple[int, int]) -> Instance:
    x, y = origin
    h, w = mask.shape
    return Instance(class_id, score, (x, y, x + w - 1, y + h - 1), mask, origin)


def test_instance_map_earlier_instance_wins_overlaps() -> None:
    first = _instance(3, 0.9, np.ones((4, 4), dtype=bool), (2, 1))
    ring = np.ones((5, 6), dtype=bool)
    ring[1:4, 1:5] = False
    second = _instance(5, 0.8, ring, (0, 0))
    empty = _instance(7, 0.7, np.zeros((0, 0), dtype=bool), (0, 0))
    ids = instance_map(InstanceResult(8, 9, [first, second, empty]))
    assert ids.dtype == np.uint8
    assert ids.shape == (8, 9)
    expected = np.zeros((8, 9), dtype=np.uint8)
    expected[0:5, 0:6][ring] = 2
    expected[1:5, 2:6] = 1  # overlaps the ring, and wins
    np.testing.assert_array_equal(ids, expected)


def test_instance_png_8_bit_with_text() -> None:
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 256, size=(20, 30), dtype=np.uint8)
    text = '[{"label": "chien", "score": 0.97}, {"label": "Öl ∑"}]'
    image = _decode(instance_map_to_png(ids, text))
    assert image.mode == "L"
    assert image.size == (30, 20)
    np.testing.assert_array_equal(np.asarray(image), ids)
    assert image.text["instances"] == text


def test_instance_png_16_bit_with_many_instances() -> None:
    h, w, count = 30, 40, 300
    instances = [
        _instance(1, 1.0 - k / 1000, np.ones((1, 1), dtype=bool), (k % w, k // w))
        for k in range(count)
    ]
    ids = instance_map(InstanceResult(h, w, instances))
    assert ids.dtype == np.uint16
    assert int(ids.max()) == count
    text = "x" * 5000  # long enough to be compressed
    image = _decode(instance_map_to_png(ids, text))
    assert image.mode == "I;16"
    assert image.size == (w, h)
    np.testing.assert_array_equal(np.asarray(image).astype(np.uint16), ids)
    assert image.text["instances"] == text


# --------------------------------------------------------------------------------- RLE


# pycocotools' decode trips a NumPy 2 copy-keyword deprecation inside its Cython code.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_mask_rle_round_trip() -> None:
    for mask in random_masks(seed=6, count=60):
        rle = mask_to_rle(mask)
        assert rle["size"] == list(mask.shape)
        assert isinstance(rle["counts"], str)
        coco = {"size": rle["size"], "counts": rle["counts"].encode()}
        np.testing.assert_array_equal(coco_mask.decode(coco).astype(bool), mask)
        assert int(coco_mask.area(coco)) == int(mask.sum())


def test_instance_rle_equals_full_mask_rle() -> None:
    rng = np.random.default_rng(7)
    h, w = 13, 11
    crops = [np.zeros((0, 0), dtype=bool), np.ones((h, w), dtype=bool)]
    origins = [(0, 0), (0, 0)]
    for _ in range(150):
        ch, cw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        # Full-height crops often make a run continue from one column into the next.
        crops.append(rng.random((ch, cw)) < rng.uniform(0.2, 1.0))
        origins.append((int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))))
    for crop, origin in zip(crops, origins, strict=True):
        instance = _instance(1, 0.5, crop, origin)
        expected = mask_to_rle(instance.full_mask(h, w))
        assert instance_rle(instance, h, w) == expected


# ---------------------------------------------------------------------------- overlays


def _blend(pixel: np.ndarray, colour: tuple[int, ...], alpha: float) -> np.ndarray:
    return pixel.astype(np.float64) * (1 - alpha) + np.array(colour) * alpha


def _torchvision_reference(
    image: np.ndarray, class_map: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's draw_segmentation_masks on the same classes and colours, and where it drew."""
    present = [int(c) for c in np.unique(class_map) if c != 0]
    masks = torch.from_numpy(class_map[None] == np.array(present)[:, None, None])
    colours = palette()
    drawn = draw_segmentation_masks(
        torch.from_numpy(image).permute(2, 0, 1),
        masks,
        alpha=alpha,
        colors=[tuple(colours[3 * c : 3 * c + 3]) for c in present],
    )
    return drawn.permute(1, 2, 0).numpy(), class_map != 0


def test_semantic_overlay_colours_classes_only() -> None:
    rng = np.random.default_rng(8)
    image = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    class_map = np.zeros((24, 32), dtype=np.uint8)
    class_map[2:10, 3:20] = 15
    class_map[15:22, 5:30] = 1
    class_map[20:24, 0:4] = 200
    # torchvision blends every pixel in float; at 0.35, x * 0.65 + x * 0.35 truncates to x - 1
    # for some x, so this alpha shows whether untouched pixels are really kept.
    alpha = 0.35
    out = np.asarray(_decode(semantic_overlay(image, class_map, alpha=alpha)))
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[class_map == 0], image[class_map == 0])
    colours = palette()
    for class_id in (1, 15, 200):
        where = class_map == class_id
        expected = _blend(image[where], tuple(colours[3 * class_id : 3 * class_id + 3]), alpha)
        assert np.abs(out[where] - expected).max() <= 1.0
    # Bit-identical to torchvision's own mask drawing wherever a class is drawn.
    reference, drawn = _torchvision_reference(image, class_map, alpha)
    np.testing.assert_array_equal(out[drawn], reference[drawn])

    plain = _decode(semantic_overlay(image, np.zeros((24, 32), dtype=np.uint8)))
    assert plain.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(plain), image)


def test_instance_overlay_draws_masks_and_boxes() -> None:
    rng = np.random.default_rng(9)
    h, w = 80, 90
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    front = _instance(2, 0.9, np.ones((40, 40), dtype=bool), (10, 10))
    back = _instance(5, 0.6, np.ones((40, 40), dtype=bool), (30, 30))
    result = InstanceResult(h, w, [front, back])
    labels = ["background", "a", "b", "c", "d", "e"]
    alpha = 0.35  # see test_semantic_overlay_colours_classes_only
    out = np.asarray(_decode(instance_overlay(image, result, labels, alpha=alpha)))
    assert out.shape == image.shape
    colours = palette()
    for (y, x), class_id in (((46, 46), 2), ((62, 62), 5)):  # (46, 46) is in both: front wins
        expected = _blend(image[y, x], tuple(colours[3 * class_id : 3 * class_id + 3]), alpha)
        assert np.abs(out[y, x] - expected).max() <= 1.0
    np.testing.assert_array_equal(out[0:8, 55:], image[0:8, 55:])  # far from masks and boxes
    # The bottom edge of the back box is drawn in its class colour.
    assert tuple(out[69, 50]) == tuple(colours[15:18])

    plain = _decode(instance_overlay(image, InstanceResult(h, w, []), labels))
    assert plain.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(plain), image)


def test_overlay_png_compresses_a_photo_and_level_0_stores_it() -> None:
    # A smooth gradient with mild noise, like a photo: the Huffman-coded up-filtered rows take
    # well under the raw size; level 0 stores the rows as they are.
    rng = np.random.default_rng(9)
    ramp = np.add.outer(np.arange(120), np.arange(160))[..., None] // 2 + np.array([0, 40, 80])
    image = np.clip(ramp + rng.integers(0, 4, size=(120, 160, 3)), 0, 255).astype(np.uint8)
    class_map = np.zeros((120, 160), dtype=np.uint8)
    stored = semantic_overlay(image, class_map, compress_level=0)
    packed = semantic_overlay(image, class_map, compress_level=1)
    assert len(stored) > image.nbytes
    assert len(packed) < 0.6 * image.nbytes
    for body in (stored, packed):
        np.testing.assert_array_equal(np.asarray(_decode(body)), image)
