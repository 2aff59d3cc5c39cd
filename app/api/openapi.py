"""OpenAPI fragments so /docs is a usable client: the request forms (one image or many) and
every error."""

from __future__ import annotations

from typing import Any

from app.errors import errors_with_status
from app.schemas import ErrorResponse, ManyResults

_BINARY = {"schema": {"type": "string", "format": "binary"}}

IMAGE_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image (JPEG, PNG, WebP or BMP) in one of three forms; or several "
        "images (several `image` parts, or JSON `images`), answered with one JSON entry each.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {
                            "anyOf": [
                                {"type": "string", "format": "binary"},
                                {
                                    "type": "array",
                                    "items": {"type": "string", "format": "binary"},
                                    "minItems": 1,
                                },
                            ]
                        }
                    },
                }
            },
            "image/jpeg": _BINARY,
            "image/png": _BINARY,
            "image/webp": _BINARY,
            "image/bmp": _BINARY,
            "application/octet-stream": _BINARY,
            "application/json": {
                "schema": {
                    "anyOf": [
                        {
                            "type": "object",
                            "required": ["image"],
                            "properties": {
                                "image": {"type": "string", "description": "base64 of the file"}
                            },
                        },
                        {
                            "type": "object",
                            "required": ["images"],
                            "properties": {
                                "images": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "minItems": 1,
                                    "description": "base64 of each file",
                                }
                            },
                        },
                    ]
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
INFERENCE_ERRORS = error_responses(400, 401, 404, 408, 413, 415, 422, 500, 503, 504)


def image_responses(json_model: type, description: str) -> dict[int | str, dict[str, Any]]:
    """A route's answers: ``json_model`` (or, for many images, ManyResults) or a PNG; errors."""
    return {
        200: {
            "model": json_model | ManyResults,
            "description": description,
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **INFERENCE_ERRORS,
    }
