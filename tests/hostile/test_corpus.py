"""Every hostile case, in every request form, to both inference endpoints.

Each test asserts the exact status (and error code) docs/api.md names, that no answer is a 5xx,
and that the same server then answers a fixed normal request with the very same bytes it
gave before the hostile one.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.api.conftest import Served, encode, sample_image
from tests.hostile.corpus import BODY_CAP, CASE_NAMES, Case, build_corpus

ENDPOINTS = ["/segment", "/instances"]
FORMS = ["multipart", "raw", "base64"]
NORMAL_IMAGE = encode(sample_image(40, 30))

_corpus: dict[str, Case] = {}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_body_bytes": BODY_CAP}


def case_named(name: str) -> Case:
    if not _corpus:  # built once per session, on first use (about half a second)
        _corpus.update((case.name, case) for case in build_corpus())
    return _corpus[name]


def request_kwargs(case: Case, form: str) -> dict[str, Any]:
    if form == "multipart":
        return {"files": {"image": (case.filename, case.data, case.claimed_type)}}
    if form == "raw":
        return {"content": case.data, "headers": {"Content-Type": case.claimed_type}}
    return {"json": {"image": base64.b64encode(case.data).decode("ascii")}}


async def normal(served: Served, endpoint: str) -> httpx.Response:
    response = await served.client.post(
        endpoint, content=NORMAL_IMAGE, headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200, response.text
    return response


def test_the_corpus_is_large_and_varied() -> None:
    cases = [case_named(name) for name in CASE_NAMES]
    assert len(cases) >= 30
    statuses = {case.status for case in cases}
    assert statuses == {200, 400, 413, 415, 422}
    assert len({case.data for case in cases}) == len(cases)  # no case repeats another


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", CASE_NAMES)
async def test_hostile_case(served: Served, name: str, form: str, endpoint: str) -> None:
    case = case_named(name)
    before = await normal(served, endpoint)

    response = await served.client.post(endpoint, **request_kwargs(case, form))

    assert response.status_code < 500, response.text
    assert response.status_code == case.status, response.text
    if case.code is None:
        assert response.headers["content-type"] in ("image/png", "application/json")
    else:
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == case.code
        assert len(error["message"]) > 10
    after = await normal(served, endpoint)
    assert after.content == before.content
