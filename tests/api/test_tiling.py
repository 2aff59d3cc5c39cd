"""Tiled requests (`tile=`, `overlap=`) through the real app stack with fake predictors.

The fake semantic model's window logits are one-hot of its per-pixel truth, so the tiling
rule (argmax of the summed logits) gives the untiled answer exactly. The instance tests use a
fake that finds one instance per connected red (or blue) region of the window it is given,
so objects straddling window edges are found in pieces and must be merged back.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pycocotools import mask as mask_utils

from app.main import create_app, wait_until_started
from app.output.polygons import polygons_to_mask
from app.predictors import InstanceParams
from app.predictors.repository import TilingSpec
from app.request_log import ACCESS_LOGGER
from app.results import Instance, InstanceResult
from app.tiling import TileGrid
from tests.api.conftest import Served, encode, make_settings, sample_image
from tests.fakes import (
    INST_CATEGORIES,
    SEM_CATEGORIES,
    FakeInstance,
    FakePredictor,
    FakeSemantic,
    fake_loader,
    fake_specs,
    semantic_truth,
)

PNG = {"Content-Type": "image/png"}

# A 100x70 image with tile=32, overlap=8 (stride 24): rows start at 0, 24, 38; columns at
# 0, 24, 48, 68: 12 windows of 32x32.
WIDTH, HEIGHT, TILE, OVERLAP, WINDOWS = 100, 70, 32, 8, 12
TILED = f"tile={TILE}&overlap={OVERLAP}"


def image_of(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    return sample_image(width, height)


def png_values(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.array(Image.open(io.BytesIO(response.content)))


def timing(response: httpx.Response) -> tuple[dict[str, float], dict[str, str]]:
    """Server-Timing as (stage -> ms, count -> desc)."""
    stages, counts = {}, {}
    for part in response.headers["server-timing"].split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            stages[name] = float(rest.removeprefix("dur="))
        else:
            assert rest.startswith('desc="') and rest.endswith('"'), part
            counts[name] = rest.removeprefix('desc="').removesuffix('"')
    return stages, counts


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


async def segment(
    client: httpx.AsyncClient, image: np.ndarray, query: str = "", **headers: str
) -> httpx.Response:
    return await client.post(f"/segment?{query}", content=encode(image), headers={**PNG, **headers})


@pytest.fixture
async def production_client(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets the 500 a real server sends (the default re-raises)."""
    transport = httpx.ASGITransport(app=served.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


# ------------------------------------------------------------------------- semantic results


async def test_tiled_png_equals_the_untiled_class_map(served: Served) -> None:
    image = image_of()
    tiled = png_values(await segment(served.client, image, TILED))
    untiled = png_values(await segment(served.client, image))
    truth = semantic_truth(image)
    assert len(np.unique(truth)) == 4  # every class shows
    np.testing.assert_array_equal(tiled, truth)
    np.testing.assert_array_equal(untiled, truth)


@pytest.mark.parametrize("fmt", ["png", "json", "overlay"])
async def test_every_format_works_unchanged_on_a_tiled_result(served: Served, fmt: str) -> None:
    image = image_of()
    tiled = await segment(served.client, image, f"{TILED}&format={fmt}")
    untiled = await segment(served.client, image, f"format={fmt}")
    assert tiled.status_code == untiled.status_code == 200, tiled.text
    assert tiled.headers["content-type"] == untiled.headers["content-type"]
    if fmt == "json":
        assert tiled.json() == untiled.json()
        assert [s["label"] for s in tiled.json()["segments"]] == SEM_CATEGORIES[1:]
    else:
        assert tiled.content == untiled.content


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [
        (20, 12, 32, 8),  # smaller than a tile: one window
        (32 + 24 + 1, 32 + 1, 32, 8),  # one pixel over a multiple of the stride
        (300, 17, 16, 4),  # very wide
        (47, 53, 16, 0),  # no overlap
    ],
)
async def test_awkward_sizes_give_the_truth(
    served: Served, width: int, height: int, tile: int, overlap: int
) -> None:
    image = image_of(width, height)
    response = await segment(served.client, image, f"tile={tile}&overlap={overlap}")
    np.testing.assert_array_equal(png_values(response), semantic_truth(image))
    windows = len(TileGrid(height, width, tile, overlap))
    assert timing(response)[1] == {"windows": str(windows)}
    assert sum(served.semantic.batches) == windows


async def test_server_timing_counts_windows_and_times_stitching(served: Served) -> None:
    response = await segment(served.client, image_of(), TILED)
    stages, counts = timing(response)
    assert counts == {"windows": str(WINDOWS)}
    assert {"decode", "queue", "infer", "stitch", "encode"} <= set(stages)
    # Untiled: neither.
    stages, counts = timing(await segment(served.client, image_of()))
    assert counts == {} and "stitch" not in stages


async def test_server_timing_stages_of_a_tiled_request_are_never_negative(
    served: Served,
) -> None:
    for _ in range(5):
        stages, _ = timing(await segment(served.client, image_of(), TILED))
        assert all(ms >= 0 for ms in stages.values()), stages


async def test_overlap_defaults_to_a_quarter_of_the_tile(served: Served) -> None:
    response = await segment(served.client, image_of(), "tile=32")
    assert timing(response)[1] == {"windows": str(len(TileGrid(HEIGHT, WIDTH, 32, 8)))}


async def test_windows_of_a_request_batch_together(served: Served) -> None:
    await segment(served.client, image_of(), TILED)
    batches = served.semantic.batches
    assert sum(batches) == WINDOWS
    assert max(batches) > 1 and max(batches) <= 4  # fake-sem's max_batch_size
    assert len(batches) < WINDOWS


# ----------------------------------------------------------------------- metrics and logs


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_and_request_log_record_the_windows(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    before = samples((await served.client.get("/metrics")).text)
    assert (await segment(served.client, image_of(), TILED)).status_code == 200
    assert (await segment(served.client, image_of())).status_code == 200  # not counted
    after = samples((await served.client.get("/metrics")).text)
    model = frozenset({("model", "fake-sem")})
    count = ("segserve_tiled_request_windows_count", model)
    total = ("segserve_tiled_request_windows_sum", model)
    assert after[count] - before.get(count, 0) == 1
    assert after[total] - before.get(total, 0) == WINDOWS
    stitch = ("segserve_stage_duration_seconds_count", model | {("stage", "stitch")})
    assert after[stitch] - before.get(stitch, 0) == 1

    lines = [r.access for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    segments = [line for line in lines if line.get("path", "").startswith("/segment")]
    assert len(segments) == 2, lines
    assert segments[0]["windows"] == WINDOWS
    assert "windows" not in segments[1]


# -------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("tile=8", "tile"),
        ("tile=15", "tile"),
        ("tile=4097", "tile"),
        ("tile=-1", "tile"),
        ("tile=32&overlap=32", "overlap"),
        ("tile=32&overlap=40", "overlap"),
        ("tile=32&overlap=-1", "overlap"),
        ("overlap=4", "overlap"),
        ("tile=0&overlap=4", "overlap"),
        ("tile=abc", "tile"),
    ],
)
async def test_invalid_tiling_is_422_before_the_model(
    served: Served, query: str, names: str
) -> None:
    for endpoint in ("/segment", "/instances"):
        response = await served.client.post(
            f"{endpoint}?{query}", content=encode(image_of()), headers=PNG
        )
        message = assert_error(response, 422, "invalid_parameter")
        assert names in message
    assert served.semantic.batches == [] and served.instance.batches == []


async def test_tile_zero_is_no_tiling(served: Served) -> None:
    response = await segment(served.client, image_of(), "tile=0")
    np.testing.assert_array_equal(png_values(response), semantic_truth(image_of()))
    assert timing(response)[1] == {}
    assert served.semantic.batches == [1]


@pytest.mark.parametrize("settings_overrides", [{"max_tile_windows": WINDOWS - 1}])
async def test_too_many_windows_is_413(served: Served) -> None:
    for endpoint in ("/segment", "/instances"):
        response = await served.client.post(
            f"{endpoint}?{TILED}", content=encode(image_of()), headers=PNG
        )
        message = assert_error(response, 413, "image_too_large")
        assert "SEGSERVE_MAX_TILE_WINDOWS" in message and str(WINDOWS) in message
    assert served.semantic.batches == [] and served.instance.batches == []
    # A larger tile is fewer windows: accepted.
    assert (await segment(served.client, image_of(), "tile=64&overlap=8")).status_code == 200


@pytest.mark.parametrize(
    "settings_overrides", [{"max_image_pixels": 1000, "max_tiled_pixels": WIDTH * HEIGHT}]
)
async def test_a_tiled_request_has_its_own_pixel_cap(served: Served) -> None:
    image = image_of()
    # Over SEGSERVE_MAX_IMAGE_PIXELS untiled...
    assert_error(await segment(served.client, image), 413, "image_too_large")
    assert_error(await segment(served.client, image, "tile=0"), 413, "image_too_large")
    # ...but within SEGSERVE_MAX_TILED_PIXELS tiled.
    np.testing.assert_array_equal(
        png_values(await segment(served.client, image, TILED)), semantic_truth(image)
    )
    # One row more is over the tiled cap too.
    message = assert_error(
        await segment(served.client, image_of(WIDTH, HEIGHT + 1), TILED), 413, "image_too_large"
    )
    assert str(WIDTH * HEIGHT) in message
    assert sum(served.semantic.batches) == WINDOWS  # only the accepted request ran


@pytest.mark.parametrize("settings_overrides", [{"max_network_pixels": 32 * 32 - 1}])
async def test_a_semantic_window_over_the_network_cap_is_413(served: Served) -> None:
    message = assert_error(await segment(served.client, image_of(), TILED), 413, "image_too_large")
    assert "SEGSERVE_MAX_NETWORK_PIXELS" in message
    assert served.semantic.batches == []
    # A smaller window fits.
    assert (await segment(served.client, image_of(), "tile=16&overlap=4")).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"max_queue_size": 1}])
async def test_a_tiled_request_takes_one_place_in_the_queue(served: Served) -> None:
    """Twelve windows through a queue of one: the request was admitted, its windows follow."""
    response = await segment(served.client, image_of(), TILED)
    np.testing.assert_array_equal(png_values(response), semantic_truth(image_of()))
    assert sum(served.semantic.batches) == WINDOWS


# ----------------------------------------------------------------- the model's [tiling]


@asynccontextmanager
async def serving(*predictors: Any, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(**settings), loader=fake_loader(*predictors))
    async with app.router.lifespan_context(app):
        await wait_until_started(app)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client
        finally:
            for fake in predictors:
                if fake.gate is not None:
                    fake.gate.set()


def tiled_fakes(tiling: TilingSpec) -> tuple[FakeSemantic, FakeInstance]:
    sem_spec, inst_spec = fake_specs()
    return (
        FakeSemantic(sem_spec.model_copy(update={"tiling": tiling}), SEM_CATEGORIES),
        FakeInstance(inst_spec, INST_CATEGORIES),
    )


async def test_models_show_no_tiling_by_default(served: Served) -> None:
    models = (await served.client.get("/models")).json()["models"]
    assert [m["tiling"] for m in models] == [None, None]


async def test_a_models_tiling_default_applies_and_tile_zero_turns_it_off() -> None:
    semantic, instance = tiled_fakes(TilingSpec(tile=TILE, overlap=OVERLAP))
    image = image_of()
    async with serving(semantic, instance) as client:
        models = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
        assert models["fake-sem"]["tiling"] == {"tile": TILE, "overlap": OVERLAP}
        assert models["fake-inst"]["tiling"] is None

        # No tile in the request: the model's default.
        response = await segment(client, image)
        np.testing.assert_array_equal(png_values(response), semantic_truth(image))
        assert timing(response)[1] == {"windows": str(WINDOWS)}
        assert sum(semantic.batches) == WINDOWS

        # The request's overlap with the default tile.
        response = await segment(client, image, "overlap=16")
        assert timing(response)[1] == {"windows": str(len(TileGrid(HEIGHT, WIDTH, TILE, 16)))}

        # The request's own tile: its overlap is then a quarter of that tile (the model's
        # overlap goes with the model's tile).
        response = await segment(client, image, "tile=64")
        assert timing(response)[1] == {"windows": str(len(TileGrid(HEIGHT, WIDTH, 64, 16)))}

        # tile=0: the whole image at the preset's size, one image in one batch.
        semantic.batches.clear()
        response = await segment(client, image, "tile=0")
        np.testing.assert_array_equal(png_values(response), semantic_truth(image))
        assert timing(response)[1] == {}
        assert semantic.batches == [1]

        # tile=0 with an overlap: tiling is off, so the overlap is refused.
        assert_error(await segment(client, image, "tile=0&overlap=4"), 422, "invalid_parameter")


async def test_a_default_tiling_without_overlap_takes_a_quarter_of_the_tile() -> None:
    semantic, instance = tiled_fakes(TilingSpec(tile=40))
    async with serving(semantic, instance) as client:
        models = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
        assert models["fake-sem"]["tiling"] == {"tile": 40, "overlap": 10}
        response = await segment(client, image_of())
        assert timing(response)[1] == {"windows": str(len(TileGrid(HEIGHT, WIDTH, 40, 10)))}


# ------------------------------------------------------------- deadlines, faults, cancelling


@pytest.mark.parametrize("settings_overrides", [{"request_timeout_s": 30}])
async def test_a_deadline_fails_the_request_and_cancels_the_windows_not_computed(
    served: Served, production_client: httpx.AsyncClient
) -> None:
    fake = served.semantic
    fake.gate = threading.Event()
    request = asyncio.create_task(
        segment(production_client, image_of(), TILED, **{"X-Request-Timeout": "0.3"})
    )
    # The first batch of windows reaches the model and is held there.
    assert await asyncio.to_thread(fake.entered.wait, 5)
    message = assert_error(await asyncio.wait_for(request, 10), 504, "deadline_exceeded")
    assert "0.3 s (X-Request-Timeout)" in message
    fake.gate.set()
    fake.gate = None
    # The next request runs after the held batch; the windows left were never computed.
    response = await segment(production_client, image_of(20, 20))
    np.testing.assert_array_equal(png_values(response), semantic_truth(image_of(20, 20)))
    *held, last = fake.batches
    assert last == 1
    assert len(held) == 1 and held[0] <= 4, fake.batches
    assert sum(held) < WINDOWS
    # And a tiled request is served in full again.
    response = await segment(production_client, image_of(), TILED)
    np.testing.assert_array_equal(png_values(response), semantic_truth(image_of()))


async def test_a_failing_window_fails_its_request_only(
    served: Served, production_client: httpx.AsyncClient
) -> None:
    served.semantic.fail_with = RuntimeError("window broke: secret detail")
    response = await segment(production_client, image_of(), TILED)
    assert "secret" not in assert_error(response, 500, "internal_error")
    # The first failed batch ended the request: the rest of its windows never ran.
    assert sum(served.semantic.batches) < WINDOWS
    served.semantic.fail_with = None
    assert (await production_client.get("/readyz")).status_code == 200
    response = await segment(production_client, image_of(), TILED)
    np.testing.assert_array_equal(png_values(response), semantic_truth(image_of()))


async def test_a_tiled_request_and_an_untiled_one_are_served_side_by_side(
    served: Served,
) -> None:
    image = image_of()
    tiled, untiled, other = await asyncio.gather(
        segment(served.client, image, TILED),
        segment(served.client, image),
        segment(served.client, image_of(64, 48), TILED),
    )
    np.testing.assert_array_equal(png_values(tiled), semantic_truth(image))
    np.testing.assert_array_equal(png_values(untiled), semantic_truth(image))
    np.testing.assert_array_equal(png_values(other), semantic_truth(image_of(64, 48)))


# -------------------------------------------------------------------------------- instances

# Red regions are class 1 ("box"), blue ones class 2 ("bar").
COLOURS = {1: (230, 10, 10), 2: (10, 10, 230)}


class RegionInstance(FakePredictor):
    """One instance per 8-connected red or blue region of the window it is given: its mask
    the region, its box the region's bounds, its score 0.5 + area / 10000 (so the whole of an
    object outscores any piece of it)."""

    def default_params(self) -> Any:
        return InstanceParams()

    found = 0  # detections made, in every window

    def predict_batch(self, images: Sequence[np.ndarray], params: Sequence[Any]) -> list[Any]:
        self._enter(len(images), params)
        results = [self._detect(image, p) for image, p in zip(images, params, strict=True)]
        self.found += sum(len(r.instances) for r in results)
        return results

    def _detect(self, image: np.ndarray, p: InstanceParams) -> InstanceResult:
        found = []
        for class_id, colour in COLOURS.items():
            region = (image == colour).all(axis=2).astype(np.uint8)
            count, labels, stats, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
            for k in range(1, count):
                x, y, w, h, area = (int(v) for v in stats[k])
                found.append(
                    Instance(
                        class_id,
                        0.5 + area / 10000,
                        (float(x), float(y), float(x + w), float(y + h)),
                        labels[y : y + h, x : x + w] == k,
                        (x, y),
                    )
                )
        kept = [
            i
            for i in sorted(found, key=lambda i: -i.score)
            if i.score >= p.score_threshold and (not p.classes or i.class_id in p.classes)
        ]
        return InstanceResult(image.shape[0], image.shape[1], kept[: p.max_instances])


# 100x80 with tile=40, overlap=16 (stride 24): window columns [0, 40), [24, 64), [48, 88),
# [60, 100); rows [0, 40), [24, 64), [40, 80). Each object straddles some window's edge and
# lies whole in another window (y0, y1, x0, x1, class).
INST_W, INST_H, INST_TILE, INST_OVERLAP = 100, 80, 40, 16
OBJECTS = [
    (5, 15, 34, 46, 1),  # across x = 40
    (33, 45, 56, 68, 1),  # across y = 40, x = 60 and x = 64
    (60, 75, 2, 14, 1),  # across y = 64
    (20, 30, 84, 96, 2),  # across y = 24 and x = 88
    (50, 54, 30, 34, 1),  # inside two windows whole
    (66, 72, 70, 76, 1),  # two neighbours that must stay apart
    (66, 72, 78, 84, 1),
]


def objects_image() -> np.ndarray:
    image = np.full((INST_H, INST_W, 3), 120, dtype=np.uint8)
    for y0, y1, x0, x1, class_id in OBJECTS:
        image[y0:y1, x0:x1] = COLOURS[class_id]
    return image


def object_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((INST_H, INST_W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_the_instance_layout_straddles_window_edges() -> None:
    """The test's premise: each object is cut by some window and whole in another."""
    grid = TileGrid(INST_H, INST_W, INST_TILE, INST_OVERLAP)
    h, w = grid.window_shape
    for y0, y1, x0, x1, _ in OBJECTS[:4]:
        inside = [
            y0 >= wd.y and y1 <= wd.y + h and x0 >= wd.x and x1 <= wd.x + w for wd in grid.windows()
        ]
        cut = [
            (y0 < wd.y + h and y1 > wd.y and x0 < wd.x + w and x1 > wd.x) and not whole
            for wd, whole in zip(grid.windows(), inside, strict=True)
        ]
        assert any(inside) and any(cut)


@pytest.fixture
async def regions() -> AsyncIterator[tuple[httpx.AsyncClient, RegionInstance]]:
    sem_spec, inst_spec = fake_specs()
    instance = RegionInstance(inst_spec, INST_CATEGORIES)
    async with serving(FakeSemantic(sem_spec, SEM_CATEGORIES), instance) as client:
        yield client, instance


async def instances(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.post(
        f"/instances?tile={INST_TILE}&overlap={INST_OVERLAP}&{query}",
        content=encode(objects_image()),
        headers=PNG,
    )


async def test_objects_cut_by_window_edges_come_back_whole(
    regions: tuple[httpx.AsyncClient, RegionInstance],
) -> None:
    client, fake = regions
    response = await instances(client, "mask_encoding=both&tolerance=0&score_threshold=0")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (INST_W, INST_H)
    stages, counts = timing(response)
    assert counts == {"windows": "12"} and "stitch" in stages
    assert sum(fake.batches) == 12
    assert fake.found > 2 * len(OBJECTS)  # pieces and repeats were found, and merged

    got = body["instances"]
    assert len(got) == len(OBJECTS), [i["bbox"] for i in got]
    scores = [i["score"] for i in got]
    assert scores == sorted(scores, reverse=True)
    unmatched = list(OBJECTS)
    for instance in got:
        rle = {"size": instance["rle"]["size"], "counts": instance["rle"]["counts"].encode()}
        mask = mask_utils.decode(rle).astype(bool)
        assert mask.shape == (INST_H, INST_W)
        match = [o for o in unmatched if np.array_equal(mask, object_mask(*o[:4]))]
        assert len(match) == 1, f"instance {instance['bbox']} is no whole object"
        y0, y1, x0, x1, class_id = match[0]
        unmatched.remove(match[0])
        assert instance["bbox"] == [x0, y0, x1, y1]
        assert instance["class_id"] == class_id
        assert instance["label"] == INST_CATEGORIES[class_id]
        area = (y1 - y0) * (x1 - x0)
        assert instance["area"] == area
        assert instance["score"] == pytest.approx(0.5 + area / 10000)  # the whole one's
        np.testing.assert_array_equal(polygons_to_mask(instance["polygons"], INST_H, INST_W), mask)
    assert unmatched == []


async def test_untiled_the_fake_finds_the_same_objects(
    regions: tuple[httpx.AsyncClient, RegionInstance],
) -> None:
    """Control: the whole image at once gives the same answer as the tiled request."""
    client, _ = regions
    tiled = await instances(client, "mask_encoding=rle&score_threshold=0")
    untiled = await client.post(
        "/instances?mask_encoding=rle&score_threshold=0",
        content=encode(objects_image()),
        headers=PNG,
    )

    def by_box(response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        return {json.dumps(i["bbox"]): i for i in response.json()["instances"]}

    tiled_found, untiled_found = by_box(tiled), by_box(untiled)
    assert tiled_found.keys() == untiled_found.keys()
    for box, instance in tiled_found.items():
        assert instance["rle"] == untiled_found[box]["rle"]
        assert instance["score"] == untiled_found[box]["score"]


async def test_classes_and_max_instances_apply_to_the_merged_answer(
    regions: tuple[httpx.AsyncClient, RegionInstance],
) -> None:
    client, _ = regions
    bars = (await instances(client, "classes=bar&mask_encoding=rle")).json()["instances"]
    assert [i["bbox"] for i in bars] == [[84, 20, 96, 30]]
    assert bars[0]["area"] == 120

    best = (await instances(client, "max_instances=1&mask_encoding=rle")).json()["instances"]
    assert [i["bbox"] for i in best] == [[2, 60, 14, 75]]  # the largest object, whole
    assert best[0]["area"] == 180

    png = await instances(client, "format=png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    ids = np.array(Image.open(io.BytesIO(png.content)))
    assert len(np.unique(ids)) == len(OBJECTS) + 1  # background and one id per object
    for y0, y1, x0, x1, _ in OBJECTS:
        assert len(np.unique(ids[y0:y1, x0:x1])) == 1 and ids[y0, x0] != 0
