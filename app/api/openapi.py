"""OpenAPI fragments so /docs is a usable client: the three request forms and every error."""

from __future__ import annotations

from typing import Any

from app.errors import errors_with_status
from app.schemas import ErrorResponse

_BINARY = {"schema": {"type": "string", "format": "binary"}}

IMAGE_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image (JPEG, PNG, WebP or BMP) in one of three forms.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            "image/jpeg": _BINARY,
            "image/png": _BINARY,
            "image/webp": _BINARY,
            "image/bmp": _BINARY,
            "application/octet-stream": _BINARY,
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "description": "base64 of the file"}
                    },
                }
            },
        },
    }
}


def _description(status: int) -> str:
    """What an error status means: the first docstring line of each error the table gives it."""
    errors = [error for error in errors_with_status(status) if error.routed]
    lines = [(error.__doc__ or "").strip().splitlines()[0] for error in errors]
    return " ".join(line for line in lines if line)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented errors for ``statuses`` (which a route can answer is the route's to say;
    what each status means comes from the error table in :mod:`app.errors`)."""
    return {
        status: {"model": ErrorResponse, "description": _description(status)} for status in statuses
    }


# What the inference routes can answer besides 200.
INFERENCE_ERRORS = error_responses(400, 401, 404, 413, 415, 422, 500, 503, 504)


def image_responses(json_model: type, description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": json_model,
            "description": description,
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **INFERENCE_ERRORS,
    }
