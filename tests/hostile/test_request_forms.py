"""Hostile request envelopes: multipart with extra or missing parts, JSON that is not the form."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.api.conftest import Served, encode, sample_image

PNG = encode(sample_image(16, 12))
PNG_PART = ("a.png", PNG, "image/png")
BOUNDARY = "hostileboundary"


def multipart(*parts: tuple[str, str | None, bytes]) -> dict[str, Any]:
    """A hand-built multipart body: (field name, filename or None for a text field, data)."""
    pieces = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        pieces.append(f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        pieces.append(data + b"\r\n")
    pieces.append(f"--{BOUNDARY}--\r\n".encode())
    body = b"".join(pieces)
    return {
        "content": body,
        "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    }


async def assert_400(served: Served, kwargs: dict[str, Any], *fragments: str) -> None:
    response = await served.client.post("/segment", **kwargs)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    for fragment in fragments:
        assert fragment in error["message"]
    assert served.semantic.batches == []


async def test_the_image_file_part_alone_is_accepted(served: Served) -> None:
    response = await served.client.post("/segment", **multipart(("image", "a.png", PNG)))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("parts", "fragments"),
    [
        ([("image", "a.png", PNG), ("other", "b.png", PNG)], ["'other'", "not accepted"]),
        ([("image", "a.png", PNG), ("image", None, PNG)], ["'image' is a text field"]),
        ([("image", "a.png", PNG), ("note", None, b"hi")], ["'note'", "not accepted"]),
        ([("image", "a.png", PNG), ("a", None, b"1"), ("b", None, b"2")], ["Too many fields"]),
        ([("file", "a.png", PNG)], ["'file'", "not accepted"]),
        ([("image", None, PNG)], ["'image' is a text field", "filename"]),
        ([], ["no file part named 'image'"]),
    ],
)
async def test_multipart_other_than_image_files_is_400(
    served: Served, parts: list[tuple[str, str | None, bytes]], fragments: list[str]
) -> None:
    await assert_400(served, multipart(*parts), *fragments)


async def test_more_image_parts_than_the_cap_are_413(served: Served) -> None:
    cap = 16  # SEGSERVE_MAX_IMAGES_PER_REQUEST's default
    parts = [("image", f"{i}.png", PNG) for i in range(cap + 1)]
    response = await served.client.post("/segment", **multipart(*parts))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "SEGSERVE_MAX_IMAGES_PER_REQUEST" in response.json()["error"]["message"]


async def test_a_flood_of_parts_is_refused_quickly(served: Served) -> None:
    parts = [(f"f{i}", None, b"x") for i in range(20_000)]
    await assert_400(served, multipart(("image", "a.png", PNG), *parts), "Too many fields")


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary="])
async def test_multipart_without_a_usable_boundary_is_400(
    served: Served, content_type: str
) -> None:
    kwargs = {"content": b"--x\r\n\r\n", "headers": {"Content-Type": content_type}}
    await assert_400(served, kwargs, "multipart body refused")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"image": ' + b"[" * 100_000, "nested too deeply"),
        (b"{not json", "malformed JSON body"),
        (b'{"image": "\xff\xfe"}', "malformed JSON body"),
        (b'["image"]', '{"image": "<base64'),
        (b'{"image": 5}', '{"image": "<base64'),
        (b'{"picture": "aGVsbG8="}', '{"image": "<base64'),
        (b'{"image": "aGVsbG8"}', "not valid base64"),
        (b'{"image": "-_-_"}', "not valid base64"),
        (b'{"image": ""}', "no image"),
    ],
)
async def test_json_other_than_base64_image_is_400(
    served: Served, body: bytes, fragment: str
) -> None:
    kwargs = {"content": body, "headers": {"Content-Type": "application/json"}}
    await assert_400(served, kwargs, fragment)


async def test_base64_with_line_breaks_or_a_data_url_is_accepted(served: Served) -> None:
    encoded = base64.encodebytes(PNG).decode()  # wrapped at 76 characters
    assert "\n" in encoded.strip()
    for image in (encoded, "data:image/png;base64," + base64.b64encode(PNG).decode()):
        response = await served.client.post("/segment", json={"image": image})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("settings_overrides", [{"max_body_bytes": 4000}])
async def test_base64_over_the_body_cap_is_413(served: Served) -> None:
    image = base64.b64encode(b"\x00" * 3000).decode()  # 3000 bytes, 4000 once encoded
    response = await served.client.post("/segment", json={"image": image})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "4000" in response.json()["error"]["message"]
