"""The optional API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

Off unless ``SEGSERVE_API_KEY`` is set. Health endpoints stay open (probes carry no keys);
the inference endpoints and /models require it.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import SettingsDep
from app.errors import Unauthorized

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <SEGSERVE_API_KEY>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The SEGSERVE_API_KEY.")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def require_api_key(
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> None:
    if settings.api_key is None:
        return
    expected = _digest(settings.api_key.get_secret_value())
    offered = [c for c in (bearer.credentials if bearer else None, header) if c]
    # compare_digest over fixed-length digests: the time taken says nothing about how much of
    # a key was right, nor about its length.
    if not any(secrets.compare_digest(_digest(candidate), expected) for candidate in offered):
        why = "is not valid" if offered else "is missing"
        raise Unauthorized(
            f"an API key {why}: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            headers={"WWW-Authenticate": 'Bearer realm="segserve"'},
        )
