"""The request body: the image file's bytes from any of the three forms, then decoded.

Reading is capped (413 as soon as the body is known to exceed ``SEGSERVE_MAX_BODY_BYTES``);
multipart, raw bytes and JSON/base64 are the forms docs/api.md describes; decoding runs in the
thread pool under the app's decode slots.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from app import faults
from app.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    UnsupportedMediaType,
)
from app.imaging import ImageLimits, decode_image
from app.timing import StageTimer

RAW_IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream"}
)
# Besides any image/*: a missing type (raw bytes), octet-stream, and the two other forms.
_OTHER_ACCEPTED_TYPES = frozenset(
    {"", "application/octet-stream", "multipart/form-data", "application/json"}
)


# A refused body is not read any further: "Connection: close" makes the server close the
# connection after the 413 instead of reading (and discarding) the rest to keep it alive.
_CLOSE = {"Connection": "close"}


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before any byte is read; a
    chunked body (no length) is counted as it streams and refused at the first chunk that
    crosses the limit, so at most ``limit`` bytes plus one chunk are ever held.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes "
            "(SEGSERVE_MAX_BODY_BYTES)",
            headers=_CLOSE,
        )
    try:
        # The whole body within the timeout, however it trickles in: a client sending a few
        # bytes a second holds nothing but its connection meanwhile (no decode slot, no place
        # in a queue), and not for long.
        return await asyncio.wait_for(_read_capped(request, limit), timeout_s)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        raise RequestTimeout(
            f"the request body did not arrive within {timeout_s:.3g} s "
            "(SEGSERVE_BODY_READ_TIMEOUT_S, or what was left of the request's deadline)",
            headers=_CLOSE,
        ) from None


async def _read_capped(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {limit} bytes (SEGSERVE_MAX_BODY_BYTES)",
                headers=_CLOSE,
            )
        chunks.append(chunk)
    return b"".join(chunks)


# Replayed to the multipart parser in slices, so a large body never blocks the event loop
# in one synchronous parse.
_REPLAY_CHUNK = 1024 * 1024


async def _from_multipart(request: Request, body: bytes, max_images: int) -> list[bytes]:
    offsets = iter(range(0, max(len(body), 1), _REPLAY_CHUNK))

    async def replay() -> Message:
        start = next(offsets, len(body))
        end = start + _REPLAY_CHUNK
        return {"type": "http.request", "body": body[start:end], "more_body": end < len(body)}

    try:
        # At most max_images file parts and one other field: anything more is refused by the
        # parser as soon as it is seen, before the parts are stored.
        form = await Request(request.scope, replay).form(max_files=max_images, max_fields=1)
    except Exception as exc:  # python-multipart and Starlette raise several types
        detail = str(getattr(exc, "detail", None) or exc).rstrip(".")
        if "Too many files" in detail:
            raise _too_many(max_images) from None
        raise BadRequest(
            f"multipart body refused: {detail}; send file parts named 'image'"
        ) from None
    try:
        unexpected = sorted(name for name in form if name != "image")
        if unexpected:
            raise BadRequest(
                f"multipart field(s) {', '.join(map(repr, unexpected))} are not accepted: "
                "send file parts named 'image' (query parameters go in the URL)"
            )
        fields = form.getlist("image")
        if not fields:
            raise BadRequest("multipart body has no file part named 'image'")
        if not all(isinstance(field, UploadFile) for field in fields):
            raise BadRequest(
                "multipart part 'image' is a text field: send it as a file (a part with a "
                "filename, as curl -F image=@photo.jpg does)"
            )
        return [await field.read() for field in fields if isinstance(field, UploadFile)]
    finally:
        await form.close()


def _too_many(max_images: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"more than {max_images} images in one request (SEGSERVE_MAX_IMAGES_PER_REQUEST)",
        headers=_CLOSE,
    )


def _base64_image(text: str, name: str) -> bytes:
    encoded = "".join(text.split())  # `base64` wraps lines by default
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]  # tolerate a data URL's prefix
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{name} is not valid base64: {exc}") from None


def _from_json(body: bytes, max_images: int) -> tuple[list[bytes | ServiceError], bool]:
    """The images of a JSON body, and whether it was the many-images form."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None
    except RecursionError:  # e.g. 100000 nested "[": json's C scanner gives up
        raise BadRequest("malformed JSON body: nested too deeply") from None
    if isinstance(payload, dict) and isinstance(payload.get("images"), list):
        items = payload["images"]
        if not items:
            raise BadRequest("'images' is an empty list")
        if len(items) > max_images:
            raise _too_many(max_images)
        return [_json_item(item, f"images[{k}]") for k, item in enumerate(items)], True
    if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
        raise BadRequest(
            'JSON body must be {"image": "<base64 of the image file>"} or '
            '{"images": ["<base64>", ...]}'
        )
    return [_base64_image(payload["image"], "'image'")], False


def _json_item(item: object, name: str) -> bytes | ServiceError:
    """One image of ``{"images": [...]}``: its bytes, or its own error (the others go on)."""
    if not isinstance(item, str):
        return BadRequest(f"{name} must be a base64 string")
    try:
        data = _base64_image(item, name)
    except BadRequest as exc:
        return exc
    return data if data else BadRequest(f"{name} is empty")


@dataclass(frozen=True)
class Upload:
    """The images a body carried, each as bytes or the error that makes it unusable, and
    whether the request is the many-images form (answered with one JSON entry per image)."""

    images: list[bytes | ServiceError]
    many: bool


async def read_upload(
    request: Request, max_body_bytes: int, max_images: int, read_timeout_s: float
) -> Upload:
    """The image files' bytes from any of the request forms of docs/api.md."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    # Any image/* type is taken as raw bytes (image/jpg is common): the format allowlist is
    # enforced on the bytes themselves, so image/gif or image/tiff bodies still get 415.
    is_known = content_type.startswith("image/") or content_type in _OTHER_ACCEPTED_TYPES
    if not is_known:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not accepted; send multipart/form-data with an "
            "'image' file, application/json with base64 'image', or the raw bytes as "
            f"{', '.join(sorted(RAW_IMAGE_TYPES))}"
        )
    body = await read_body(request, max_body_bytes, read_timeout_s)
    if content_type == "multipart/form-data":
        parts = await _from_multipart(request, body, max_images)
        images: list[bytes | ServiceError] = list(parts)
        many = len(parts) > 1
    elif content_type == "application/json":
        # Up to the body cap of base64: off the event loop.
        images, many = await run_in_threadpool(_from_json, body, max_images)
    else:
        images, many = [body], False
    if not many and not images[0]:
        raise BadRequest("the request carries no image (empty body or empty 'image')")
    if many:
        images = [BadRequest("empty image part") if i == b"" else i for i in images]
    return Upload(images, many)


async def decode(
    data: bytes, limits: ImageLimits, slots: asyncio.Semaphore, timer: StageTimer
) -> np.ndarray:
    """The decoded RGB image, timed as the ``decode`` stage, at most ``slots`` at a time."""
    with timer.stage("decode"):
        async with slots:  # sized, and why, where the lifespan makes them (app.main)
            return await run_in_threadpool(_decode, data, limits)


def _decode(data: bytes, limits: ImageLimits) -> np.ndarray:
    # In the worker thread, so that an injected delay does not stall the event loop.
    faults.point("decode", data)
    return decode_image(data, limits)
