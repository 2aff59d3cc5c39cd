"""The client's decoders (pure numpy and Pillow) against the service's own encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from segserve_client import (
    parse_server_timing,
    png_to_class_map,
    png_to_id_map,
    polygons_to_mask,
    rle_counts,
    rle_to_mask,
)
from segserve_client._decode import segments_to_class_map

from app.output.maps import class_map_to_png, instance_map_to_png
from app.output.polygons import mask_to_polygons
from app.output.polygons import polygons_to_mask as reference_polygons_to_mask
from app.output.rle import instance_rle, mask_to_rle
from app.results import Instance
from tests.masks import random_masks


def test_rle_decodes_the_service_encoding_of_random_masks() -> None:
    for mask in random_masks(seed=11, count=600):
        np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask)), mask)


@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 1), (97, 131), (480, 640)])
def test_rle_decodes_large_and_degenerate_masks(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    for density in (0.0, 0.002, 0.5, 0.998, 1.0):
        mask = rng.random(shape) < density
        rle = mask_to_rle(mask)
        np.testing.assert_array_equal(rle_to_mask(rle), mask)
    # Long runs: values of several 5-bit groups, and differences of both signs.
    mask = np.zeros(shape, dtype=bool)
    mask[: shape[0] // 2, : shape[1] // 3] = True
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask)), mask)


def test_rle_of_an_instance_crop_decodes_to_the_full_mask() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(5, 60, size=2))
        ch, cw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = (rng.random((ch, cw)) < 0.6).astype(np.uint8)
        instance = Instance(class_id=1, score=0.9, box=(0, 0, 1, 1), mask=crop, origin=(x0, y0))
        full = np.zeros((h, w), dtype=bool)
        full[y0 : y0 + ch, x0 : x0 + cw] = crop != 0
        np.testing.assert_array_equal(rle_to_mask(instance_rle(instance, h, w)), full)


def test_rle_counts_match_the_uncompressed_runs() -> None:
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(5)
    mask = np.asfortranarray(rng.random((40, 50)) < 0.3, dtype=np.uint8)
    compressed = coco_mask.encode(mask)
    runs = rle_counts(compressed["counts"].decode())
    # pycocotools' own run lengths, by decoding and re-measuring down the columns
    flat = mask.T.ravel()
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    expected = np.diff(bounds)
    if flat[0]:
        expected = np.concatenate(([0], expected))
    np.testing.assert_array_equal(runs, expected)
    # The uncompressed form (a list of counts) reads too.
    rle = {"size": [40, 50], "counts": runs.tolist()}
    np.testing.assert_array_equal(rle_to_mask(rle), mask.astype(bool))


@pytest.mark.parametrize(
    ("rle", "why"),
    [
        ({"size": [2, 2], "counts": "3"}, "cover 3 pixels"),
        ({"size": [2, 2], "counts": "0\x7f"}, "outside"),
        ({"size": [2, 2], "counts": "0o"}, "middle of a value"),
    ],
)
def test_rle_refuses_inconsistent_counts(rle: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        rle_to_mask(rle)


def test_polygons_at_tolerance_zero_decode_exactly() -> None:
    for mask in random_masks(seed=12, count=600):
        h, w = mask.shape
        np.testing.assert_array_equal(polygons_to_mask(mask_to_polygons(mask, 0), h, w), mask)


def test_polygons_with_an_offset_and_parts_outside_are_clipped() -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:15, 10:25] = True
    mask[8:11, 14:18] = False  # a hole
    polygons = mask_to_polygons(mask, 0, offset=(-10, -5))  # shifted up-left, partly outside
    expected = np.zeros((20, 30), dtype=bool)
    expected[0:10, 0:15] = mask[5:15, 10:25]
    np.testing.assert_array_equal(polygons_to_mask(polygons, 20, 30), expected)


def test_simplified_polygons_decode_about_as_the_reference_decoder_does() -> None:
    """At a tolerance the rings have oblique edges, on which Pillow and OpenCV pick boundary
    pixels differently: the decodings agree but for some edge pixels (these noise masks are
    the worst case: tiny parts, long shallow edges; measured 97.5% equal)."""
    agree = total = 0
    for mask in random_masks(seed=13, count=200):
        h, w = mask.shape
        polygons = mask_to_polygons(mask, 1.5)
        ours = polygons_to_mask(polygons, h, w)
        agree += int((ours == reference_polygons_to_mask(polygons, h, w)).sum())
        total += h * w
    assert agree / total > 0.95
    blob = np.zeros((120, 160), dtype=np.uint8)
    yy, xx = np.mgrid[:120, :160]
    blob[((yy - 60) / 45.0) ** 2 + ((xx - 80) / 70.0) ** 2 < 1] = 1  # a smooth shape
    polygons = mask_to_polygons(blob != 0, 1.0)
    ours = polygons_to_mask(polygons, 120, 160)
    assert (ours != reference_polygons_to_mask(polygons, 120, 160)).sum() <= 0.01 * blob.sum()


def test_class_map_from_segments_and_from_the_png() -> None:
    rng = np.random.default_rng(7)
    class_map = rng.integers(0, 5, (37, 53)).astype(np.uint8)
    class_map[10:30, 5:40] = 3  # a big region with the noise around it
    segments = [(c, mask_to_polygons(class_map == c, 0)) for c in range(1, 5)]
    np.testing.assert_array_equal(segments_to_class_map(segments, 37, 53), class_map)
    np.testing.assert_array_equal(png_to_class_map(class_map_to_png(class_map)), class_map)


@pytest.mark.parametrize("count", [3, 300])  # 8-bit, and 16-bit above 255 instances
def test_id_map_png_and_its_instance_list(count: int) -> None:
    rng = np.random.default_rng(count)
    dtype = np.uint8 if count <= 255 else np.uint16
    ids = rng.integers(0, count + 1, (41, 67)).astype(dtype)
    listed = [
        {"label": "x", "class_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1], "area": k}
        for k in range(count)
    ]
    decoded, instances = png_to_id_map(instance_map_to_png(ids, json.dumps(listed)))
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, ids)
    assert instances == listed


def test_server_timing_parses_stages_and_counts() -> None:
    header = 'decode;dur=3.64, queue;dur=6.22, infer;dur=392.68, encode;dur=2.62, stitch;dur=1.5, windows;desc="4"'
    assert parse_server_timing(header) == {
        "decode": 3.64,
        "queue": 6.22,
        "infer": 392.68,
        "encode": 2.62,
        "stitch": 1.5,
        "windows": 4,
    }
    assert parse_server_timing(None) == {}
    assert parse_server_timing('x;desc="not a number", y') == {}
