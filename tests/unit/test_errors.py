"""The one error table: statuses, codes, Retry-After and the OpenAPI text all come from it."""

from __future__ import annotations

import json

import pytest

from app import errors
from app.api.handlers import service_error_response
from app.api.openapi import INFERENCE_ERRORS, error_responses
from app.errors import (
    STATUS_BY_ERROR,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    QueueFull,
    ServiceError,
    code_for_status,
    status_of,
)


def _every_service_error() -> list[type[ServiceError]]:
    found = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, ServiceError) and value is not ServiceError
    ]
    assert len(found) >= 10  # the scan sees the module's errors
    return found


@pytest.mark.parametrize("error", _every_service_error(), ids=lambda e: e.__name__)
def test_every_error_has_a_status_a_code_and_a_description(error: type[ServiceError]) -> None:
    assert error in STATUS_BY_ERROR, f"{error.__name__} is missing from STATUS_BY_ERROR"
    assert error.code != ServiceError.code or error is errors.InternalError
    assert (error.__doc__ or "").strip(), f"{error.__name__} needs a docstring (OpenAPI uses it)"


def test_a_subclass_answers_its_own_entry() -> None:
    assert status_of(ModelNotFound("x")) == 404
    assert ModelNotFound("x").code == "model_not_found"


def test_router_errors_take_the_code_of_the_first_entry_of_their_status() -> None:
    assert code_for_status(404) == "not_found"
    assert code_for_status(405) == "method_not_allowed"
    assert code_for_status(503) == "not_ready"
    assert code_for_status(418) == "http_error"


def test_retry_after_is_written_by_the_handler_from_the_error() -> None:
    response = service_error_response(QueueFull("full", retry_after_s=7))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert json.loads(bytes(response.body)) == {"error": {"code": "queue_full", "message": "full"}}
    assert "Retry-After" not in service_error_response(PayloadTooLarge("big")).headers


def test_http_headers_of_an_error_are_kept_beside_retry_after() -> None:
    response = service_error_response(
        NotReady("starting", retry_after_s=2, headers={"Connection": "close"})
    )
    assert response.headers["Retry-After"] == "2"
    assert response.headers["Connection"] == "close"


def test_openapi_describes_each_status_with_the_table_errors_docstrings() -> None:
    described = INFERENCE_ERRORS[503]["description"]
    assert (NotReady.__doc__ or "").strip() in described
    assert (QueueFull.__doc__ or "").strip() in described
    # The router's own 404 (unknown path) is no route's answer: not in a route's docs.
    assert INFERENCE_ERRORS[404]["description"] == (ModelNotFound.__doc__ or "").strip()
    assert set(error_responses(401, 500)) == {401, 500}
