"""Unit tests for app.encoding: polygons, PNGs, RLE and overlays."""

from __future__ import annotations

import io
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from pycocotools import mask as coco_mask
from torchvision.utils import draw_segmentation_masks

from app.encoding import (
    Polygon,
    class_map_to_png,
    instance_map,
    instance_map_to_png,
    instance_overlay,
    instance_rle,
    mask_to_polygons,
    mask_to_rle,
    palette,
    png_bytes,
    polygons_to_mask,
    semantic_overlay,
)
from app.results import Instance, InstanceResult

# ----------------------------------------------------------------------------- helpers


def _random_masks(seed: int, count: int) -> Iterator[np.ndarray]:
    """Small masks of many kinds: noise, blobs with holes and islands, sparse pixels."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        h, w = (int(v) for v in rng.integers(1, 25, size=2))
        kind = rng.integers(0, 4)
        if kind == 0:  # salt-and-pepper: diagonal contacts, single pixels, pinched holes
            yield rng.random((h, w)) < rng.uniform(0.1, 0.9)
        elif kind == 1:  # smooth blobs, often with holes and islands
            noise = (rng.random((h, w)) < 0.5).astype(np.float32)
            yield cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.6, 2.0)) > 0.5
        elif kind == 2:  # dense: many small holes, parts touching every border
            yield rng.random((h, w)) < 0.8
        else:  # sparse: isolated pixels and short diagonal chains
            yield rng.random((h, w)) < 0.15


def _ring_tests(ring: list[list[int]], h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(strictly inside, on boundary) of the ring for every pixel centre, by pure geometry."""
    yy, xx = np.mgrid[:h, :w]
    px, py = xx.reshape(1, -1), yy.reshape(1, -1)
    a = np.asarray(ring, dtype=np.int64).reshape(-1, 2)
    b = np.roll(a, -1, axis=0)
    ax, ay, bx, by = (v[:, None] for v in (a[:, 0], a[:, 1], b[:, 0], b[:, 1]))
    cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    within = (np.minimum(ax, bx) <= px) & (px <= np.maximum(ax, bx))
    within &= (np.minimum(ay, by) <= py) & (py <= np.maximum(ay, by))
    on = ((cross == 0) & within).any(axis=0)
    straddles = (ay > py) != (by > py)
    x_cross = ax + (py - ay) * (bx - ax) / np.where(by == ay, 1, by - ay)
    inside = ((straddles & (px < x_cross)).sum(axis=0) % 2 == 1) & ~on
    return inside.reshape(h, w), on.reshape(h, w)


def _covered(polygons: list[Polygon], h: int, w: int) -> np.ndarray:
    """The documented semantics: closed outer ring minus open hole interiors, unioned."""
    out = np.zeros((h, w), dtype=bool)
    for polygon in polygons:
        inside, on = _ring_tests(polygon[0], h, w)
        part = inside | on
        for hole in polygon[1:]:
            part &= ~_ring_tests(hole, h, w)[0]
        out |= part
    return out


def _paint_in_order(polygons: list[Polygon], h: int, w: int) -> np.ndarray:
    """What a client does: one canvas, outer filled, hole insides cleared, polygon by polygon."""
    canvas = np.zeros((h, w), dtype=np.uint8)
    for polygon in polygons:
        rings = [np.array(r, dtype=np.int32).reshape(-1, 1, 2) for r in polygon]
        cv2.drawContours(canvas, rings[:1], -1, 1, thickness=-1)
        if len(rings) > 1:
            cv2.drawContours(canvas, rings[1:], -1, 0, thickness=-1)
            cv2.drawContours(canvas, rings[1:], -1, 1, thickness=1)
    return canvas.astype(bool)


def _decode(data: bytes) -> PngImagePlugin.PngImageFile:
    image = Image.open(io.BytesIO(data))
    assert isinstance(image, PngImagePlugin.PngImageFile)
    image.load()
    return image


def _parse(pattern: str) -> np.ndarray:
    return np.array([[c == "#" for c in line] for line in pattern.split()], dtype=bool)


# ---------------------------------------------------------------------------- polygons


def test_polygons_exact_round_trip_on_random_masks() -> None:
    checked_holes = 0
    for mask in _random_masks(seed=1, count=400):
        h, w = mask.shape
        polygons = mask_to_polygons(mask, tolerance=0)
        np.testing.assert_array_equal(polygons_to_mask(polygons, h, w), mask)
        for polygon in polygons:
            for ring in polygon:
                assert ring, "empty ring"
                xs, ys = np.array(ring).T
                # OpenCV's convention: every vertex, hole rings included, is a foreground pixel.
                assert mask[ys, xs].all()
            checked_holes += len(polygon) - 1
    assert checked_holes > 100  # the generator really exercised holes


def test_polygons_follow_documented_geometry_and_paint_order() -> None:
    for mask in _random_masks(seed=2, count=300):
        h, w = mask.shape
        polygons = mask_to_polygons(mask, tolerance=0)
        np.testing.assert_array_equal(_covered(polygons, h, w), mask)
        np.testing.assert_array_equal(_paint_in_order(polygons, h, w), mask)


def test_polygons_round_trip_on_larger_blobs() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(60, 200, size=2))
        noise = (rng.random((h, w)) < 0.5).astype(np.float32)
        mask = cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.7, 4.0)) > 0.5
        polygons = mask_to_polygons(mask.astype(np.uint8) * 255, tolerance=0, offset=(7, -3))
        np.testing.assert_array_equal(polygons_to_mask(polygons, h, w, offset=(7, -3)), mask)


@pytest.mark.parametrize(
    ("pattern", "parts"),
    [
        pytest.param("#", 1, id="single-pixel-whole-image"),
        pytest.param("... .#. ...", 1, id="single-pixel"),
        pytest.param("#.. .#. ..#", 1, id="diagonal-chain"),
        pytest.param("#.# .#. #.#", 1, id="x-shape"),
        pytest.param("#.#. .#.# #.#. .#.#", 1, id="checkerboard"),
        pytest.param("##### ..... #####", 2, id="lines-on-borders"),
        pytest.param("### #.# ###", 1, id="one-pixel-hole"),
        pytest.param("#### #..# #..# ####", 1, id="square-hole"),
        pytest.param(".###. #...# #.#.# #...# .###.", 2, id="island-in-hole"),
        pytest.param(
            "######### #.......# #.#####.# #.#...#.# #.#.#.#.# #.#...#.# #.#####.# #.......# "
            "#########",
            3,
            id="nested",
        ),
        pytest.param("#### #.## ##.# ####", 1, id="diagonal-holes"),
        pytest.param("..#.. .#.#. #...# .#.#. ..#..", 1, id="diamond-8-connected"),
    ],
)
def test_polygons_handcrafted(pattern: str, parts: int) -> None:
    mask = _parse(pattern)
    h, w = mask.shape
    polygons = mask_to_polygons(mask, tolerance=0)
    assert len(polygons) == parts
    np.testing.assert_array_equal(polygons_to_mask(polygons, h, w), mask)
    np.testing.assert_array_equal(_covered(polygons, h, w), mask)
    np.testing.assert_array_equal(_paint_in_order(polygons, h, w), mask)
    # Simplification never drops a part, however small.
    assert len(mask_to_polygons(mask, tolerance=1.0)) == parts


def test_empty_mask_has_no_polygons() -> None:
    assert mask_to_polygons(np.zeros((5, 7), dtype=bool)) == []
    assert mask_to_polygons(np.zeros((0, 0), dtype=bool)) == []
    assert not polygons_to_mask([], 5, 7).any()


def test_polygon_structure_and_coordinate_order() -> None:
    mask = np.zeros((10, 30), dtype=bool)
    mask[2:5, 4:21] = True  # wide bar: x spans 4..20, y spans 2..4
    mask[7, 25] = True  # a separate single pixel
    polygons = mask_to_polygons(mask, tolerance=0)
    assert len(polygons) == 2
    bar, dot = polygons  # sorted top to bottom
    assert len(bar) == 1
    assert {tuple(p) for p in bar[0]} == {(4, 2), (20, 2), (20, 4), (4, 4)}
    assert dot == [[[25, 7]]]
    for polygon in polygons:
        for ring in polygon:
            for point in ring:
                assert len(point) == 2
                assert all(type(v) is int for v in point)

    shifted = mask_to_polygons(mask, tolerance=0, offset=(100, 50))
    expected = [[[[x + 100, y + 50] for x, y in ring] for ring in poly] for poly in polygons]
    assert shifted == expected


def test_holes_are_extra_rings_of_foreground_pixels() -> None:
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:5, 1:6] = True
    mask[2, 3] = False
    (polygon,) = mask_to_polygons(mask, tolerance=0)
    assert len(polygon) == 2
    assert {tuple(p) for p in polygon[0]} == {(1, 1), (5, 1), (5, 4), (1, 4)}
    # The hole ring runs through the four foreground pixels around the hole at (3, 2).
    assert {tuple(p) for p in polygon[1]} == {(3, 1), (2, 2), (4, 2), (3, 3)}


def test_island_in_hole_is_its_own_polygon_after_its_container() -> None:
    mask = np.zeros((9, 9), dtype=bool)
    mask[1:8, 1:8] = True
    mask[2:7, 2:7] = False
    mask[4, 4] = True
    polygons = mask_to_polygons(mask, tolerance=0)
    assert [len(p) for p in polygons] == [2, 1]
    assert polygons[1] == [[[4, 4]]]


def test_tolerance_simplifies_and_stays_close() -> None:
    mask = np.zeros((240, 260), dtype=np.uint8)
    cv2.circle(mask, (130, 120), 100, 1, thickness=-1)
    cv2.circle(mask, (130, 120), 30, 0, thickness=-1)
    exact = mask_to_polygons(mask, tolerance=0)
    rough = mask_to_polygons(mask, tolerance=2.0)
    assert len(exact) == len(rough) == 1
    assert len(exact[0]) == len(rough[0]) == 2  # the hole survives simplification
    for exact_ring, rough_ring in zip(exact[0], rough[0], strict=True):
        assert len(rough_ring) * 3 < len(exact_ring)
    decoded = polygons_to_mask(rough, 240, 260)
    iou = np.logical_and(decoded, mask).sum() / np.logical_or(decoded, mask).sum()
    assert iou > 0.95


def test_min_area_drops_small_parts_by_pixel_count() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[0, 0] = True  # 1 px
    mask[3:5, 3:5] = True  # 4 px
    mask[10:15, 10:15] = True  # a 5x5 square with a 3x3 hole: 16 px
    mask[11:14, 11:14] = False
    mask[12, 12] = True  # an island in that hole: 1 px
    tops = {
        min_area: sorted(min(y for _, y in p[0]) for p in mask_to_polygons(mask, 0, min_area))
        for min_area in (0, 1, 2, 4, 5, 16, 17)
    }
    assert tops == {
        0: [0, 3, 10, 12],
        1: [0, 3, 10, 12],
        2: [3, 10],
        4: [3, 10],
        5: [10],
        16: [10],  # kept: its area is 16 pixels, not the 25 its outer ring encloses
        17: [],
    }


def test_mask_to_polygons_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        mask_to_polygons(np.zeros((2, 2, 1), dtype=bool))
    with pytest.raises(ValueError, match="tolerance"):
        mask_to_polygons(np.zeros((2, 2), dtype=bool), tolerance=-1)


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


def test_png_bytes_compress_level_changes_size_not_pixels() -> None:
    data = np.tile(np.arange(256, dtype=np.uint8), (64, 4))
    fast, small = png_bytes(Image.fromarray(data), 1), png_bytes(Image.fromarray(data), 9)
    assert len(small) < len(fast)
    np.testing.assert_array_equal(np.asarray(_decode(small)), np.asarray(_decode(fast)))


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
    for mask in _random_masks(seed=6, count=60):
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
