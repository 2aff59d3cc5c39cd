"""Schemathesis over /openapi.json: generated requests never get a 5xx nor an undocumented status.

The app is the real stack over fake predictors, called in-process through Schemathesis's ASGI
transport. Generation is derandomized and small, so CI is deterministic and quick.
"""

from __future__ import annotations

import time
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from tests.api.conftest import make_settings
from tests.fakes import fake_loader, fake_pair

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def fake_app(**overrides: Any) -> FastAPI:
    return create_app(make_settings(**overrides), loader=fake_loader(*fake_pair()))


def wait_until_ready(app: FastAPI) -> None:
    # Models load in the background of the lifespan, which Schemathesis's client starts.
    with asgi.get_client(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the fake models never became ready"
            time.sleep(0.02)


# The spec is read from an app object (no request needed). Schemathesis's pytest plugin ends
# every ASGI lifespan after each test, so each test gets a fresh app of its own.
def spec_with_served_models() -> dict[str, Any]:
    """The app's spec, with `model` narrowed to the fakes' names.

    A free-text `model` makes nearly every generated request a 404 before the body is read;
    with the served names the requests reach decoding, the model and the encoders. (Unknown
    models are tested in test_errors.py.)
    """
    spec = fake_app().openapi()
    names = {"/segment": "fake-sem", "/instances": "fake-inst"}
    for path, name in names.items():
        for parameter in spec["paths"][path]["post"]["parameters"]:
            if parameter["name"] == "model":
                parameter["schema"] = {"type": "string", "enum": [name]}
    return spec


schema = schemathesis.openapi.from_dict(spec_with_served_models())


# With an API key configured (and none sent), every protected route answers 401: the run
# checks that status is documented wherever it can happen.
@pytest.fixture(params=[{}, {"api_key": "schemathesis-key"}], ids=["open", "keyed"])
def app(request: pytest.FixtureRequest) -> FastAPI:
    app = fake_app(**request.param)
    wait_until_ready(app)
    return app


@schema.parametrize()
@hypothesis.settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_api_conforms_to_its_schema(app: FastAPI, case: Any) -> None:
    case.call_and_validate(app=app, checks=CHECKS)
