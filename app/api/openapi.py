"""OpenAPI fragments so /docs is a usable client: the three request forms and every error."""

from __future__ import annotations

from typing import Any

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

_ERRORS = {
    400: "Malformed request (bad multipart, no image field, empty body).",
    401: "An API key is configured and the request lacks a valid one (WWW-Authenticate).",
    404: "Unknown model, or a model of the other task.",
    413: "Body over the byte cap, or image over the pixel/side cap.",
    415: "Not an image, or a format outside the allowlist.",
    422: "Invalid query parameter, or an image that cannot be decoded.",
    500: "A fault of the service.",
    503: "Queue full or not ready (see Retry-After).",
    504: "The deadline passed before the result was ready.",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _ERRORS.items()
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented errors for ``statuses``, for routes that can fail only in some ways."""
    return {status: ERROR_RESPONSES[status] for status in statuses}


def image_responses(json_model: type, description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": json_model,
            "description": description,
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **ERROR_RESPONSES,
    }
