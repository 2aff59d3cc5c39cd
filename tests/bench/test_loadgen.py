"""The load generator against a tiny in-process ASGI app (no network, no model)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.loadgen import arrival_gaps, closed_loop, multipart_request, open_loop

SERVICE_S = 0.02


@dataclass
class Recorder:
    """What the app saw: arrivals, the most requests in flight at once, uploads."""

    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    uploads: list[tuple[bytes, str | None, dict[str, str]]] = field(default_factory=list)
    fail_every: int = 0
    lock: asyncio.Lock | None = None  # set: one request at a time, like a busy single worker


def make_app(recorder: Recorder, service_s: float = SERVICE_S) -> Starlette:
    async def segment(request: Request) -> Response:
        recorder.arrivals.append(time.perf_counter())
        recorder.in_flight += 1
        recorder.most_in_flight = max(recorder.most_in_flight, recorder.in_flight)
        try:
            form = await request.form()
            upload = form["image"]
            assert not isinstance(upload, str)
            recorder.uploads.append(
                (await upload.read(), upload.content_type, dict(request.query_params))
            )
            if recorder.lock is None:
                await asyncio.sleep(service_s)
            else:
                async with recorder.lock:
                    await asyncio.sleep(service_s)
        finally:
            recorder.in_flight -= 1
        if recorder.fail_every and len(recorder.arrivals) % recorder.fail_every == 0:
            return Response(b"busy", status_code=503)
        return Response(b"\x89PNG", media_type="image/png")

    return Starlette(routes=[Route("/segment", segment, methods=["POST"])])


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(recorder))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
        yield c


SEND = multipart_request("/segment", b"jpeg-bytes", params={"format": "png"})


async def test_closed_loop_keeps_exactly_concurrency_requests_in_flight(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    result = await closed_loop(client, SEND, concurrency=4, duration_s=0.3, min_requests=8)
    assert recorder.most_in_flight == 4
    assert result["mode"] == "closed"
    assert result["concurrency"] == 4
    assert result["ok"] == result["requests"] >= 8
    # 4 in flight, each at least SERVICE_S: the rate cannot beat 4 / SERVICE_S.
    assert result["throughput_rps"] <= 4 / SERVICE_S * 1.05
    assert result["throughput_rps"] == pytest.approx(result["ok"] / result["window_s"])
    assert result["latency_s"]["p50"] >= SERVICE_S
    assert result["errors"] == {}


async def test_closed_loop_window_spans_whole_gaps_between_answers() -> None:
    # One answer every 0.1 s. A window closed at a poll just after duration_s (0.25 s) would
    # hold 2 answers in ~0.26 s and read 7.7/s; from answer to answer it reads the true 10/s.
    slow = Recorder(lock=asyncio.Lock())
    transport = httpx.ASGITransport(app=make_app(slow, service_s=0.1))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
        result = await closed_loop(c, SEND, concurrency=4, duration_s=0.25, min_requests=1)
    assert result["throughput_rps"] == pytest.approx(10, rel=0.08)
    assert result["window_s"] >= 0.25


async def test_closed_loop_sends_the_upload_and_query(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    await closed_loop(client, SEND, concurrency=1, duration_s=0.0, min_requests=1)
    assert recorder.uploads[0] == (b"jpeg-bytes", "image/jpeg", {"format": "png"})


async def test_closed_loop_leaves_warmup_and_drained_requests_uncounted(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    result = await closed_loop(
        client, SEND, concurrency=3, duration_s=0.1, min_requests=1, warmup_s=0.1
    )
    served = len(recorder.arrivals)
    assert recorder.in_flight == 0  # every request was awaited before returning
    assert result["requests"] < served
    assert result["window_s"] >= 0.1


async def test_closed_loop_waits_for_min_requests(client: httpx.AsyncClient) -> None:
    result = await closed_loop(client, SEND, concurrency=1, duration_s=0.0, min_requests=7)
    assert result["requests"] >= 7


async def test_closed_loop_counts_errors_by_status(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    recorder.fail_every = 2
    result = await closed_loop(client, SEND, concurrency=2, duration_s=0.0, min_requests=10)
    assert result["errors"]["503"] >= 4
    assert result["ok"] + result["errors"]["503"] == result["requests"]


async def test_transport_failures_are_counted_not_raised() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = httpx.MockTransport(refuse)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
        result = await closed_loop(c, SEND, concurrency=2, duration_s=0.0, min_requests=3)
    assert result["ok"] == 0
    assert result["errors"]["transport"] == result["requests"] >= 3


def test_closed_loop_refuses_zero_concurrency() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        asyncio.run(closed_loop(None, SEND, concurrency=0, duration_s=1))  # type: ignore[arg-type]


async def test_open_loop_sends_at_the_fixed_rate_whatever_the_answers_take(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    rate = 100.0  # one request every 10 ms, each answered in 20 ms: they overlap
    result = await open_loop(client, SEND, rate=rate, duration_s=0.3, poisson=False)
    gaps = [b - a for a, b in zip(recorder.arrivals, recorder.arrivals[1:], strict=False)]
    assert statistics.mean(gaps) == pytest.approx(1 / rate, rel=0.25)
    assert recorder.most_in_flight >= 2  # an open loop does not wait for answers
    assert result["mode"] == "open"
    assert result["offered_rps"] == rate
    assert result["arrivals"] == "fixed"
    assert 25 <= result["requests"] <= 31
    assert result["ok"] == result["requests"]
    # A server that keeps up delivers the offered rate (the window is the sending window).
    assert result["throughput_rps"] == pytest.approx(rate, rel=0.2)


async def test_open_loop_shows_a_server_falling_behind(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    recorder.lock = asyncio.Lock()  # capacity 1 / SERVICE_S = 50/s, offered 200/s
    result = await open_loop(client, SEND, rate=200.0, duration_s=0.2, poisson=False)
    assert result["throughput_rps"] <= 1 / SERVICE_S * 1.1
    assert result["latency_s"]["max"] >= 0.5  # the queue grew: the last waited for ~40 others


async def test_open_loop_counts_only_requests_sent_after_warmup(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    result = await open_loop(client, SEND, rate=100.0, duration_s=0.1, warmup_s=0.1, poisson=False)
    assert len(recorder.arrivals) >= 19
    assert 8 <= result["requests"] <= 11


async def test_open_loop_sends_min_requests_even_at_a_low_rate(
    client: httpx.AsyncClient,
) -> None:
    result = await open_loop(
        client, SEND, rate=50.0, duration_s=0.001, min_requests=5, poisson=False
    )
    assert result["requests"] == 5


def test_poisson_gaps_have_the_rate_as_mean_and_are_seeded() -> None:
    gaps = arrival_gaps(4.0, poisson=True, seed=1)
    drawn = [next(gaps) for _ in range(20000)]
    assert statistics.mean(drawn) == pytest.approx(0.25, rel=0.03)
    assert statistics.stdev(drawn) == pytest.approx(0.25, rel=0.05)  # exponential: sd = mean
    again = arrival_gaps(4.0, poisson=True, seed=1)
    assert [next(again) for _ in range(5)] == drawn[:5]


def test_fixed_gaps_are_constant_and_rate_must_be_positive() -> None:
    gaps = arrival_gaps(8.0, poisson=False)
    assert [next(gaps) for _ in range(3)] == [0.125] * 3
    with pytest.raises(ValueError, match="rate"):
        next(arrival_gaps(0.0, poisson=False))
