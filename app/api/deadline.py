"""The request deadline: the server's timeout, or the client's shorter one."""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.errors import InvalidParameter

REQUEST_TIMEOUT_HEADER = "X-Request-Timeout"


@dataclass(frozen=True)
class Deadline:
    """How long this request may take, counted from its arrival, and who set that."""

    seconds: float
    source: str  # named in the 504 message, so a client knows which limit it hit


def parse_request_timeout(value: str | None, server_s: float) -> Deadline:
    """The request's budget: the server's, or the client's header when shorter (422 if bad)."""
    server = Deadline(server_s, "SEGSERVE_REQUEST_TIMEOUT_S")
    if value is None:
        return server
    try:
        asked = float(value.strip())
    except ValueError:
        asked = math.nan
    if not math.isfinite(asked) or asked <= 0:
        raise InvalidParameter(
            f"{REQUEST_TIMEOUT_HEADER}: expected a positive number of seconds; got {value!r}"
        )
    # A client may ask for less time, never for more than the server grants.
    return Deadline(asked, REQUEST_TIMEOUT_HEADER) if asked < server_s else server
