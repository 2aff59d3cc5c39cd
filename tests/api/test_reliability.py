"""Admission control, deadlines, disconnects, fault isolation and CORS, through the real app.

Faults are injected through the seam in :mod:`app.faults` (the points production code
passes), never by patching internals. Concurrency is arranged with the fake model's gate: a
blocker request holds the model while the others queue, so what forms a batch is known.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from app import faults
from app.errors import UndecodableImage
from tests.api.conftest import Served, encode, sample_image
from tests.fakes import semantic_truth

PNG = {"Content-Type": "image/png"}
BLOCKER_SHAPE = (16, 16, 3)


@pytest.fixture(autouse=True)
async def production_errors(served: Served) -> AsyncIterator[None]:
    """A client that gets the 500 a real server sends for an unexpected error.

    The default test transport re-raises the app's exceptions instead, which hides what a
    client sees.
    """
    transport = httpx.ASGITransport(app=served.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        served.client = client
        yield


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return str(error["message"])


def class_map(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array(Image.open(io.BytesIO(response.content)))


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def hold_model(served: Served) -> asyncio.Task[httpx.Response]:
    """Start a blocker request and wait until it sits in the (gated) fake model."""
    served.semantic.gate = threading.Event()
    blocker = asyncio.create_task(segment(served, encode(np.zeros(BLOCKER_SHAPE, np.uint8))))
    assert await asyncio.to_thread(served.semantic.entered.wait, 5)
    return blocker


def segment(served: Served, data: bytes, **headers: str) -> Awaitable[httpx.Response]:
    return served.client.post("/segment", content=data, headers={**PNG, **headers})


def marked(seed: int) -> np.ndarray:
    """A sample image told apart by ``seed`` dark pixels in its first row.

    Same shape, so marked images share batches; different class maps, so a result given to
    the wrong request shows.
    """
    image = sample_image()
    image[0, :seed] = 5
    return image


def has_mark(seed: int) -> Callable[[Any], bool]:
    return lambda image: int((image[0, :, 0] == 5).sum()) == seed


async def assert_ready(served: Served) -> None:
    assert (await served.client.get("/readyz")).status_code == 200


# Deadlines --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "", "1e400"])
async def test_a_request_timeout_that_is_not_a_positive_number_is_422(
    served: Served, value: str
) -> None:
    response = await segment(served, encode(sample_image()), **{"X-Request-Timeout": value})
    message = assert_error(response, 422, "invalid_parameter")
    assert "X-Request-Timeout" in message and repr(value) in message
    assert served.semantic.params == []  # refused before the model


@pytest.mark.parametrize("settings_overrides", [{"request_timeout_s": 30}])
async def test_a_client_deadline_shortens_the_servers_and_expired_requests_never_run(
    served: Served,
) -> None:
    blocker = await hold_model(served)
    started = time.perf_counter()
    response = await segment(served, encode(sample_image()), **{"X-Request-Timeout": "0.2"})
    elapsed = time.perf_counter() - started
    message = assert_error(response, 504, "deadline_exceeded")
    assert "0.2 s (X-Request-Timeout)" in message
    assert 0.2 <= elapsed < 2
    served.semantic.gate.set()  # type: ignore[union-attr]
    assert (await blocker).status_code == 200
    await assert_ready(served)
    ok = await segment(served, encode(sample_image(20, 20)), **{"X-Request-Timeout": "10"})
    assert ok.status_code == 200
    # The blocker and the last request ran; the expired one never reached the model.
    assert served.semantic.batches == [1, 1]


@pytest.mark.parametrize("settings_overrides", [{"request_timeout_s": 0.3}])
async def test_a_longer_client_deadline_is_capped_at_the_servers(served: Served) -> None:
    blocker = await hold_model(served)
    response = await segment(served, encode(sample_image()), **{"X-Request-Timeout": "100"})
    message = assert_error(response, 504, "deadline_exceeded")
    assert "0.3 s (SEGSERVE_REQUEST_TIMEOUT_S)" in message
    served.semantic.gate.set()  # type: ignore[union-attr]
    await blocker


# Disconnects ------------------------------------------------------------------------------


async def call_asgi(served: Served, body: bytes, gone: asyncio.Event) -> list[dict[str, Any]]:
    """POST /segment straight through ASGI; the client disconnects when ``gone`` is set."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/segment",
        "raw_path": b"/segment",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"image/png"), (b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await served.app(scope, receive, send)
    return sent


async def test_a_client_that_disconnects_while_queued_costs_no_model_time(
    served: Served,
) -> None:
    blocker = await hold_model(served)
    gone = asyncio.Event()
    with faults.injected("preprocess", match=has_mark(7)) as reached_model:
        abandoned = asyncio.create_task(call_asgi(served, encode(marked(7)), gone))
        await until(lambda: served.app_queue_depth() == 1, "the request to queue")
        gone.set()
        # The handler gives up at once, while the model is still held by the blocker.
        sent = await asyncio.wait_for(abandoned, 5)
        assert sent[0]["status"] == 499
        served.semantic.gate.set()  # type: ignore[union-attr]
        assert (await blocker).status_code == 200
        after = await segment(served, encode(sample_image()))
        np.testing.assert_array_equal(class_map(after), semantic_truth(sample_image()))
    assert reached_model.fired == 0
    assert served.semantic.batches == [1, 1]  # the blocker and the last request only


async def test_a_connected_client_is_not_mistaken_for_a_disconnected_one(served: Served) -> None:
    gone = asyncio.Event()  # never set: the client stays
    sent = await asyncio.wait_for(call_asgi(served, encode(sample_image()), gone), 5)
    assert sent[0]["status"] == 200


# Fault isolation --------------------------------------------------------------------------


async def queue_marked(served: Served, seeds: list[int]) -> list[httpx.Response]:
    """Queue one request per seed behind a blocker so they form one batch; their answers."""
    blocker = await hold_model(served)
    calls = [asyncio.create_task(segment(served, encode(marked(s)))) for s in seeds]
    await until(lambda: served.app_queue_depth() == len(seeds), "the requests to queue")
    served.semantic.gate.set()  # type: ignore[union-attr]
    assert (await blocker).status_code == 200
    return list(await asyncio.gather(*calls))


def assert_correct(responses: list[httpx.Response], seeds: list[int], bad: int | None) -> None:
    for seed, response in zip(seeds, responses, strict=True):
        if seed != bad:
            np.testing.assert_array_equal(class_map(response), semantic_truth(marked(seed)))


async def test_a_decode_failure_fails_only_its_request(served: Served) -> None:
    poison = encode(marked(7))
    with faults.injected("decode", lambda: RuntimeError("boom"), match=poison.__eq__) as fault:
        responses = await asyncio.gather(
            *(segment(served, encode(marked(s))) for s in (1, 7, 2, 3))
        )
    assert fault.fired == 1
    message = assert_error(responses[1], 500, "internal_error")
    assert "boom" not in message  # nothing internal leaks
    assert_correct(responses, [1, 7, 2, 3], bad=7)
    await assert_ready(served)


async def test_a_decode_service_error_keeps_its_status(served: Served) -> None:
    with faults.injected("decode", lambda: UndecodableImage("truncated image"), times=1):
        response = await segment(served, encode(sample_image()))
    assert_error(response, 422, "undecodable_image")
    await assert_ready(served)


async def test_a_preprocess_failure_in_a_batch_fails_only_its_request(served: Served) -> None:
    seeds = [1, 7, 2, 3]
    with faults.injected("preprocess", lambda: ValueError("bad image"), match=has_mark(7)) as f:
        responses = await queue_marked(served, seeds)
    assert_error(responses[1], 500, "internal_error")
    assert_correct(responses, seeds, bad=7)
    # The batch of four failed; its items were retried one by one; only the poison failed.
    assert f.fired == 2
    assert served.semantic.batches == [1, 1, 1, 1]
    await assert_ready(served)


async def test_a_whole_batch_out_of_memory_is_retried_one_by_one(served: Served) -> None:
    seeds = [1, 2, 3, 4]
    oom = torch.OutOfMemoryError
    with faults.injected(
        "infer_batch", lambda: oom("CUDA out of memory"), match=lambda images: len(images) > 1
    ) as fault:
        responses = await queue_marked(served, seeds)
    assert fault.fired == 1
    assert_correct(responses, seeds, bad=None)
    assert served.semantic.batches == [1, 1, 1, 1, 1]  # blocker, then each alone
    await assert_ready(served)


async def test_a_batch_that_fails_every_way_fails_each_request_after_its_retry(
    served: Served,
) -> None:
    def not_the_blocker(images: list[np.ndarray]) -> bool:
        return images[0].shape != BLOCKER_SHAPE

    oom = torch.OutOfMemoryError
    with faults.injected("infer_batch", lambda: oom("OOM"), match=not_the_blocker) as fault:
        responses = await queue_marked(served, [1, 2])
    for response in responses:
        assert_error(response, 500, "internal_error")
    assert fault.fired == 3  # the batch of two, then each of the two alone
    await assert_ready(served)
    np.testing.assert_array_equal(
        class_map(await segment(served, encode(marked(5)))), semantic_truth(marked(5))
    )


async def test_an_encode_failure_fails_only_its_request(served: Served) -> None:
    poison = semantic_truth(marked(7))

    def is_poison(result: Any) -> bool:
        return bool(np.array_equal(result.class_map, poison))

    seeds = [1, 7, 2, 3]
    with faults.injected("encode", lambda: MemoryError(), match=is_poison) as fault:
        responses = await queue_marked(served, seeds)
    assert fault.fired == 1
    assert_error(responses[1], 500, "internal_error")
    assert_correct(responses, seeds, bad=7)
    await assert_ready(served)


async def test_unknown_fault_points_and_actions_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault point 'decoder'"):
        faults.arm("decoder", faults.Fault())  # type: ignore[arg-type]
    assert set(faults.parse_setting("infer_batch:delay=0.5, encode:error")) == {
        "infer_batch",
        "encode",
    }
    for bad in ("decoder:error", "encode:explode", "encode:delay=-1", "encode:delay=x"):
        with pytest.raises(ValueError, match="fault"):
            faults.parse_setting(bad)


@pytest.mark.parametrize("settings_overrides", [{"debug_faults": "encode:error"}])
async def test_the_debug_setting_arms_points_for_a_running_server(served: Served) -> None:
    try:
        assert_error(await segment(served, encode(sample_image())), 500, "internal_error")
    finally:
        faults.disarm("encode")
    assert (await segment(served, encode(sample_image()))).status_code == 200


# Overload ---------------------------------------------------------------------------------

QUEUE = 8


@pytest.mark.parametrize("settings_overrides", [{"max_queue_size": QUEUE, "retry_after_s": 2}])
async def test_at_three_times_capacity_every_rejection_is_a_fast_503(served: Served) -> None:
    blocker = await hold_model(served)  # the model is busy: nothing leaves the queue
    capacity = QUEUE + served.semantic.spec.batching.max_batch_size  # queued + one batch
    image = sample_image(24, 24)
    data = encode(image)

    async def timed() -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = await segment(served, data)
        return response, time.perf_counter() - started

    queued = [asyncio.create_task(timed()) for _ in range(QUEUE)]
    await until(lambda: served.app_queue_depth() == QUEUE, "the queue to fill")
    # The rest of three times capacity arrives at once, while the queue is full. Each is
    # answered while the model is still held, so none waited for it; the bound on the time
    # is loose because client and server share this loop (tests/e2e measures a real server).
    extra = await asyncio.gather(*(timed() for _ in range(3 * capacity - QUEUE)))
    for response, seconds in extra:
        assert_error(response, 503, "queue_full")
        assert response.headers["retry-after"] == "2"
        assert seconds < 0.25, f"a rejection took {seconds * 1000:.0f} ms"
    assert served.semantic.batches == []  # the blocker is still in the model
    served.semantic.gate.set()  # type: ignore[union-attr]
    assert (await blocker).status_code == 200
    for response, _ in await asyncio.gather(*queued):  # the admitted ones lost nothing
        np.testing.assert_array_equal(class_map(response), semantic_truth(image))


# CORS -------------------------------------------------------------------------------------

PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,x-api-key,x-request-timeout",
}


async def test_cors_is_off_by_default(served: Served) -> None:
    preflight = await served.client.options("/segment", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    response = await segment(served, encode(sample_image()), Origin="https://app.example")
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "settings_overrides", [{"cors_origins": "https://app.example, https://b.example"}]
)
async def test_cors_allows_only_the_configured_origins(served: Served) -> None:
    preflight = await served.client.options("/segment", headers=PREFLIGHT)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-timeout" in preflight.headers["access-control-allow-headers"].lower()
    response = await segment(served, encode(sample_image()), Origin="https://app.example")
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert "server-timing" in response.headers["access-control-expose-headers"].lower()
    other = await served.client.options(
        "/segment", headers={**PREFLIGHT, "Origin": "https://evil.example"}
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


async def test_cors_origins_read_as_a_json_list_or_comma_separated() -> None:
    from tests.api.conftest import make_settings

    listed = json.dumps(["https://a.example", "http://b:3000"])
    assert make_settings(cors_origins=listed).cors_origins == ["https://a.example", "http://b:3000"]
    assert make_settings(cors_origins=" https://a.example ,").cors_origins == ["https://a.example"]
    assert make_settings().cors_origins == []
    with pytest.raises(ValueError, match="not a JSON list"):
        make_settings(cors_origins="[https://a.example")
