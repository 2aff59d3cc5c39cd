"""X-Request-ID on every response, and one access log line per request, as text or JSON."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from app.request_log import (
    ACCESS_LOGGER,
    MAX_REQUEST_ID_LENGTH,
    JsonFormatter,
    configure_access_log,
)
from tests.api.conftest import Served, encode, sample_image

PNG = {"Content-Type": "image/png"}
STAGES = ("decode", "queue", "infer", "encode")
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    return caplog


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ACCESS_LOGGER]


def parse_text_line(line: str) -> dict[str, str]:
    pairs = {k: json.loads(v) if v.startswith('"') else v for k, v in _PAIR.findall(line)}
    assert " ".join(f"{k}={v}" for k, v in _PAIR.findall(line)) == line  # nothing else in it
    return pairs


def server_timing_ms(response: httpx.Response) -> dict[str, float]:
    parts = (p.strip().split(";dur=") for p in response.headers["server-timing"].split(","))
    return {name: float(dur) for name, dur in parts}


async def post_segment(served: Served, **headers: str) -> httpx.Response:
    return await served.client.post(
        "/segment", content=encode(sample_image()), headers={**PNG, **headers}
    )


def is_generated_id(value: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{32}", value) is not None and uuid.UUID(value).version == 4


async def test_a_given_request_id_is_echoed_on_success_and_errors(served: Served) -> None:
    ok = await post_segment(served, **{"X-Request-ID": "client-42:a/b"})
    assert ok.status_code == 200
    assert ok.headers["x-request-id"] == "client-42:a/b"
    for method, path in (("GET", "/healthz"), ("GET", "/no/such/path"), ("POST", "/segment")):
        response = await served.client.request(method, path, headers={"X-Request-ID": "r-7"})
        assert response.status_code in (200, 404, 400), path
        assert response.headers["x-request-id"] == "r-7", path
    longest = "x" * MAX_REQUEST_ID_LENGTH
    response = await served.client.get("/healthz", headers={"X-Request-ID": longest})
    assert response.headers["x-request-id"] == longest


async def test_an_id_is_generated_when_none_or_an_invalid_one_is_given(served: Served) -> None:
    seen = set()
    too_long = "x" * (MAX_REQUEST_ID_LENGTH + 1)
    invalid: list[str | bytes] = ["", too_long, "has space", "tab\there", "é".encode(), b"\x7f"]
    for given in [None, *invalid]:
        headers: dict[str, str | bytes] = {} if given is None else {"X-Request-ID": given}
        response = await served.client.get("/healthz", headers=headers)
        echoed = response.headers["x-request-id"]
        assert is_generated_id(echoed), (given, echoed)
        seen.add(echoed)
    assert len(seen) == 7  # a fresh one each time


async def test_an_unhandled_error_still_carries_the_request_id(
    served: Served, access_log: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise RuntimeError("a bug, not a domain error")

    served.app.add_api_route("/broken", broken)
    # Starlette re-raises after answering 500 (so servers can log it): don't raise in the test.
    transport = httpx.ASGITransport(app=served.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/broken", headers={"X-Request-ID": "trace-500"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers["x-request-id"] == "trace-500"
    [record] = [r for r in access_records(access_log) if "trace-500" in r.getMessage()]
    line = parse_text_line(record.getMessage())
    assert (line["status"], line["error"], line["path"]) == ("500", "internal_error", "/broken")


async def test_one_text_line_per_request_with_its_fields(
    served: Served, access_log: pytest.LogCaptureFixture
) -> None:
    ok = await post_segment(served, **{"X-Request-ID": "req-1"})
    bad = await served.client.post(
        "/segment", content=encode(sample_image())[:60], headers={**PNG, "X-Request-ID": "req-2"}
    )
    assert (ok.status_code, bad.status_code) == (200, 422)

    records = access_records(access_log)
    assert len(records) == 2
    first, second = (parse_text_line(r.getMessage()) for r in records)
    assert {k: first[k] for k in ("request_id", "method", "path", "status", "model")} == {
        "request_id": "req-1",
        "method": "POST",
        "path": "/segment",
        "status": "200",
        "model": "fake-sem",
    }
    assert first["client"] == "127.0.0.1:123"  # httpx's ASGI transport's client address
    sent = server_timing_ms(ok)
    for stage in STAGES:
        assert float(first[f"{stage}_ms"]) == pytest.approx(sent[stage], abs=0.011)
    assert float(first["duration_ms"]) >= sum(sent.values()) - 0.05
    assert "error" not in first
    assert (second["request_id"], second["status"], second["error"]) == (
        "req-2",
        "422",
        "undecodable_image",
    )
    assert "queue_ms" not in second  # it never reached the queue


async def test_text_values_are_quoted_so_a_path_cannot_forge_fields(
    served: Served, access_log: pytest.LogCaptureFixture
) -> None:
    await served.client.get("/a b=c status=200")
    [record] = access_records(access_log)
    line = parse_text_line(record.getMessage())
    assert line["path"] == "/a b=c status=200"
    assert line["status"] == "404"
    assert 'path="/a b=c status=200"' in record.getMessage()


@pytest.fixture
def json_lines(served: Served, access_log: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """What the JSON access handler writes (it goes to stderr otherwise)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    [handler] = [h for h in logger.handlers if isinstance(h.formatter, JsonFormatter)]
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)
    configure_access_log("text")  # as every other test's app expects it


class RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root_handler() -> Iterator[RecordingHandler]:
    """What reaches the root logger's handlers (where the text format applies)."""
    handler = RecordingHandler()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.mark.parametrize("settings_overrides", [{"log_format": "json"}])
async def test_json_lines_parse_and_carry_the_fields(
    served: Served, json_lines: io.StringIO, root_handler: RecordingHandler
) -> None:
    ok = await post_segment(served)
    unknown = await served.client.post(
        "/instances?model=nope", content=encode(sample_image()), headers=PNG
    )
    assert (ok.status_code, unknown.status_code) == (200, 404)

    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["request_id"] == ok.headers["x-request-id"]
    assert is_generated_id(first["request_id"])
    assert (first["level"], first["logger"]) == ("info", ACCESS_LOGGER)
    assert (first["method"], first["path"], first["status"], first["model"]) == (
        "POST",
        "/segment",
        200,
        "fake-sem",
    )
    assert first["error"] is None
    assert first["client"] == "127.0.0.1:123"
    sent = server_timing_ms(ok)
    assert {stage: first[f"{stage}_ms"] for stage in STAGES} == pytest.approx(sent, abs=0.011)
    assert first["duration_ms"] >= sum(sent.values()) - 0.05
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first["ts"])
    assert (second["path"], second["status"], second["model"], second["error"]) == (
        "/instances",
        404,
        None,  # the unknown model was never resolved
        "model_not_found",
    )
    # Only the JSON lines: nothing reaches the root's text handlers as well.
    assert root_handler.records == []
