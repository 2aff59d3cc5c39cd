"""POST /instances through the real app stack with a fake instance predictor."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from app.output.polygons import polygons_to_mask
from app.predictors import InstanceParams
from tests.api.conftest import Served, encode, sample_image
from tests.fakes import INST_CATEGORIES, instance_truth

HEADERS = {"Content-Type": "image/png"}


async def post(served: Served, query: str = "", image: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    image = sample_image() if image is None else image
    return await served.client.post(f"/instances{query}", content=encode(image), headers=HEADERS)


async def test_json_lists_instances_by_score_with_exact_polygons(served: Served) -> None:
    image = sample_image()
    response = await post(served, "?tolerance=0&score_threshold=0")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["width"], body["height"]) == ("fake-inst", 64, 48)
    truth = instance_truth(image, 5)
    assert len(body["instances"]) == 5
    scores = [i["score"] for i in body["instances"]]
    assert scores == sorted(scores, reverse=True)
    for got, want in zip(body["instances"], truth, strict=True):
        assert got["label"] == INST_CATEGORIES[want.class_id]
        assert got["class_id"] == want.class_id
        assert got["bbox"] == list(want.box)
        assert got["area"] == want.area
        assert "rle" not in got
        np.testing.assert_array_equal(
            polygons_to_mask(got["polygons"], 48, 64), want.full_mask(48, 64)
        )


async def test_every_parameter_reaches_the_model(served: Served) -> None:
    await post(served, "?score_threshold=0.3&mask_threshold=0.7&max_instances=2&classes=bar")
    assert served.instance.params == [InstanceParams(0.3, 0.7, 2, frozenset({2}))]


async def test_thresholds_reach_the_model(served: Served) -> None:
    body = (await post(served, "?score_threshold=0.5")).json()
    assert [round(i["score"], 2) for i in body["instances"]] == [0.99, 0.81, 0.63]
    assert len((await post(served, "?score_threshold=0&max_instances=2")).json()["instances"]) == 2


@pytest.mark.parametrize("encoding", ["rle", "both"])
async def test_rle_decodes_to_the_mask(served: Served, encoding: str) -> None:
    image = sample_image()
    body = (await post(served, f"?mask_encoding={encoding}&score_threshold=0")).json()
    for got, want in zip(body["instances"], instance_truth(image, 5), strict=True):
        assert got["rle"]["size"] == [48, 64]
        rle = {"size": got["rle"]["size"], "counts": got["rle"]["counts"].encode()}
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), want.full_mask(48, 64))
        assert ("polygons" in got) == (encoding == "both")


async def test_png_is_an_id_map_with_the_instance_list(served: Served) -> None:
    image = sample_image()
    response = await post(served, "?format=png&score_threshold=0")
    assert response.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(response.content))
    ids = np.array(png)
    assert png.size == (64, 48) and ids.dtype == np.uint8
    listed = json.loads(png.text["instances"])
    truth = instance_truth(image, 5)
    assert [i["class_id"] for i in listed] == [t.class_id for t in truth]
    assert all("polygons" not in i for i in listed)
    expected = np.zeros((48, 64), dtype=np.uint8)
    for k in reversed(range(len(truth))):  # earlier (higher-scoring) instances win overlaps
        expected[truth[k].full_mask(48, 64)] = k + 1
    np.testing.assert_array_equal(ids, expected)


async def test_png_is_16_bit_beyond_255_instances(served: Served) -> None:
    served.instance.instances_per_image = 300
    image = sample_image(400, 300)
    response = await post(served, "?format=png&score_threshold=0&max_instances=1000", image)
    png = Image.open(io.BytesIO(response.content))
    ids = np.array(png)
    assert png.mode.startswith("I")
    assert ids.max() == 300
    assert len(json.loads(png.text["instances"])) == 300


async def test_classes_filter_keeps_only_those_labels(served: Served) -> None:
    body = (await post(served, "?classes=bar&score_threshold=0")).json()
    assert {i["label"] for i in body["instances"]} == {"bar"}
    assert len(body["instances"]) == 2
    # The class filter comes before the max_instances cut: the best "bar" is 2nd overall.
    top = (await post(served, "?classes=bar&score_threshold=0&max_instances=1")).json()
    assert [i["label"] for i in top["instances"]] == ["bar"]
    everything = (await post(served, "?classes=&score_threshold=0")).json()
    assert len(everything["instances"]) == 5


async def test_overlay_is_an_rgb_png_tinting_the_instances_only(served: Served) -> None:
    image = sample_image()
    response = await post(served, "?format=overlay&score_threshold=0", image)
    png = Image.open(io.BytesIO(response.content))
    assert (png.mode, png.size) == ("RGB", (64, 48))
    drawn = np.array(png)
    first = instance_truth(image, 5)[0]  # a solid 4x4 square at the top-left corner
    assert not np.array_equal(drawn[1:3, 1:3], image[1:3, 1:3])
    assert first.full_mask(48, 64)[1:3, 1:3].all()
    np.testing.assert_array_equal(drawn[30:40, 40:60], image[30:40, 40:60])  # far from all


@pytest.mark.parametrize(
    "query",
    ["score_threshold=1.5", "mask_threshold=-0.1", "max_instances=0", "mask_encoding=bitmap"],
)
async def test_invalid_instance_parameters_are_422(served: Served, query: str) -> None:
    response = await post(served, f"?{query}")
    assert response.status_code == 422
    assert query.split("=")[0] in response.json()["error"]["message"]


async def test_a_semantic_model_name_is_404_here(served: Served) -> None:
    response = await post(served, "?model=fake-sem")
    assert response.status_code == 404
    assert "semantic" in response.json()["error"]["message"]
