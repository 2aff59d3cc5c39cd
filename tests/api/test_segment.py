"""POST /segment through the real app stack with a fake semantic predictor."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from app.output.polygons import polygons_to_mask
from tests.api.conftest import Served, encode, sample_image
from tests.fakes import SEM_CATEGORIES, semantic_truth


def png_array(content: bytes) -> tuple[Image.Image, np.ndarray]:
    image = Image.open(io.BytesIO(content))
    return image, np.array(image)


async def test_png_is_the_class_map_in_mode_p(served: Served) -> None:
    image = sample_image()
    response = await served.client.post("/segment", files={"image": ("a.png", encode(image))})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    png, values = png_array(response.content)
    assert png.mode == "P"
    assert png.size == (64, 48)
    np.testing.assert_array_equal(values, semantic_truth(image))
    assert len(png.getpalette() or []) >= 3 * 4


@pytest.mark.parametrize("form", ["multipart", "raw", "octet", "base64", "data-url"])
async def test_every_input_form_gives_the_same_map(served: Served, form: str) -> None:
    image = sample_image(40, 30)
    data = encode(image)
    if form == "multipart":
        response = await served.client.post("/segment", files={"image": ("x", data)})
    elif form in ("raw", "octet"):
        ctype = "image/png" if form == "raw" else "application/octet-stream"
        response = await served.client.post(
            "/segment", content=data, headers={"Content-Type": ctype}
        )
    else:
        encoded = base64.encodebytes(data).decode()  # with line breaks, as `base64` writes
        if form == "data-url":
            encoded = "data:image/png;base64," + encoded
        response = await served.client.post("/segment", json={"image": encoded})
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(png_array(response.content)[1], semantic_truth(image))


async def test_json_segments_cover_each_class_exactly(served: Served) -> None:
    image = sample_image()
    response = await served.client.post(
        "/segment?format=json&tolerance=0",
        content=encode(image),
        headers={"Content-Type": "image/png"},
    )
    assert response.status_code == 200
    body = response.json()
    truth = semantic_truth(image)
    assert (body["model"], body["width"], body["height"]) == ("fake-sem", 64, 48)
    present = sorted(int(c) for c in np.unique(truth) if c != 0)
    assert [s["class_id"] for s in body["segments"]] == present
    for segment in body["segments"]:
        cid = segment["class_id"]
        assert segment["label"] == SEM_CATEGORIES[cid]
        assert segment["area"] == int((truth == cid).sum())
        filled = polygons_to_mask(segment["polygons"], 48, 64)
        np.testing.assert_array_equal(filled, truth == cid)


async def test_accept_header_selects_json_and_format_wins(served: Served) -> None:
    data = encode(sample_image())
    headers = {"Content-Type": "image/png", "Accept": "application/json"}
    as_json = await served.client.post("/segment", content=data, headers=headers)
    assert as_json.headers["content-type"] == "application/json"
    forced = await served.client.post("/segment?format=png", content=data, headers=headers)
    assert forced.headers["content-type"] == "image/png"


async def test_classes_filter_and_unknown_label(served: Served) -> None:
    data = encode(sample_image())
    headers = {"Content-Type": "image/png"}
    kept = await served.client.post(
        "/segment?format=json&classes=red,dark", content=data, headers=headers
    )
    assert {s["label"] for s in kept.json()["segments"]} == {"red", "dark"}
    bad = await served.client.post(
        "/segment?format=json&classes=red,unicorn", content=data, headers=headers
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_parameter"
    assert "unicorn" in bad.json()["error"]["message"]


async def test_min_area_drops_small_polygons(served: Served) -> None:
    data = encode(sample_image())
    response = await served.client.post(
        "/segment?format=json&tolerance=0&min_area=100",
        content=data,
        headers={"Content-Type": "image/png"},
    )
    by_label = {s["label"]: s for s in response.json()["segments"]}
    assert by_label["red"]["polygons"] == []  # 8x8 = 64 px < 100
    assert by_label["red"]["area"] == 64  # the class's area is still reported
    assert len(by_label["bright"]["polygons"]) == 1


async def test_overlay_is_an_rgb_png_of_the_input_size(served: Served) -> None:
    image = sample_image()
    response = await served.client.post(
        "/segment?format=overlay", content=encode(image), headers={"Content-Type": "image/png"}
    )
    png, values = png_array(response.content)
    assert (png.mode, png.size) == ("RGB", (64, 48))
    grey = (slice(20, 30), slice(0, 10))  # class 0 here: untouched
    np.testing.assert_array_equal(values[grey], image[grey])
    assert not np.array_equal(values[:5, :5], image[:5, :5])  # class 1 is tinted


async def test_exif_orientation_gives_the_oriented_frame(served: Served) -> None:
    image = sample_image(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    response = await served.client.post(
        "/segment?format=json", content=data, headers={"Content-Type": "image/jpeg"}
    )
    assert (response.json()["width"], response.json()["height"]) == (48, 64)


async def test_server_timing_names_every_stage(served: Served) -> None:
    response = await served.client.post(
        "/segment", content=encode(sample_image()), headers={"Content-Type": "image/png"}
    )
    stages = dict(
        part.strip().split(";dur=") for part in response.headers["server-timing"].split(",")
    )
    assert set(stages) == {"decode", "queue", "infer", "encode"}
    assert all(float(v) >= 0 for v in stages.values())


async def test_the_instance_model_is_not_a_semantic_model(served: Served) -> None:
    data = encode(sample_image())
    for name in ("fake-inst", "nope"):
        response = await served.client.post(
            f"/segment?model={name}", content=data, headers={"Content-Type": "image/png"}
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"
        assert name in response.json()["error"]["message"]
    named = await served.client.post(
        "/segment?model=fake-sem", content=data, headers={"Content-Type": "image/png"}
    )
    assert named.status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "format=jpeg",
        "tolerance=-1",
        "tolerance=abc",
        "tolerance=nan",
        "min_area=inf",
        "min_area=-5",
    ],
)
async def test_invalid_query_values_are_422_naming_the_parameter(
    served: Served, query: str
) -> None:
    response = await served.client.post(
        f"/segment?{query}", content=encode(sample_image()), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert query.split("=")[0] in error["message"]
    assert served.semantic.batches == []  # rejected before reaching the model


async def test_json_response_is_compact_and_valid(served: Served) -> None:
    response = await served.client.post(
        "/segment?format=json",
        content=encode(sample_image()),
        headers={"Content-Type": "image/png"},
    )
    body = response.json()
    assert response.content == json.dumps(body, separators=(",", ":")).encode()  # compact


async def test_any_image_content_type_is_sniffed(served: Served) -> None:
    image = sample_image(40, 30)
    ok = await served.client.post(
        "/segment", content=encode(image, "JPEG", quality=95), headers={"Content-Type": "image/jpg"}
    )
    assert ok.status_code == 200
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    refused = await served.client.post(
        "/segment", content=gif.getvalue(), headers={"Content-Type": "image/gif"}
    )
    assert refused.status_code == 415
    assert "GIF" in refused.json()["error"]["message"]
