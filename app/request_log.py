"""One structured log line per request, its request id, and its metrics.

:class:`RequestLogMiddleware` is pure ASGI: ``BaseHTTPMiddleware`` would run the app in
another task and hide client disconnects from it. For each HTTP request it

- takes the id from ``X-Request-ID`` when it is sane (1 to 128 visible ASCII characters) or
  makes one (uuid4 hex), and echoes it in the response's ``X-Request-ID``;
- puts a :class:`RequestRecord` into the request's scope state, where the dependencies note
  the model and stage timer and the exception handlers the error code (``note_*`` below);
- when the response has gone out, logs one line on ``segserve.access`` (``key=value`` text,
  or JSON with ``SEGSERVE_LOG_FORMAT=json``) and feeds :class:`app.metrics.ServiceMetrics`.

A 500 from an unhandled exception is sent by Starlette's outermost middleware, past this
one: the handler for it adds the id itself (:func:`request_id_headers`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import InternalError
from app.metrics import ServiceMetrics
from app.timing import StageTimer

ACCESS_LOGGER = "segserve.access"
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128
# No answer was sent: the client left first (nginx's "client closed request").
CLIENT_CLOSED_REQUEST = 499
UNMATCHED_ENDPOINT = "unmatched"  # raw paths would give metrics one series per typo

_STATE_KEY = "segserve_request"
# Visible ASCII only: no spaces, control characters or line breaks to forge log lines with.
_REQUEST_ID = re.compile(f"[!-~]{{1,{MAX_REQUEST_ID_LENGTH}}}")
# What a text value may hold unquoted: visible ASCII except `"`, `=` and `\`.
_BARE_VALUE = re.compile(r"[!#-<>-\[\]-~]+")
_log = logging.getLogger(ACCESS_LOGGER)


@dataclass
class RequestRecord:
    """What the middleware learns about one request while the app handles it."""

    request_id: str
    model: str | None = None
    timer: StageTimer | None = None
    error: str | None = None  # the error body's `code`, when the answer is an error
    status: int | None = None


def is_valid_request_id(value: str) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when valid, else a new uuid4 hex."""
    for name, value in headers:
        if name.lower() == b"x-request-id":
            given = value.decode("latin-1")
            if is_valid_request_id(given):
                return given
            break
    return uuid.uuid4().hex


def current_record(conn: HTTPConnection) -> RequestRecord | None:
    record = conn.scope.get("state", {}).get(_STATE_KEY)
    return record if isinstance(record, RequestRecord) else None


def note_model(conn: HTTPConnection, name: str) -> None:
    """Tell the request's log line and metrics which model served it."""
    if (record := current_record(conn)) is not None:
        record.model = name


def note_timer(conn: HTTPConnection, timer: StageTimer) -> None:
    """Tell the request's log line and metrics where its stage timings are kept."""
    if (record := current_record(conn)) is not None:
        record.timer = timer


def note_error(conn: HTTPConnection, code: str) -> None:
    """Tell the request's log line and metrics the error code it is answered with."""
    if (record := current_record(conn)) is not None:
        record.error = code


def request_id_headers(conn: HTTPConnection) -> dict[str, str]:
    """``X-Request-ID`` for a response sent outside the middleware (the 500 handler's)."""
    record = current_record(conn)
    return {REQUEST_ID_HEADER: record.request_id} if record is not None else {}


def endpoint_of(scope: Scope) -> str:
    """The route template (``/segment``), not the raw path, for metric labels."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED_ENDPOINT


class RequestLogMiddleware:
    """Gives each request an id, times it, and writes its log line and metrics."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        record = RequestRecord(request_id_from(scope["headers"]))
        scope.setdefault("state", {})[_STATE_KEY] = record
        id_header = (b"x-request-id", record.request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            record.status = record.status or CLIENT_CLOSED_REQUEST
            raise
        except Exception:
            # Starlette's ServerErrorMiddleware, outside this one, answers 500 (after this line
            # is logged, so the handler's own note would come too late).
            record.status = record.status or 500
            record.error = record.error or InternalError.code
            raise
        finally:
            self._finish(scope, record, time.perf_counter() - started)

    def _finish(self, scope: Scope, record: RequestRecord, seconds: float) -> None:
        status = record.status or CLIENT_CLOSED_REQUEST
        stages = dict(record.timer.seconds) if record.timer is not None else {}
        counts = dict(record.timer.counts) if record.timer is not None else {}
        if self.metrics is not None:
            self.metrics.observe_request(
                endpoint=endpoint_of(scope),
                model=record.model,
                status=status,
                seconds=seconds,
                stages=stages,
                error=record.error,
                counts=counts,
            )
        if _log.isEnabledFor(logging.INFO):  # building the line is the costly part
            fields = access_fields(scope, record, status, seconds, stages)
            fields.update(counts)
            # The text is built only if a text formatter asks for the message.
            _log.info("%s", _TextLine(fields), extra={"access": fields})


def access_fields(
    scope: Scope,
    record: RequestRecord,
    status: int,
    seconds: float,
    stages: Mapping[str, float],
) -> dict[str, Any]:
    client = scope.get("client")
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "model": record.model,
        "duration_ms": round(seconds * 1000, 2),
    }
    fields.update({f"{stage}_ms": round(s * 1000, 2) for stage, s in stages.items()})
    fields["error"] = record.error
    fields["client"] = f"{client[0]}:{client[1]}" if client else None
    return fields


def _text_value(value: object) -> str:
    text = str(value)
    if _BARE_VALUE.fullmatch(text):
        return text
    return json.dumps(text)  # quoted and escaped: a path cannot break the line or fake a key


def text_line(fields: Mapping[str, Any]) -> str:
    """``key=value`` pairs; absent values (None) are left out."""
    return " ".join(f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None)


class _TextLine:
    """A request's log line as `key=value` text."""

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return text_line(self.fields)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, then the access fields or message."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            data.update(access)
        else:
            data["message"] = record.getMessage()
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class _JsonAccessHandler(logging.StreamHandler):
    """The access log's own handler in JSON mode (recognised when reconfiguring)."""


def configure_access_log(log_format: Literal["text", "json"]) -> None:
    """Text: access lines go wherever the other logs go (the root's handlers).

    JSON: they get their own stderr handler that writes bare JSON objects, one a line, and
    stop propagating, so no text prefix from the root's format makes a line unparseable.
    """
    for handler in [h for h in _log.handlers if isinstance(h, _JsonAccessHandler)]:
        _log.removeHandler(handler)
    if log_format == "json":
        handler = _JsonAccessHandler()
        handler.setFormatter(JsonFormatter())
        _log.addHandler(handler)
        _log.propagate = False
    else:
        _log.propagate = True
