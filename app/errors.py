"""Domain errors and the one table that maps them to HTTP statuses.

Errors are raised anywhere in the service with a message that says what went wrong and why
(naming the limit and the value given). Only :data:`STATUS_BY_ERROR` knows HTTP; the handlers
registered in :mod:`app.api.handlers` turn every error into the JSON body of API.md.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a client may see. ``code`` is the snake_case code in the body."""

    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServiceError):
    code = "bad_request"


class Unauthorized(ServiceError):
    code = "unauthorized"


class ModelNotFound(ServiceError):
    code = "model_not_found"


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"


class ImageTooLarge(ServiceError):
    code = "image_too_large"


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"


class InvalidParameter(ServiceError):
    code = "invalid_parameter"


class UndecodableImage(ServiceError):
    code = "undecodable_image"


class ImageUnprocessable(ServiceError):
    """A decodable image the model cannot take (e.g. so thin that its resize has no pixels)."""

    code = "image_unprocessable"


class QueueFull(ServiceError):
    code = "queue_full"


class NotReady(ServiceError):
    code = "not_ready"


class DeadlineExceeded(ServiceError):
    code = "deadline_exceeded"


class InternalError(ServiceError):
    code = "internal_error"


# The ONE place that knows status codes. Subclasses inherit their base's status.
STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    ModelNotFound: 404,
    PayloadTooLarge: 413,
    ImageTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidParameter: 422,
    UndecodableImage: 422,
    ImageUnprocessable: 422,
    QueueFull: 503,
    NotReady: 503,
    DeadlineExceeded: 504,
    InternalError: 500,
}


def status_of(error: ServiceError) -> int:
    """The HTTP status for ``error``: the entry of its nearest class in the table."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


class ConfigError(Exception):
    """A model repository or weights problem found at startup; the message says how to fix it."""
