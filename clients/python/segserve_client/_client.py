"""``Client`` (sync) and ``AsyncClient``: requests, retries, and many images at once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx

from segserve_client._errors import SegserveError, retry_after_s
from segserve_client._images import ImageInput, describe, expand_inputs, image_payload
from segserve_client._results import (
    InstancesResult,
    Result,
    SegmentResult,
    Task,
    parse_body,
    parse_entry,
    parse_server_timing,
)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 330.0  # a little over the service's default deadline (300 s)
# Transport failures worth another try: no connection, or it broke before an answer came.
# Read timeouts are not retried: the service is busy with the request, and a second one
# would only add to its queue.
_RETRYABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)

MaskEncoding = Literal["rle", "polygons", "both"]


def _sleep(seconds: float) -> None:  # the waits between retries (tests replace these two)
    time.sleep(seconds)


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass
class Prediction:
    """One image of :meth:`AsyncClient.predict_many`: its result, or the error it got."""

    index: int  # position in the expanded input list
    source: str  # the path, or "<bytes #i>" / "<array #i>" / "<PIL image #i>"
    result: Result | None = None
    error: SegserveError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _query(params: dict[str, Any]) -> dict[str, str]:
    """Query parameters as the service reads them; None means "the service's default"."""
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        if key == "classes" and not isinstance(value, str):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        out[key] = str(value)
    return out


def _segment_query(
    model: str | None,
    format: str,
    classes: str | Sequence[str] | None,
    tolerance: float | None,
    min_area: float | None,
    tile: int | None,
    overlap: int | None,
) -> dict[str, str]:
    return _query(
        {
            "model": model,
            "format": format,
            "classes": classes,
            "tolerance": tolerance,
            "min_area": min_area,
            "tile": tile,
            "overlap": overlap,
        }
    )


def _instances_query(
    model: str | None,
    format: str,
    score_threshold: float | None,
    mask_threshold: float | None,
    max_instances: int | None,
    mask_encoding: str | None,
    classes: str | Sequence[str] | None,
    tolerance: float | None,
    min_area: float | None,
    tile: int | None,
    overlap: int | None,
) -> dict[str, str]:
    return _query(
        {
            "model": model,
            "format": format,
            "score_threshold": score_threshold,
            "mask_threshold": mask_threshold,
            "max_instances": max_instances,
            "mask_encoding": mask_encoding,
            "classes": classes,
            "tolerance": tolerance,
            "min_area": min_area,
            "tile": tile,
            "overlap": overlap,
        }
    )


_PATHS: dict[str, str] = {"semantic": "/segment", "instance": "/instances"}
_SEGMENT_KEYS = frozenset(
    {"model", "format", "classes", "tolerance", "min_area", "tile", "overlap"}
)
_INSTANCE_KEYS = _SEGMENT_KEYS | {
    "score_threshold",
    "mask_threshold",
    "max_instances",
    "mask_encoding",
}


def _task_query(task: str, params: dict[str, Any]) -> dict[str, str]:
    if task not in _PATHS:
        raise ValueError(f"task is 'semantic' or 'instance', not {task!r}")
    allowed = _SEGMENT_KEYS if task == "semantic" else _INSTANCE_KEYS
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise TypeError(f"unknown parameter(s) for task {task!r}: {', '.join(unknown)}")
    params = dict(params)
    params.setdefault("format", "json")
    if task == "instance":
        params.setdefault("mask_encoding", "rle")
    return _query(params)


class _Policy:
    """Settings both clients share, and the retry decisions."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float | httpx.Timeout,
        retries: int,
        backoff: float,
        max_wait: float,
        headers: dict[str, str] | None,
    ) -> None:
        if retries < 0 or backoff < 0 or max_wait < 0:
            raise ValueError("retries, backoff and max_wait must not be negative")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = (
            timeout
            if isinstance(timeout, httpx.Timeout)
            else httpx.Timeout(timeout, connect=min(timeout, 10.0))
        )
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.headers = dict(headers or {})
        if api_key:
            self.headers["X-API-Key"] = api_key

    def request_headers(self, started: float, deadline_s: float | None) -> dict[str, str]:
        if deadline_s is None:
            return {}
        remaining = deadline_s - (time.monotonic() - started)
        if remaining <= 0:
            raise SegserveError(
                f"the deadline of {deadline_s:g} s passed before the request could be sent",
                code="deadline_exceeded",
            )
        return {"X-Request-Timeout": f"{remaining:.3f}"}

    def backoff_s(self, attempt: int) -> float:
        """Exponential backoff with a little jitter, capped at ``max_wait``."""
        return min(self.max_wait, self.backoff * 2.0**attempt * random.uniform(0.8, 1.2))

    def wait_before_retry(
        self,
        attempt: int,
        started: float,
        deadline_s: float | None,
        response: httpx.Response | None,
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up.

        A 503 waits its ``Retry-After`` (capped at ``max_wait``), a broken connection the
        backoff; at most ``retries`` retries, and none that would start past the deadline.
        """
        if attempt >= self.retries:
            return None
        wait = None
        if response is not None:
            wait = retry_after_s(response)
            wait = min(wait, self.max_wait) if wait is not None else None
        if wait is None:
            wait = self.backoff_s(attempt)
        if deadline_s is not None and time.monotonic() - started + wait >= deadline_s:
            return None
        return wait


def _connection_error(exc: Exception) -> SegserveError:
    if isinstance(exc, httpx.TimeoutException):
        return SegserveError(f"no answer in time: {exc!r}", code="timeout")
    return SegserveError(f"connection failed: {exc!r}", code="connection_error")


def _files(payloads: Sequence[tuple[str, bytes, str]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", payload) for payload in payloads]


def _single(task: Task, fmt: str, response: httpx.Response) -> Result:
    if response.status_code >= 400:
        raise SegserveError.from_response(response)
    timing = parse_server_timing(response.headers.get("server-timing"))
    request_id = response.headers.get("x-request-id")
    try:
        return parse_body(task, fmt, response.content, timing, request_id)
    except (ValueError, KeyError, TypeError, OSError) as exc:  # not the body the API promises
        raise SegserveError(
            f"unexpected {response.headers.get('content-type')} answer: {exc!r}",
            status=response.status_code,
            code="unexpected_response",
            request_id=request_id,
        ) from None


def _many(
    task: Task, fmt: str, response: httpx.Response, count: int
) -> list[Result | SegserveError]:
    if response.status_code >= 400:
        raise SegserveError.from_response(response)
    request_id = response.headers.get("x-request-id")
    timing = parse_server_timing(response.headers.get("server-timing"))
    try:
        entries = response.json()["results"]
    except (ValueError, KeyError, TypeError):
        raise SegserveError(
            "a many-images request was not answered with {'results': [...]}",
            status=response.status_code,
            code="unexpected_response",
            request_id=request_id,
        ) from None
    if len(entries) != count:
        raise SegserveError(
            f"sent {count} images, got {len(entries)} results",
            status=response.status_code,
            code="unexpected_response",
            request_id=request_id,
        )
    out: list[Result | SegserveError] = []
    for entry in entries:
        try:
            out.append(parse_entry(task, fmt, entry, timing, request_id))
        except (ValueError, KeyError, TypeError, OSError, AttributeError) as exc:
            out.append(
                SegserveError(
                    f"unexpected entry in the answer: {exc!r}",
                    status=response.status_code,
                    code="unexpected_response",
                    request_id=request_id,
                )
            )
    return out


# ------------------------------------------------------------------------------ async


class AsyncClient:
    """An asyncio client of a segserve service.

    ``retries``: how many times a request is sent again after a 503 (waiting its
    ``Retry-After``) or a broken connection (waiting ``backoff`` s, doubling each time);
    no wait is longer than ``max_wait`` s. ``api_key`` goes as ``X-API-Key``. ``transport``
    is an httpx transport (e.g. ``httpx.ASGITransport(app)`` to call an app in-process).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._policy = _Policy(base_url, api_key, timeout, retries, backoff, max_wait, headers)
        self._http = httpx.AsyncClient(
            base_url=self._policy.base_url,
            headers=self._policy.headers,
            timeout=self._policy.timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        files: list[Any] | None = None,
        deadline_s: float | None = None,
    ) -> httpx.Response:
        policy, started, attempt = self._policy, time.monotonic(), 0
        while True:
            headers = policy.request_headers(started, deadline_s)
            try:
                response = await self._http.request(
                    method, path, params=params, files=files, headers=headers
                )
            except _RETRYABLE as exc:
                wait = policy.wait_before_retry(attempt, started, deadline_s, None)
                if wait is None:
                    raise _connection_error(exc) from exc
            except httpx.TimeoutException as exc:
                raise _connection_error(exc) from exc
            else:
                if response.status_code != 503:
                    return response
                wait = policy.wait_before_retry(attempt, started, deadline_s, response)
                if wait is None:
                    return response
            await _asleep(wait)
            attempt += 1

    async def _predict(
        self, task: Task, image: ImageInput, query: dict[str, str], deadline_s: float | None
    ) -> Result:
        payload = await asyncio.to_thread(image_payload, image)
        response = await self._send(
            "POST", _PATHS[task], params=query, files=_files([payload]), deadline_s=deadline_s
        )
        return _single(task, query.get("format", "json"), response)

    async def segment(
        self,
        image: ImageInput,
        *,
        model: str | None = None,
        format: Literal["png", "json", "overlay"] = "json",
        classes: str | Sequence[str] | None = None,
        tolerance: float | None = None,
        min_area: float | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        deadline_s: float | None = None,
    ) -> SegmentResult:
        """``POST /segment``: semantic segmentation of one image (docs/api.md)."""
        query = _segment_query(model, format, classes, tolerance, min_area, tile, overlap)
        result = await self._predict("semantic", image, query, deadline_s)
        assert isinstance(result, SegmentResult)
        return result

    async def instances(
        self,
        image: ImageInput,
        *,
        model: str | None = None,
        format: Literal["png", "json", "overlay"] = "json",
        score_threshold: float | None = None,
        mask_threshold: float | None = None,
        max_instances: int | None = None,
        mask_encoding: MaskEncoding = "rle",
        classes: str | Sequence[str] | None = None,
        tolerance: float | None = None,
        min_area: float | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        deadline_s: float | None = None,
    ) -> InstancesResult:
        """``POST /instances``: instance segmentation of one image (docs/api.md)."""
        query = _instances_query(
            model,
            format,
            score_threshold,
            mask_threshold,
            max_instances,
            mask_encoding,
            classes,
            tolerance,
            min_area,
            tile,
            overlap,
        )
        result = await self._predict("instance", image, query, deadline_s)
        assert isinstance(result, InstancesResult)
        return result

    async def models(self) -> dict[str, Any]:
        """``GET /models``: every served model and its settings."""
        response = await self._send("GET", "/models")
        if response.status_code >= 400:
            raise SegserveError.from_response(response)
        body: dict[str, Any] = response.json()
        return body

    async def ready(self) -> bool:
        """Whether ``/readyz`` answers 200 (every model loaded and warm)."""
        try:
            response = await self._http.get("/readyz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def wait_until_ready(self, timeout_s: float = 300.0, poll_s: float = 0.5) -> None:
        """Return once the service is ready; SegserveError(code="not_ready") after
        ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not await self.ready():
            if time.monotonic() > deadline:
                raise SegserveError(
                    f"{self._policy.base_url} not ready within {timeout_s:g} s", code="not_ready"
                )
            await asyncio.sleep(poll_s)

    async def _predict_group(
        self,
        task: Task,
        images: Sequence[tuple[int, ImageInput]],
        query: dict[str, str],
        deadline_s: float | None,
    ) -> list[Result | SegserveError]:
        """Results for a group of images, in order: one many-images request (a single one
        for one image); an image that cannot be read gets its own error."""
        outcome: list[Result | SegserveError | None] = [None] * len(images)
        payloads, slots = [], []
        for k, (_, image) in enumerate(images):
            try:
                payloads.append(await asyncio.to_thread(image_payload, image))
                slots.append(k)
            except (OSError, TypeError, ValueError) as exc:
                outcome[k] = SegserveError(f"cannot read the image: {exc}", code="unreadable_image")
        if payloads:
            fmt = query.get("format", "json")
            try:
                response = await self._send(
                    "POST",
                    _PATHS[task],
                    params=query,
                    files=_files(payloads),
                    deadline_s=deadline_s,
                )
                answers: list[Result | SegserveError] = (
                    [_single(task, fmt, response)]
                    if len(payloads) == 1
                    else _many(task, fmt, response, len(payloads))
                )
            except SegserveError as exc:
                if len(payloads) > 1 and exc.status in (400, 413):
                    # Too large together, or a service without many-images requests: one
                    # by one instead.
                    answers = [
                        await self._one(task, images[k][1], query, deadline_s) for k in slots
                    ]
                else:
                    answers = [exc] * len(payloads)
            for k, answer in zip(slots, answers, strict=True):
                outcome[k] = answer
        return [o if o is not None else SegserveError("no answer", code="error") for o in outcome]

    async def _one(
        self, task: Task, image: ImageInput, query: dict[str, str], deadline_s: float | None
    ) -> Result | SegserveError:
        try:
            return await self._predict(task, image, query, deadline_s)
        except SegserveError as exc:
            return exc
        except (OSError, TypeError, ValueError) as exc:
            return SegserveError(f"cannot read the image: {exc}", code="unreadable_image")

    async def predict_many(
        self,
        images: ImageInput | Iterable[ImageInput],
        *,
        task: Task = "semantic",
        concurrency: int = 4,
        batch_size: int = 8,
        recursive: bool = False,
        deadline_s: float | None = None,
        on_result: Callable[[Prediction], None] | None = None,
        **params: Any,
    ) -> list[Prediction]:
        """Predict every image of ``images`` (paths, folders, bytes, PIL images, arrays).

        Folders become their image files (.jpg, .jpeg, .png, .webp, .bmp; sorted). Images go
        ``batch_size`` per request (docs/api.md, "Many images in one request"; 1: a request
        each), at most ``concurrency`` requests at a time. ``params`` are the query
        parameters of ``segment`` or ``instances`` (``format`` defaults to ``json``;
        ``mask_encoding`` to ``rle``). Returns one :class:`Prediction` per image in input
        order; a failed image has its ``error`` set and never raises. ``on_result`` is called
        with each prediction as it completes.
        """
        if concurrency < 1 or batch_size < 1:
            raise ValueError("concurrency and batch_size must be at least 1")
        query = _task_query(task, params)
        items = list(enumerate(expand_inputs(images, recursive=recursive)))
        predictions = [Prediction(i, describe(image, i)) for i, image in items]
        groups = [items[k : k + batch_size] for k in range(0, len(items), batch_size)]
        gate = asyncio.Semaphore(concurrency)

        async def run(group: list[tuple[int, ImageInput]]) -> None:
            async with gate:
                answers = await self._predict_group(task, group, query, deadline_s)
            for (index, _), answer in zip(group, answers, strict=True):
                prediction = predictions[index]
                if isinstance(answer, SegserveError):
                    prediction.error = answer
                else:
                    prediction.result = answer
                if on_result is not None:
                    on_result(prediction)

        await asyncio.gather(*(run(group) for group in groups))
        return predictions


# ------------------------------------------------------------------------------- sync


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from sync code, also where an event loop already runs
    (then in a thread of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class Client:
    """A blocking client of a segserve service; the same methods as :class:`AsyncClient`.

    ``retries``: how many times a request is sent again after a 503 (waiting its
    ``Retry-After``) or a broken connection (waiting ``backoff`` s, doubling each time);
    no wait is longer than ``max_wait`` s. ``api_key`` goes as ``X-API-Key``.
    ``predict_many`` runs an :class:`AsyncClient` under the hood.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._args: dict[str, Any] = {
            "base_url": base_url,
            "api_key": api_key,
            "timeout": timeout,
            "retries": retries,
            "backoff": backoff,
            "max_wait": max_wait,
            "headers": headers,
        }
        self._transport = transport
        self._policy = _Policy(base_url, api_key, timeout, retries, backoff, max_wait, headers)
        self._http = httpx.Client(
            base_url=self._policy.base_url,
            headers=self._policy.headers,
            timeout=self._policy.timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        files: list[Any] | None = None,
        deadline_s: float | None = None,
    ) -> httpx.Response:
        policy, started, attempt = self._policy, time.monotonic(), 0
        while True:
            headers = policy.request_headers(started, deadline_s)
            try:
                response = self._http.request(
                    method, path, params=params, files=files, headers=headers
                )
            except _RETRYABLE as exc:
                wait = policy.wait_before_retry(attempt, started, deadline_s, None)
                if wait is None:
                    raise _connection_error(exc) from exc
            except httpx.TimeoutException as exc:
                raise _connection_error(exc) from exc
            else:
                if response.status_code != 503:
                    return response
                wait = policy.wait_before_retry(attempt, started, deadline_s, response)
                if wait is None:
                    return response
            _sleep(wait)
            attempt += 1

    def _predict(
        self, task: Task, image: ImageInput, query: dict[str, str], deadline_s: float | None
    ) -> Result:
        payload = image_payload(image)
        response = self._send(
            "POST", _PATHS[task], params=query, files=_files([payload]), deadline_s=deadline_s
        )
        return _single(task, query.get("format", "json"), response)

    def segment(
        self,
        image: ImageInput,
        *,
        model: str | None = None,
        format: Literal["png", "json", "overlay"] = "json",
        classes: str | Sequence[str] | None = None,
        tolerance: float | None = None,
        min_area: float | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        deadline_s: float | None = None,
    ) -> SegmentResult:
        """``POST /segment``: semantic segmentation of one image (docs/api.md)."""
        query = _segment_query(model, format, classes, tolerance, min_area, tile, overlap)
        result = self._predict("semantic", image, query, deadline_s)
        assert isinstance(result, SegmentResult)
        return result

    def instances(
        self,
        image: ImageInput,
        *,
        model: str | None = None,
        format: Literal["png", "json", "overlay"] = "json",
        score_threshold: float | None = None,
        mask_threshold: float | None = None,
        max_instances: int | None = None,
        mask_encoding: MaskEncoding = "rle",
        classes: str | Sequence[str] | None = None,
        tolerance: float | None = None,
        min_area: float | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        deadline_s: float | None = None,
    ) -> InstancesResult:
        """``POST /instances``: instance segmentation of one image (docs/api.md)."""
        query = _instances_query(
            model,
            format,
            score_threshold,
            mask_threshold,
            max_instances,
            mask_encoding,
            classes,
            tolerance,
            min_area,
            tile,
            overlap,
        )
        result = self._predict("instance", image, query, deadline_s)
        assert isinstance(result, InstancesResult)
        return result

    def models(self) -> dict[str, Any]:
        """``GET /models``: every served model and its settings."""
        response = self._send("GET", "/models")
        if response.status_code >= 400:
            raise SegserveError.from_response(response)
        body: dict[str, Any] = response.json()
        return body

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200 (every model loaded and warm)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_until_ready(self, timeout_s: float = 300.0, poll_s: float = 0.5) -> None:
        """Return once the service is ready; SegserveError(code="not_ready") after
        ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise SegserveError(
                    f"{self._policy.base_url} not ready within {timeout_s:g} s", code="not_ready"
                )
            time.sleep(poll_s)

    def predict_many(
        self,
        images: ImageInput | Iterable[ImageInput],
        *,
        task: Task = "semantic",
        concurrency: int = 4,
        batch_size: int = 8,
        recursive: bool = False,
        deadline_s: float | None = None,
        on_result: Callable[[Prediction], None] | None = None,
        **params: Any,
    ) -> list[Prediction]:
        """:meth:`AsyncClient.predict_many`, blocking until every image is answered."""
        transport = self._transport
        async_transport = transport if isinstance(transport, httpx.AsyncBaseTransport) else None

        async def run() -> list[Prediction]:
            async with AsyncClient(**self._args, transport=async_transport) as client:
                return await client.predict_many(
                    images,
                    task=task,
                    concurrency=concurrency,
                    batch_size=batch_size,
                    recursive=recursive,
                    deadline_s=deadline_s,
                    on_result=on_result,
                    **params,
                )

        return _run(run())
