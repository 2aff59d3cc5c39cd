"""Many images in one request: one JSON entry per image, in order; one bad image fails alone."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.api.conftest import Served, encode, sample_image
from tests.fakes import semantic_truth


def _images() -> list[np.ndarray]:
    return [sample_image(64, 48), sample_image(40, 30), sample_image(33, 65)]


def _parts(images: list[np.ndarray]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("image", (f"{k}.png", encode(image))) for k, image in enumerate(images)]


async def _single(served: Served, path: str, image: np.ndarray, query: str) -> Any:
    response = await served.client.post(f"{path}{query}", files={"image": ("a.png", encode(image))})
    assert response.status_code == 200, response.text
    return response


async def test_multipart_parts_answer_in_order_as_single_requests_do(served: Served) -> None:
    images = _images()
    response = await served.client.post("/segment?format=json", files=_parts(images))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    results = response.json()["results"]
    assert len(results) == 3
    for image, entry in zip(images, results, strict=True):
        single = await _single(served, "/segment", image, "?format=json")
        assert entry == single.json()
    assert 'images;desc="3"' in response.headers["server-timing"]


async def test_json_images_with_a_broken_one_fail_it_alone(served: Served) -> None:
    images = _images()
    encoded = [base64.b64encode(encode(image)).decode() for image in images]
    body = {"images": [encoded[0], base64.b64encode(b"not an image").decode(), "%%%", encoded[2]]}
    response = await served.client.post("/segment?format=json", json=body)
    assert response.status_code == 200, response.text
    first, broken, not_base64, last = response.json()["results"]
    assert first["height"] == 48 and last["height"] == 65
    assert broken["status"] in (415, 422) and broken["error"]["code"]
    assert not_base64 == {
        "error": {"code": "bad_request", "message": not_base64["error"]["message"]},
        "status": 400,
    }
    assert "images[2]" in not_base64["error"]["message"]


@pytest.mark.parametrize("fmt", ["png", "overlay"])
async def test_png_outputs_come_as_base64_entries(served: Served, fmt: str) -> None:
    images = _images()
    response = await served.client.post(f"/segment?format={fmt}", files=_parts(images))
    assert response.status_code == 200, response.text
    for image, entry in zip(images, response.json()["results"], strict=True):
        assert entry["media_type"] == "image/png"
        data = base64.b64decode(entry["data"])
        single = await _single(served, "/segment", image, f"?format={fmt}")
        assert data == single.content
        if fmt == "png":
            np.testing.assert_array_equal(
                np.array(Image.open(io.BytesIO(data))), semantic_truth(image)
            )


async def test_instances_answer_many_too(served: Served) -> None:
    images = _images()
    response = await served.client.post("/instances?mask_encoding=rle", files=_parts(images))
    assert response.status_code == 200, response.text
    for image, entry in zip(images, response.json()["results"], strict=True):
        single = await _single(served, "/instances", image, "?mask_encoding=rle")
        assert entry == single.json()


async def test_the_images_batch_together(served: Served) -> None:
    served.semantic.batches.clear()
    images = [sample_image(64, 48)] * 4  # one network shape
    response = await served.client.post("/segment?format=json", files=_parts(images))
    assert response.status_code == 200
    assert max(served.semantic.batches) > 1, served.semantic.batches


@pytest.mark.parametrize("settings_overrides", [{"max_queue_size": 2}])
async def test_a_request_the_queue_cannot_hold_whole_is_refused_at_once(served: Served) -> None:
    response = await served.client.post("/segment?format=json", files=_parts(_images()))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_full"
    assert "brings 3 images" in response.json()["error"]["message"]
    assert response.headers["retry-after"]
    assert served.semantic.batches == []  # nothing of it ran


async def test_the_deadline_covers_the_whole_request(served: Served) -> None:
    served.semantic.gate = threading.Event()  # hold every batch
    call = served.client.post(
        "/segment?format=json", files=_parts(_images()), headers={"X-Request-Timeout": "0.3"}
    )
    response = await asyncio.wait_for(call, 10)
    served.semantic.gate.set()
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    # The service answers the next request.
    assert (await _single(served, "/segment", sample_image(), "")).status_code == 200


async def test_an_empty_images_list_is_400(served: Served) -> None:
    response = await served.client.post("/segment", json={"images": []})
    assert response.status_code == 400
    assert "empty" in response.json()["error"]["message"]


async def test_one_part_stays_a_single_request(served: Served) -> None:
    image = sample_image()
    response = await served.client.post("/segment", files=_parts([image]))
    assert response.headers["content-type"] == "image/png"
