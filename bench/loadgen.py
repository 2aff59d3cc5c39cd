"""An async httpx load generator: a closed loop at fixed concurrency and an open loop at a rate.

Closed loop: ``concurrency`` workers each send a request, wait for its answer, and send the
next. A warm-up runs first (until every worker has had one answer and ``warmup_s`` passed), so
the server is in its steady state (queues full, lazy initialisation done) when measurement
starts. The measurement window runs from one answer to a later one, at least ``duration_s``
and until ``min_requests`` answers came back in it; throughput is the answers after its first
up to its last, divided by its length. Ending the window between two answers instead would
count a fraction of a gap with no answer in it: with ~10 answers a window (a 1 s model over
12 s) that reads up to 10% low, by chance. Requests still in flight when the window closes
are awaited (so the next point starts on an idle server) but not counted.

Open loop: requests are sent at a fixed rate (Poisson arrivals or a fixed interval) whatever the
server does, as independent clients would; latency then includes queueing behind earlier
requests. Requests sent during the warm-up are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import httpx

from bench.stats import TRANSPORT_ERROR, Sample, summarise

Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]

_POLL_S = 0.02
_RETRY_PAUSE_S = 0.05  # after a transport error, so a dead server is not hammered in a loop


def multipart_request(
    path: str,
    image: bytes,
    *,
    params: Mapping[str, str] | None = None,
    filename: str = "image.jpg",
    content_type: str = "image/jpeg",
    field: str = "image",
) -> Send:
    """A request that uploads ``image`` as multipart form field ``field`` to ``path``."""
    query = dict(params or {})

    def send(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return client.post(path, params=query, files={field: (filename, image, content_type)})

    return send


async def timed(client: httpx.AsyncClient, send: Send) -> Sample:
    """Send one request and read its whole body; a failure to get a response is status 0."""
    started = time.perf_counter()
    try:
        response = await send(client)
        await response.aread()
        status = response.status_code
    except httpx.HTTPError:
        status = TRANSPORT_ERROR
    return Sample(started, time.perf_counter(), status)


async def closed_loop(
    client: httpx.AsyncClient,
    send: Send,
    *,
    concurrency: int,
    duration_s: float,
    min_requests: int = 1,
    warmup_s: float = 0.0,
    images_per_request: int = 1,
) -> dict[str, Any]:
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    samples: list[Sample] = []
    answered = [0] * concurrency
    stop = asyncio.Event()
    progress = asyncio.Event()  # set at every answer: conditions are checked then

    async def worker(index: int) -> None:
        while not stop.is_set():
            sample = await timed(client, send)
            samples.append(sample)
            answered[index] += 1
            progress.set()
            if sample.status == TRANSPORT_ERROR:
                await asyncio.sleep(_RETRY_PAUSE_S)

    async def wait_until(condition: Callable[[], bool]) -> None:
        # Wake at every answer, and every _POLL_S for the time-based part of a condition.
        while not condition():
            progress.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(progress.wait(), timeout=_POLL_S)

    workers = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    began = time.perf_counter()
    # Warm-up: every worker has had an answer (the pipeline is full) and warmup_s has passed.
    await wait_until(lambda: min(answered) > 0 and time.perf_counter() - began >= warmup_s)
    # Both ends of the window are answers, so it spans whole gaps between answers.
    marker = len(samples)
    await wait_until(lambda: len(samples) > marker)
    window_start = max(s.ended for s in samples)

    def window_done() -> bool:
        last = max(s.ended for s in samples)
        if last - window_start < duration_s:
            return False
        return sum(1 for s in samples if s.ended > window_start) >= min_requests

    await wait_until(window_done)
    window_end = max(s.ended for s in samples)
    stop.set()
    await asyncio.gather(*workers)  # drain: the next point starts on an idle server
    measured = [s for s in samples if window_start < s.ended <= window_end]
    result = summarise(measured, window_end - window_start, images_per_request)
    return {"mode": "closed", "concurrency": concurrency, **result}


def arrival_gaps(rate: float, *, poisson: bool, seed: int = 0) -> Iterator[float]:
    """Seconds between consecutive requests, endlessly: exponential (Poisson) or constant."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    rng = random.Random(seed)
    while True:
        yield rng.expovariate(rate) if poisson else 1.0 / rate


async def open_loop(
    client: httpx.AsyncClient,
    send: Send,
    *,
    rate: float,
    duration_s: float,
    warmup_s: float = 0.0,
    min_requests: int = 1,
    poisson: bool = True,
    seed: int = 0,
    images_per_request: int = 1,
) -> dict[str, Any]:
    began = time.perf_counter()
    window_start = began + warmup_s
    warmup: list[asyncio.Task[Sample]] = []
    counted: list[asyncio.Task[Sample]] = []  # sent at or after window_start
    due = began
    for gap in arrival_gaps(rate, poisson=poisson, seed=seed):
        due += gap
        # Arrivals go on for the whole duration, and until min_requests were sent in the
        # window (at a low rate a short window could otherwise hold none).
        if due - window_start >= duration_s and len(counted) >= min_requests:
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        task = asyncio.create_task(timed(client, send))
        (counted if due >= window_start else warmup).append(task)
    await asyncio.gather(*warmup)
    measured = list(await asyncio.gather(*counted))
    # The window ends at the first arrival not sent (`due`), or at the last counted answer if
    # that came later: a server that keeps up shows the offered rate, one that falls behind
    # shows a lower throughput and a long latency tail.
    window_end = max([due, *(s.ended for s in measured)])
    result = summarise(measured, max(window_end - window_start, 1e-9), images_per_request)
    return {
        "mode": "open",
        "offered_rps": rate,
        "arrivals": "poisson" if poisson else "fixed",
        **result,
    }
