"""The one exception type of the client."""

from __future__ import annotations

import json
from typing import Any

import httpx


class SegserveError(Exception):
    """A request that failed: an error answer of the service, or no answer at all.

    ``status`` is the HTTP status (None when there was no answer: ``code`` is then
    ``connection_error``, ``timeout``, ``deadline_exceeded`` or ``unreadable_image``);
    ``code`` and ``message`` come from the service's JSON error body
    (``{"error": {"code", "message"}}``, docs/api.md "Errors").
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.request_id = request_id

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"SegserveError(status={self.status!r}, code={self.code!r}, message={self.message!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message}

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> SegserveError:
        """From a failed entry of a many-images answer: ``{"error": {...}, "status": N}``."""
        error = entry.get("error") or {}
        status = entry.get("status")
        return cls(
            str(error.get("message", "")),
            status=int(status) if isinstance(status, int) else None,
            code=str(error.get("code", "error")),
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> SegserveError:
        """From an error answer (4xx, 5xx), its JSON body if it has one."""
        code, message = f"http_{response.status_code}", response.text[:500]
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = str(body["error"].get("code", code))
            message = str(body["error"].get("message", message))
        return cls(
            message,
            status=response.status_code,
            code=code,
            retry_after=retry_after_s(response),
            request_id=response.headers.get("x-request-id"),
        )


def retry_after_s(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), else None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import datetime, timezone
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
