"""Domain errors and the one table that maps them to HTTP statuses.

Errors are raised anywhere in the service with a message that says what went wrong and why
(naming the limit and the value given). Only :data:`STATUS_BY_ERROR` knows HTTP statuses; the
handlers registered in :mod:`app.api.handlers` turn every error into the JSON body of
docs/api.md, and :mod:`app.api.openapi` documents each status with the docstrings of the
errors the table gives it.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """Base of every error a client may see. ``code`` is the snake_case code in the body.

    ``retry_after_s``: when retrying later may succeed (overload, startup, shutdown), how long
    to wait; the handler sends it as ``Retry-After``. ``headers``: other HTTP headers, for the
    few errors raised by the HTTP layer itself (authentication, a refused body).
    """

    code = "internal_error"
    # Whether the OpenAPI document describes it under each route's errors: not for the
    # router's own answers (unknown path, wrong method), which no route gives.
    routed: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


class BadRequest(ServiceError):
    """Malformed request (bad multipart, no image field, empty body)."""

    code = "bad_request"


class Unauthorized(ServiceError):
    """An API key is configured and the request lacks a valid one (WWW-Authenticate)."""

    code = "unauthorized"


class NotFound(ServiceError):
    """No such path (the router's answer; never raised, it names the router's 404)."""

    code = "not_found"
    routed = False


class ModelNotFound(NotFound):
    """Unknown model, or a model of the other task."""

    code = "model_not_found"
    routed = True


class MethodNotAllowed(ServiceError):
    """The path exists, but not with this method (never raised: the router's 405)."""

    code = "method_not_allowed"
    routed = False


class RequestTimeout(ServiceError):
    """The body did not arrive within the read timeout (SEGSERVE_BODY_READ_TIMEOUT_S)."""

    code = "request_timeout"


class PayloadTooLarge(ServiceError):
    """Body over the byte cap."""

    code = "payload_too_large"


class ImageTooLarge(ServiceError):
    """Image over the pixel or side cap (also after the model's resize)."""

    code = "image_too_large"


class UnsupportedMediaType(ServiceError):
    """Not an image, or a format outside the allowlist."""

    code = "unsupported_media_type"


class InvalidParameter(ServiceError):
    """Invalid query parameter or header."""

    code = "invalid_parameter"


class UndecodableImage(ServiceError):
    """An image that cannot be decoded."""

    code = "undecodable_image"


class ImageUnprocessable(ServiceError):
    """A decodable image the model cannot take (e.g. so thin that its resize has no pixels)."""

    code = "image_unprocessable"


class NotReady(ServiceError):
    """Not ready: models loading, or shutting down (see Retry-After)."""

    code = "not_ready"


class QueueFull(ServiceError):
    """The model's queue is full (see Retry-After)."""

    code = "queue_full"


class DeadlineExceeded(ServiceError):
    """The deadline passed before the result was ready."""

    code = "deadline_exceeded"


class InternalError(ServiceError):
    """A fault of the service."""

    code = "internal_error"


# The ONE place that knows status codes. Subclasses inherit their base's status. The first
# error listed for a status gives the code of HTTP errors raised outside the service's code
# (Starlette's 404 for an unknown path, 405 for a wrong method).
STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    ModelNotFound: 404,
    MethodNotAllowed: 405,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    ImageTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidParameter: 422,
    UndecodableImage: 422,
    ImageUnprocessable: 422,
    InternalError: 500,
    NotReady: 503,
    QueueFull: 503,
    DeadlineExceeded: 504,
}


def status_of(error: ServiceError) -> int:
    """The HTTP status for ``error``: the entry of its nearest class in the table."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def errors_with_status(status: int) -> list[type[ServiceError]]:
    """The errors answered with ``status``, in the table's order."""
    return [error for error, code in STATUS_BY_ERROR.items() if code == status]


def code_for_status(status: int) -> str:
    """The body's ``code`` for an HTTP error of ``status`` that no ServiceError raised."""
    errors = errors_with_status(status)
    return errors[0].code if errors else "http_error"


class ConfigError(Exception):
    """A model repository or weights problem found at startup; the message says how to fix it."""
