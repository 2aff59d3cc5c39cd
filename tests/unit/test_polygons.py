"""Unit tests for app.output.polygons: exact, literal decoding of every mask."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.output.polygons import Polygon, _four_connected_rings, mask_to_polygons, polygons_to_mask
from tests.masks import random_masks

# ----------------------------------------------------------------------------- helpers


def _literal(polygons: list[Polygon], h: int, w: int) -> np.ndarray:
    """The literal client: per polygon, fill the outer ring with 1 and the holes with 0
    (cv2.fillPoly includes the boundary), then the union of the polygons."""
    out = np.zeros((h, w), dtype=bool)
    for polygon in polygons:
        rings = [np.array(r, dtype=np.int32).reshape(-1, 1, 2) for r in polygon]
        canvas = np.zeros((h, w), dtype=np.uint8)
        cv2.fillPoly(canvas, rings[:1], 1)
        if len(rings) > 1:
            cv2.fillPoly(canvas, rings[1:], 0)
        out |= canvas.astype(bool)
    return out


def _paint_in_order(polygons: list[Polygon], h: int, w: int) -> np.ndarray:
    """The other literal client: one canvas, polygons painted in list order."""
    canvas = np.zeros((h, w), dtype=np.uint8)
    for polygon in polygons:
        rings = [np.array(r, dtype=np.int32).reshape(-1, 1, 2) for r in polygon]
        cv2.fillPoly(canvas, rings[:1], 1)
        for hole in rings[1:]:
            cv2.fillPoly(canvas, [hole], 0)
    return canvas.astype(bool)


def _pil_literal(polygons: list[Polygon], h: int, w: int) -> np.ndarray:
    """The literal client with PIL: polygon(fill=outline=1), then polygon(fill=outline=0).

    PIL's polygon() needs two points at least: a 1-point ring is drawn with point().
    """
    out = np.zeros((h, w), dtype=bool)
    for polygon in polygons:
        image = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(image)
        for k, ring in enumerate(polygon):
            value = 0 if k else 1
            points = [(x, y) for x, y in ring]
            if len(points) == 1:
                draw.point(points, fill=value)
            else:
                draw.polygon(points, fill=value, outline=value)
        out |= np.asarray(image) != 0
    return out


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
    """The documented semantics by pure geometry, no rasteriser: pixel centres inside or on
    the outer ring and neither inside nor on any hole ring, unioned over the polygons."""
    out = np.zeros((h, w), dtype=bool)
    for polygon in polygons:
        inside, on = _ring_tests(polygon[0], h, w)
        part = inside | on
        for hole in polygon[1:]:
            inside, on = _ring_tests(hole, h, w)
            part &= ~(inside | on)
        out |= part
    return out


def _fill(ring: list[list[int]], h: int, w: int) -> np.ndarray:
    canvas = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.array(ring, dtype=np.int32).reshape(-1, 1, 2)], 1)
    return canvas.astype(bool)


def _parse(pattern: str) -> np.ndarray:
    return np.array([[c == "#" for c in line] for line in pattern.split()], dtype=bool)


# ---------------------------------------------------------------------------- polygons


def test_literal_decoding_is_exact_onrandom_masks() -> None:
    holes = 0
    for mask in random_masks(seed=1, count=3000):
        h, w = mask.shape
        polygons = mask_to_polygons(mask, tolerance=0)
        np.testing.assert_array_equal(_literal(polygons, h, w), mask)
        np.testing.assert_array_equal(_paint_in_order(polygons, h, w), mask)
        np.testing.assert_array_equal(polygons_to_mask(polygons, h, w), mask)
        for polygon in polygons:
            for k, ring in enumerate(polygon):
                assert ring, "empty ring"
                xs, ys = np.array(ring).T
                # Outer rings run through the part's pixels, hole rings through the hole's.
                assert (mask[ys, xs] == (k == 0)).all()
            holes += len(polygon) - 1
    assert holes > 2000  # the generator really exercised holes


def test_each_ring_fills_exactly_its_own_region() -> None:
    """Outer ring: the part plus its holes. Hole ring: one 4-connected region the part
    encloses, none of the part's pixels; the holes are disjoint and cover all it encloses."""
    for mask in random_masks(seed=2, count=800):
        h, w = mask.shape
        _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        for polygon in mask_to_polygons(mask, tolerance=0):
            x, y = polygon[0][0]
            part = labels == labels[y, x]
            enclosed = _fill(polygon[0], h, w) & ~part
            seen = np.zeros((h, w), dtype=bool)
            for hole in polygon[1:]:
                region = _fill(hole, h, w)
                assert hole[0] == np.argwhere(region)[0][::-1].tolist()  # starts top-left
                assert not (region & part).any()
                assert not (region & seen).any()
                assert cv2.connectedComponents(region.astype(np.uint8), connectivity=4)[0] == 2
                seen |= region
            np.testing.assert_array_equal(seen, enclosed)
            # What the part encloses: what 4-connected steps off the part can't leave.
            free = np.pad(~part, 1, constant_values=True).astype(np.uint8)
            labels_free = cv2.connectedComponents(free, connectivity=4)[1]
            outside, reach = labels_free[0, 0], labels_free[1:-1, 1:-1]
            np.testing.assert_array_equal(enclosed, ~part & (reach != outside))


def test_outer_ring_is_opencvs_external_contour_of_the_part() -> None:
    for mask in random_masks(seed=3, count=300):
        _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        for polygon in mask_to_polygons(mask, tolerance=0):
            x, y = polygon[0][0]
            part = (labels == labels[y, x]).astype(np.uint8)
            padded = cv2.copyMakeBorder(part, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
            (contour,), _ = cv2.findContours(
                padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(-1, -1)
            )
            assert polygon[0] == contour.reshape(-1, 2).tolist()


def test_hole_ring_without_a_pinch_is_opencvs_contour_of_the_hole() -> None:
    # Where a hole has no corner contact, its 8- and 4-connected traces agree and the ring is
    # OpenCV's own trace of the hole's pixels; only pinched holes take the turned-grid trace.
    checked = 0
    for mask in random_masks(seed=9, count=300):
        background = np.pad(~mask, 1).astype(np.uint8)
        _, free = cv2.connectedComponents(background, connectivity=4)
        enclosed = (background == 1) & (free != free[0, 0])  # cut off from the outside
        _, holes = cv2.connectedComponents(enclosed.astype(np.uint8), connectivity=8)
        for polygon in mask_to_polygons(mask, tolerance=0):
            for x, y in (ring[0] for ring in polygon[1:]):
                hole = holes == holes[y + 1, x + 1]
                a, b, c, d = hole[:-1, :-1], hole[:-1, 1:], hole[1:, :-1], hole[1:, 1:]
                if ((a & d & ~b & ~c) | (b & c & ~a & ~d)).any():
                    continue  # pinched: covered by the fill tests above
                (contour,), _ = cv2.findContours(
                    hole.astype(np.uint8),
                    cv2.RETR_EXTERNAL,
                    cv2.CHAIN_APPROX_SIMPLE,
                    offset=(-1, -1),
                )
                ring = next(r for r in polygon[1:] if r[0] == [x, y])
                assert ring == contour.reshape(-1, 2).tolist()
                checked += 1
    assert checked > 100


def test_geometry_without_a_rasteriser() -> None:
    # Pixel centres inside or on the outer ring and off every hole ring: exactly the mask.
    for mask in random_masks(seed=4, count=150):
        h, w = mask.shape
        np.testing.assert_array_equal(_covered(mask_to_polygons(mask, tolerance=0), h, w), mask)


def test_pil_literal_decoding_agrees() -> None:
    for mask in random_masks(seed=5, count=300):
        h, w = mask.shape
        np.testing.assert_array_equal(_pil_literal(mask_to_polygons(mask, 0), h, w), mask)


def test_polygons_round_trip_on_larger_blobs_with_offset() -> None:
    rng = np.random.default_rng(6)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(60, 200, size=2))
        noise = (rng.random((h, w)) < 0.5).astype(np.float32)
        mask = cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.7, 4.0)) > 0.5
        polygons = mask_to_polygons(mask.astype(np.uint8) * 255, tolerance=0, offset=(7, -3))
        np.testing.assert_array_equal(polygons_to_mask(polygons, h, w, offset=(7, -3)), mask)
        shifted = [[[[x - 7, y + 3] for x, y in ring] for ring in poly] for poly in polygons]
        np.testing.assert_array_equal(_literal(shifted, h, w), mask)


def test_many_parts_on_a_big_mask() -> None:
    rng = np.random.default_rng(7)
    mask = np.zeros((540, 960), dtype=np.uint8)
    for _ in range(60):
        centre = (int(rng.integers(0, 960)), int(rng.integers(0, 540)))
        radius = int(rng.integers(5, 60))
        cv2.circle(mask, centre, radius, 1, thickness=-1)
        cv2.circle(mask, centre, radius // 3, 0, thickness=-1)
    mask[rng.random(mask.shape) < 0.02] ^= 1  # pixel-sized parts and holes everywhere
    polygons = mask_to_polygons(mask, tolerance=0)
    assert len(polygons) > 100
    np.testing.assert_array_equal(_literal(polygons, 540, 960), mask.astype(bool))
    np.testing.assert_array_equal(polygons_to_mask(polygons, 540, 960), mask.astype(bool))


@pytest.mark.parametrize(
    ("pattern", "parts", "holes"),
    [
        pytest.param("#", 1, 0, id="single-pixel-whole-image"),
        pytest.param("... .#. ...", 1, 0, id="single-pixel"),
        pytest.param("#.. .#. ..#", 1, 0, id="diagonal-chain"),
        pytest.param("#.# .#. #.#", 1, 0, id="x-shape"),
        pytest.param("#.#. .#.# #.#. .#.#", 1, 2, id="checkerboard"),
        pytest.param("##### ..... #####", 2, 0, id="lines-on-borders"),
        pytest.param("### #.# ###", 1, 1, id="one-pixel-hole"),
        pytest.param(".#. #.# .#.", 1, 1, id="diamond-hole"),
        pytest.param("#### #..# #..# ####", 1, 1, id="square-hole"),
        pytest.param(".###. #...# #.#.# #...# .###.", 2, 1, id="island-in-hole"),
        pytest.param(
            "######### #.......# #.#####.# #.#...#.# #.#.#.#.# #.#...#.# #.#####.# #.......# "
            "#########",
            3,
            2,
            id="nested",
        ),
        pytest.param("#### #.## ##.# ####", 1, 2, id="diagonal-holes"),
        pytest.param("##### #.#.# ##.## #.#.# #####", 1, 5, id="x-of-holes"),
        pytest.param("..#.. .#.#. #...# .#.#. ..#..", 1, 1, id="diamond-8-connected"),
        pytest.param("###### #...## #.#.## #..### ######", 1, 1, id="pinched-hole"),
        pytest.param("####### #..#..# #.#.#.# #..#..# #######", 1, 3, id="pinches-between-holes"),
        pytest.param(
            "####### #.....# #.##..# #.#.#.# #.###.# #.....# #######",
            2,
            2,
            id="island-hole-touching-the-moat",
        ),
    ],
)
def test_polygons_handcrafted(pattern: str, parts: int, holes: int) -> None:
    mask = _parse(pattern)
    h, w = mask.shape
    polygons = mask_to_polygons(mask, tolerance=0)
    assert len(polygons) == parts
    assert sum(len(p) - 1 for p in polygons) == holes
    np.testing.assert_array_equal(_literal(polygons, h, w), mask)
    np.testing.assert_array_equal(_paint_in_order(polygons, h, w), mask)
    np.testing.assert_array_equal(_pil_literal(polygons, h, w), mask)
    np.testing.assert_array_equal(_covered(polygons, h, w), mask)
    np.testing.assert_array_equal(polygons_to_mask(polygons, h, w), mask)
    # Simplification never drops a part, however small.
    assert len(mask_to_polygons(mask, tolerance=1.0)) == parts


def test_pinched_hole_keeps_the_part_pixel_behind_the_pinch() -> None:
    # The hole touches itself at a corner, (3, 2)-(2, 3), where the part passes between its
    # pixel (2, 2) and the rest of the part at (3, 3).
    mask = _parse("###### #...## #.#.## #..### ######")
    (polygon,) = mask_to_polygons(mask, tolerance=0)
    assert polygon[0] == [[0, 0], [0, 4], [5, 4], [5, 0]]
    (hole,) = polygon[1:]
    assert {tuple(p) for p in hole} == {(1, 1), (3, 1), (3, 2), (1, 3), (2, 3)}
    np.testing.assert_array_equal(_fill(hole, 5, 6), ~mask)
    # OpenCV's own (8-connected) trace of the hole cuts across the pinch and covers (2, 2).
    (contour,), _ = cv2.findContours(
        (~mask).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    assert _fill(contour.reshape(-1, 2).tolist(), 5, 6)[2, 2]


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
    assert dot == [[[25, 7]]]  # a one-pixel part: a one-point outer ring
    for polygon in polygons:
        for ring in polygon:
            for point in ring:
                assert len(point) == 2
                assert all(type(v) is int for v in point)

    shifted = mask_to_polygons(mask, tolerance=0, offset=(100, 50))
    expected = [[[[x + 100, y + 50] for x, y in ring] for ring in poly] for poly in polygons]
    assert shifted == expected


def test_one_pixel_hole_is_a_one_point_ring_of_the_hole_pixel() -> None:
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:5, 1:6] = True
    mask[2, 3] = False
    (polygon,) = mask_to_polygons(mask, tolerance=0)
    assert len(polygon) == 2
    assert {tuple(p) for p in polygon[0]} == {(1, 1), (5, 1), (5, 4), (1, 4)}
    assert polygon[1] == [[3, 2]]
    assert mask_to_polygons(mask, tolerance=2.0)[0][1] == [[3, 2]]


def test_hole_ring_runs_through_the_holes_outermost_pixels() -> None:
    mask = np.ones((7, 8), dtype=bool)
    mask[2:5, 2:6] = False  # a 4x3 hole: x 2..5, y 2..4
    (polygon,) = mask_to_polygons(mask, tolerance=0)
    assert polygon[0] == [[0, 0], [0, 6], [7, 6], [7, 0]]
    assert polygon[1][0] == [2, 2]  # rings start at their region's top-left pixel
    assert {tuple(p) for p in polygon[1]} == {(2, 2), (5, 2), (5, 4), (2, 4)}


def test_island_in_hole_is_its_own_polygon_after_its_container() -> None:
    mask = np.zeros((9, 9), dtype=bool)
    mask[1:8, 1:8] = True
    mask[2:7, 2:7] = False
    mask[4, 4] = True
    polygons = mask_to_polygons(mask, tolerance=0)
    assert [len(p) for p in polygons] == [2, 1]
    # The hole ring goes around the whole hole, island included: the island is painted after.
    assert {tuple(p) for p in polygons[0][1]} == {(2, 2), (6, 2), (6, 6), (2, 6)}
    assert polygons[1] == [[[4, 4]]]


def test_four_connected_rings_fill_their_component_and_what_it_cuts_off() -> None:
    rng = np.random.default_rng(8)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 16, size=2))
        region = np.pad(rng.random((h, w)) < rng.uniform(0.3, 0.9), 1).astype(np.uint8)
        count, labels = cv2.connectedComponents(region, connectivity=4)
        rings = _four_connected_rings(region).split()
        assert len(rings) == count - 1
        for ring in rings:
            x, y = ring[0]
            component = labels == labels[y, x]
            assert [x, y] == np.argwhere(component)[0][::-1].tolist()  # starts top-left
            steps = np.abs(np.diff(np.vstack([ring, ring[:1]]), axis=0))
            assert ((steps[:, 0] == 0) | (steps[:, 1] == 0)).all()  # no diagonal step
            # The component plus what is not 8-connected to the outside around it.
            free = cv2.connectedComponents((~component).astype(np.uint8), connectivity=8)[1]
            expected = component | (free != free[0, 0])
            np.testing.assert_array_equal(_fill(ring.tolist(), h + 2, w + 2), expected)


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


def test_any_nonzero_value_is_foreground_whatever_the_dtype() -> None:
    # A bool array viewed from other bytes (np.frombuffer, .view(bool)) may hold 2 or 255.
    pattern = np.array([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 1]], dtype=np.uint8)
    expected = mask_to_polygons(pattern.astype(bool))
    assert len(expected[0]) == 2  # one part with one hole
    for value in (1, 2, 254, 255):
        masks = [(pattern * value).view(bool), pattern * value, (pattern * value).astype(np.int32)]
        for mask in masks:
            assert mask_to_polygons(mask) == expected
