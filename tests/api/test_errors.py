"""Bad input and overload get the status docs/api.md names, in the JSON error shape."""

from __future__ import annotations

import asyncio
import base64
import io
import threading

import numpy as np
import pytest
from PIL import Image

from app.errors import InvalidParameter
from tests.api.conftest import Served, encode, sample_image
from tests.fakes import semantic_truth


def assert_error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error  # type: ignore[no-any-return]


async def still_serves(served: Served) -> None:
    image = sample_image(32, 24)
    response = await served.client.post(
        "/segment", content=encode(image), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200
    np.testing.assert_array_equal(
        np.array(Image.open(io.BytesIO(response.content))), semantic_truth(image)
    )


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"", "headers": {"Content-Type": "image/png"}}, 400, "bad_request"),
        ({"files": {"other": ("a.png", b"x")}}, 400, "bad_request"),
        (
            {
                "content": b"--x\r\nbroken",
                "headers": {"Content-Type": "multipart/form-data; boundary=x"},
            },
            400,
            "bad_request",
        ),
        (
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "bad_request",
        ),
        ({"json": {"picture": "abc"}}, 400, "bad_request"),
        ({"json": {"image": "***"}}, 400, "bad_request"),
        (
            {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            {"content": b"just some text", "headers": {"Content-Type": "image/png"}},
            415,
            "unsupported_media_type",
        ),
        (
            {"content": gif_bytes(), "headers": {"Content-Type": "application/octet-stream"}},
            415,
            "unsupported_media_type",
        ),
        (
            {"json": {"image": base64.b64encode(gif_bytes()).decode()}},
            415,
            "unsupported_media_type",
        ),
        (
            {"content": encode(sample_image())[:60], "headers": {"Content-Type": "image/png"}},
            422,
            "undecodable_image",
        ),
    ],
)
async def test_bad_input_gets_its_status_and_the_server_keeps_serving(
    served: Served,
    kwargs: dict,
    status: int,
    code: str,  # type: ignore[type-arg]
) -> None:
    assert_error(await served.client.post("/segment", **kwargs), status, code)
    assert served.semantic.batches == []
    await still_serves(served)


@pytest.mark.parametrize("settings_overrides", [{"max_body_bytes": 1000}])
async def test_body_over_the_cap_is_413(served: Served) -> None:
    data = encode(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert len(data) > 1000
    error = assert_error(
        await served.client.post("/segment", content=data, headers={"Content-Type": "image/png"}),
        413,
        "payload_too_large",
    )
    assert "1000" in error["message"]
    assert_error(
        await served.client.post("/segment", files={"image": ("a", data)}), 413, "payload_too_large"
    )


@pytest.mark.parametrize("settings_overrides", [{"max_image_pixels": 1000}])
async def test_image_over_the_pixel_cap_is_413(served: Served) -> None:
    response = await served.client.post(
        "/segment", content=encode(sample_image(64, 48)), headers={"Content-Type": "image/png"}
    )
    error = assert_error(response, 413, "image_too_large")
    assert "1000" in error["message"] and "3072" in error["message"]


@pytest.mark.parametrize("settings_overrides", [{"max_network_pixels": 2000}])
async def test_an_image_too_big_for_the_network_is_413(served: Served) -> None:
    response = await served.client.post(
        "/segment", content=encode(sample_image(64, 48)), headers={"Content-Type": "image/png"}
    )
    error = assert_error(response, 413, "image_too_large")
    assert "2000" in error["message"] and "fake-sem" in error["message"]
    assert served.semantic.batches == []


async def test_unknown_route_and_method_use_the_error_shape(served: Served) -> None:
    assert_error(await served.client.get("/nope"), 404, "not_found")
    assert_error(await served.client.get("/segment"), 405, "method_not_allowed")


async def test_a_model_fault_is_a_generic_500_and_the_service_recovers(served: Served) -> None:
    served.semantic.fail_with = RuntimeError("CUDA error: secret internal detail")
    response = await served.client.post(
        "/segment", content=encode(sample_image()), headers={"Content-Type": "image/png"}
    )
    error = assert_error(response, 500, "internal_error")
    assert "secret" not in error["message"]
    served.semantic.fail_with = None
    await still_serves(served)


async def test_a_service_error_from_the_model_keeps_its_status(served: Served) -> None:
    served.semantic.fail_with = InvalidParameter("image too small for this model")
    response = await served.client.post(
        "/segment", content=encode(sample_image()), headers={"Content-Type": "image/png"}
    )
    assert_error(response, 422, "invalid_parameter")


@pytest.mark.parametrize("settings_overrides", [{"max_queue_size": 2}])
async def test_a_full_queue_answers_503_with_retry_after_at_once(served: Served) -> None:
    served.semantic.gate = threading.Event()
    data = encode(sample_image())

    async def call():  # type: ignore[no-untyped-def]
        return await served.client.post(
            "/segment", content=data, headers={"Content-Type": "image/png"}
        )

    # One in the model (held by the gate), two queued: the queue is full.
    held = [asyncio.create_task(call())]
    assert await asyncio.to_thread(served.semantic.entered.wait, 5)
    held += [asyncio.create_task(call()) for _ in range(2)]
    for _ in range(500):
        if served.app_queue_depth() == 2:
            break
        await asyncio.sleep(0.01)
    assert served.app_queue_depth() == 2
    rejected = await asyncio.wait_for(call(), 5)
    assert_error(rejected, 503, "queue_full")
    assert int(rejected.headers["retry-after"]) >= 1
    served.semantic.gate.set()
    assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]


@pytest.mark.parametrize("settings_overrides", [{"request_timeout_s": 0.2}])
async def test_a_request_past_its_deadline_is_504(served: Served) -> None:
    served.semantic.gate = threading.Event()
    response = await served.client.post(
        "/segment", content=encode(sample_image()), headers={"Content-Type": "image/png"}
    )
    served.semantic.gate.set()
    error = assert_error(response, 504, "deadline_exceeded")
    assert "0.2" in error["message"]
