"""Retries, errors, headers and deadlines of the client, against an httpx.MockTransport."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import httpx
import numpy as np
import pytest
import segserve_client._client as client_module
from PIL import Image
from segserve_client import AsyncClient, Client, SegserveError

Handler = Callable[[httpx.Request], httpx.Response]


def _png_map(height: int = 4, width: int = 5) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(height * width, dtype=np.uint8).reshape(height, width) % 3).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


SEGMENT_JSON = {"model": "m", "width": 5, "height": 4, "segments": []}
QUEUE_FULL = {"error": {"code": "queue_full", "message": "the queue of m is full (64)"}}
IMAGE = np.zeros((4, 5, 3), dtype=np.uint8)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's waits between retries, recorded instead of slept."""
    recorded: list[float] = []

    async def asleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(client_module, "_sleep", recorded.append)
    monkeypatch.setattr(client_module, "_asleep", asleep)
    return recorded


def _scripted(*steps: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering each request with the next step (the last one repeats)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = steps[min(len(seen), len(steps)) - 1]
        if isinstance(step, Exception):
            raise step
        return step

    return handle, seen


def _ok() -> httpx.Response:
    return httpx.Response(
        200, json=SEGMENT_JSON, headers={"Server-Timing": "decode;dur=1.5, infer;dur=20"}
    )


def _busy(retry_after: str | None = "2") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(503, json=QUEUE_FULL, headers=headers)


def test_503_waits_retry_after_then_succeeds(waits: list[float]) -> None:
    handle, seen = _scripted(_busy("2"), _busy("1"), _ok())
    with Client("http://s", transport=httpx.MockTransport(handle)) as client:
        result = client.segment(IMAGE)
    assert len(seen) == 3 and waits == [2.0, 1.0]
    assert result.model == "m" and result.timing == {"decode": 1.5, "infer": 20.0}


def test_retry_after_is_capped_by_max_wait_and_retries_are_bounded(waits: list[float]) -> None:
    handle, seen = _scripted(_busy("100"))
    with (
        Client("http://s", retries=2, max_wait=5, transport=httpx.MockTransport(handle)) as client,
        pytest.raises(SegserveError) as caught,
    ):
        client.segment(IMAGE)
    assert len(seen) == 3 and waits == [5.0, 5.0]
    error = caught.value
    assert (error.status, error.code, error.retry_after) == (503, "queue_full", 100.0)
    assert "full" in error.message


def test_503_without_retry_after_backs_off_exponentially(waits: list[float]) -> None:
    handle, seen = _scripted(_busy(None), _busy(None), _ok())
    with Client("http://s", backoff=1.0, transport=httpx.MockTransport(handle)) as client:
        client.segment(IMAGE)
    assert len(seen) == 3
    assert 0.8 <= waits[0] <= 1.2 and 1.6 <= waits[1] <= 2.4  # 1, 2 with 20% jitter


def test_a_connection_error_is_retried_then_succeeds(waits: list[float]) -> None:
    handle, seen = _scripted(httpx.ConnectError("refused"), _ok())
    with Client("http://s", backoff=0.5, transport=httpx.MockTransport(handle)) as client:
        assert client.segment(IMAGE).model == "m"
    assert len(seen) == 2 and len(waits) == 1 and waits[0] <= 0.6


def test_connection_errors_give_up_after_the_retries(waits: list[float]) -> None:
    handle, seen = _scripted(httpx.ConnectError("refused"))
    with (
        Client("http://s", retries=3, transport=httpx.MockTransport(handle)) as client,
        pytest.raises(SegserveError) as caught,
    ):
        client.segment(IMAGE)
    assert len(seen) == 4 and len(waits) == 3
    assert caught.value.status is None and caught.value.code == "connection_error"


def test_a_read_timeout_is_not_retried(waits: list[float]) -> None:
    handle, seen = _scripted(httpx.ReadTimeout("slow"))
    with (
        Client("http://s", transport=httpx.MockTransport(handle)) as client,
        pytest.raises(SegserveError) as caught,
    ):
        client.segment(IMAGE)
    assert len(seen) == 1 and caught.value.code == "timeout"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "bad_request"),
        (401, "unauthorized"),
        (404, "model_not_found"),
        (422, "invalid_parameter"),
    ],
)
def test_4xx_raise_at_once_with_the_error_body(waits: list[float], status: int, code: str) -> None:
    body = {"error": {"code": code, "message": f"why {status}"}}
    handle, seen = _scripted(httpx.Response(status, json=body))
    with (
        Client("http://s", transport=httpx.MockTransport(handle)) as client,
        pytest.raises(SegserveError) as caught,
    ):
        client.segment(IMAGE)
    assert len(seen) == 1 and waits == []
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        status,
        code,
        f"why {status}",
    )
    assert str(caught.value) == f"{status} {code}: why {status}"


def test_an_error_without_a_json_body() -> None:
    handle, _ = _scripted(httpx.Response(502, text="Bad Gateway"))
    with (
        Client("http://s", transport=httpx.MockTransport(handle)) as client,
        pytest.raises(SegserveError) as caught,
    ):
        client.segment(IMAGE)
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        502,
        "http_502",
        "Bad Gateway",
    )


def test_api_key_deadline_and_parameters_are_sent(waits: list[float]) -> None:
    handle, seen = _scripted(httpx.Response(200, content=_png_map()))
    with Client("http://s/", api_key="k3y", transport=httpx.MockTransport(handle)) as client:
        result = client.segment(
            IMAGE, format="png", classes=["a", "b"], tolerance=0, tile=64, overlap=8, deadline_s=5
        )
    request = seen[0]
    assert request.headers["x-api-key"] == "k3y"
    assert 4.0 < float(request.headers["x-request-timeout"]) <= 5.0
    assert request.url.path == "/segment"
    assert dict(request.url.params) == {
        "format": "png",
        "classes": "a,b",
        "tolerance": "0",
        "tile": "64",
        "overlap": "8",
    }
    assert b'name="image"' in request.content and b"\x89PNG" in request.content
    assert result.class_map is not None and result.class_map.shape == (4, 5)
    assert result.model is None and (result.width, result.height) == (5, 4)


def test_retries_stop_before_the_deadline(waits: list[float]) -> None:
    handle, seen = _scripted(_busy("10"))
    with (
        Client("http://s", transport=httpx.MockTransport(handle)) as client,
        pytest.raises(SegserveError) as caught,
    ):
        client.segment(IMAGE, deadline_s=3)
    assert len(seen) == 1 and waits == [] and caught.value.status == 503


def test_instances_defaults_to_rle_and_decodes_masks() -> None:
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 2:4] = True
    from pycocotools import mask as coco

    rle = coco.encode(np.asfortranarray(mask, dtype=np.uint8))
    body = {
        "model": "mr",
        "width": 5,
        "height": 4,
        "instances": [
            {
                "label": "dog",
                "class_id": 18,
                "score": 0.9,
                "bbox": [2, 1, 4, 3],
                "area": 4,
                "rle": {"size": [4, 5], "counts": rle["counts"].decode()},
            }
        ],
    }
    handle, seen = _scripted(httpx.Response(200, json=body))
    with Client("http://s", transport=httpx.MockTransport(handle)) as client:
        result = client.instances(IMAGE, score_threshold=0.3, max_instances=5)
    assert dict(seen[0].url.params) == {
        "format": "json",
        "score_threshold": "0.3",
        "max_instances": "5",
        "mask_encoding": "rle",
    }
    (instance,) = result.instances
    assert (instance.label, instance.class_id, instance.bbox) == ("dog", 18, (2.0, 1.0, 4.0, 3.0))
    np.testing.assert_array_equal(instance.mask, mask)


async def test_async_503_then_success_and_connection_error_then_success(waits: list[float]) -> None:
    handle, seen = _scripted(_busy("1"), httpx.ConnectError("reset"), _ok())
    async with AsyncClient(
        "http://s", api_key="k", backoff=0.25, transport=httpx.MockTransport(handle)
    ) as client:
        result = await client.segment(IMAGE, tolerance=0)
    assert result.model == "m" and len(seen) == 3
    assert waits[0] == 1.0 and 0.4 <= waits[1] <= 0.6  # the second retry: 2 x backoff
    assert all(r.headers["x-api-key"] == "k" for r in seen)


async def test_async_retries_are_bounded(waits: list[float]) -> None:
    handle, seen = _scripted(_busy("1"))
    async with AsyncClient("http://s", retries=1, transport=httpx.MockTransport(handle)) as client:
        with pytest.raises(SegserveError) as caught:
            await client.segment(IMAGE)
    assert len(seen) == 2 and waits == [1.0] and caught.value.code == "queue_full"


def test_an_unexpected_body_is_an_error() -> None:
    handle, _ = _scripted(httpx.Response(200, content=b"<html>proxy</html>"))
    with (
        Client("http://s", transport=httpx.MockTransport(handle)) as client,
        pytest.raises(SegserveError) as caught,
    ):
        client.segment(IMAGE, format="png")
    assert caught.value.code == "unexpected_response"
    assert json.dumps(caught.value.to_dict())  # serialisable for reports
