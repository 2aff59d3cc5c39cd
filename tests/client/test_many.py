"""predict_many and image inputs, against an httpx.MockTransport that answers as docs/api.md
says a service answers many images in one request."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from segserve_client import (
    AsyncClient,
    Client,
    ImageInput,
    Prediction,
    SegmentResult,
    SegserveError,
    expand_inputs,
)
from segserve_client._images import array_to_png, image_payload


def _png(seed: int, size: tuple[int, int] = (6, 4)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _parts(request: httpx.Request) -> list[bytes]:
    """The bodies of the multipart parts named image."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    out = []
    for part in request.content.split(b"--" + boundary)[1:-1]:
        head, _, body = part.partition(b"\r\n\r\n")
        assert b'name="image"' in head
        out.append(body[:-2])  # the CRLF before the next boundary
    return out


def _answer(data: bytes, fmt: str) -> dict[str, object]:
    """What the fake service answers for one image: its size, or an error."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
    except Exception:
        return {"error": {"code": "undecodable_image", "message": "cannot decode"}, "status": 422}
    if fmt == "png":
        buffer = io.BytesIO()
        Image.fromarray(np.full((height, width), 2, dtype=np.uint8), "L").save(buffer, "PNG")
        return {"media_type": "image/png", "data": base64.b64encode(buffer.getvalue()).decode()}
    return {"model": "m", "width": width, "height": height, "segments": []}


class FakeService:
    """Answers /segment as docs/api.md says: one part, the single answer; several, the
    results list. ``many`` False: a service from before many-images requests (400)."""

    def __init__(self, many: bool = True) -> None:
        self.many = many
        self.requests: list[int] = []  # images per request

    def __call__(self, request: httpx.Request) -> httpx.Response:
        parts = _parts(request)
        fmt = request.url.params.get("format", "png")
        self.requests.append(len(parts))
        timing = {"Server-Timing": f'infer;dur=5, images;desc="{len(parts)}"'}
        if len(parts) > 1:
            if not self.many:
                error = {"error": {"code": "bad_request", "message": "one file part"}}
                return httpx.Response(400, json=error)
            results = [_answer(part, fmt) for part in parts]
            return httpx.Response(200, json={"results": results}, headers=timing)
        entry = _answer(parts[0], fmt)
        if "error" in entry:
            return httpx.Response(int(entry.pop("status")), json=entry)  # type: ignore[call-overload]
        if fmt == "png":
            return httpx.Response(200, content=base64.b64decode(entry["data"]), headers=timing)  # type: ignore[arg-type]
        return httpx.Response(200, json=entry, headers=timing)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for k in range(5):
        (tmp_path / f"img{k}.png").write_bytes(_png(k, (6 + k, 4)))
    (tmp_path / "img2b.JPG").write_bytes(b"\xff\xd8\xff not really a jpeg")  # broken
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.png").write_bytes(_png(9))
    return tmp_path


def test_expand_inputs_lists_a_folders_images_in_name_order(folder: Path) -> None:
    names = [Path(p).name for p in expand_inputs([folder])]  # type: ignore[arg-type]
    assert names == ["img0.png", "img1.png", "img2.png", "img2b.JPG", "img3.png", "img4.png"]
    deep = expand_inputs(folder, recursive=True)
    assert any(Path(p).name == "deep.png" for p in deep)  # type: ignore[arg-type]
    array = np.zeros((2, 2, 3), dtype=np.uint8)
    assert expand_inputs(array)[0] is array
    assert expand_inputs([b"x", str(folder / "img0.png")]) == [b"x", str(folder / "img0.png")]


def test_predict_many_over_a_folder_in_groups_reports_the_broken_file(folder: Path) -> None:
    service = FakeService()
    seen: list[Prediction] = []
    with Client("http://s", transport=httpx.MockTransport(service)) as client:
        predictions = client.predict_many(
            [folder], batch_size=4, concurrency=2, format="json", on_result=seen.append
        )
    assert sorted(service.requests) == [2, 4]  # 6 images, 4 + 2
    assert [Path(p.source).name for p in predictions] == [
        "img0.png",
        "img1.png",
        "img2.png",
        "img2b.JPG",
        "img3.png",
        "img4.png",
    ]
    assert [p.index for p in predictions] == list(range(6))
    assert len(seen) == 6
    broken = predictions[3]
    assert not broken.ok and broken.result is None
    assert broken.error is not None and (broken.error.status, broken.error.code) == (
        422,
        "undecodable_image",
    )
    widths = []
    for p in predictions[:3] + predictions[4:]:
        assert p.ok and isinstance(p.result, SegmentResult)
        widths.append(p.result.width)
        assert p.result.timing["images"] in (2, 4)
    assert widths == [6, 7, 8, 9, 10]


def test_predict_many_png_entries_and_single_requests(folder: Path) -> None:
    service = FakeService()
    images = [folder / "img0.png", folder / "img1.png", folder / "img3.png"]
    with Client("http://s", transport=httpx.MockTransport(service)) as client:
        grouped = client.predict_many(images, format="png", batch_size=2)
        single = client.predict_many(images, format="png", batch_size=1)
    assert sorted(service.requests) == [1, 1, 1, 1, 2]
    for a, b in zip(grouped, single, strict=True):
        assert a.result is not None and b.result is not None
        assert a.result.format == b.result.format == "png"
        assert isinstance(a.result, SegmentResult) and isinstance(b.result, SegmentResult)
        assert a.result.class_map is not None and b.result.class_map is not None
        np.testing.assert_array_equal(a.result.class_map, b.result.class_map)
        assert (a.result.class_map == 2).all()


def test_predict_many_falls_back_to_single_requests_on_400(folder: Path) -> None:
    service = FakeService(many=False)
    with Client("http://s", transport=httpx.MockTransport(service)) as client:
        predictions = client.predict_many([folder], batch_size=3, format="json")
    assert sorted(service.requests) == [1] * 6 + [3, 3]
    assert [p.ok for p in predictions] == [True, True, True, False, True, True]


def test_predict_many_mixed_inputs_and_an_unreadable_path(tmp_path: Path) -> None:
    service = FakeService()
    pil = Image.new("CMYK", (3, 2))
    array = np.zeros((2, 5, 3), dtype=np.uint8)
    inputs: list[ImageInput] = [_png(1, (4, 4)), pil, array, str(tmp_path / "missing.png")]
    with Client("http://s", transport=httpx.MockTransport(service)) as client:
        predictions = client.predict_many(inputs, format="json")
    assert service.requests == [3]
    assert [p.source for p in predictions][:3] == ["<bytes #0>", "<PIL image #1>", "<array #2>"]
    sizes = [(p.result.width, p.result.height) for p in predictions[:3] if p.result is not None]
    assert sizes == [(4, 4), (3, 2), (5, 2)]
    missing = predictions[3]
    assert missing.error is not None and missing.error.code == "unreadable_image"
    assert missing.source.endswith("missing.png")


def test_a_request_that_fails_fails_each_image_of_its_group(folder: Path) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        error = {"error": {"code": "model_not_found", "message": "no model x"}}
        return httpx.Response(404, json=error)

    with Client("http://s", transport=httpx.MockTransport(handle)) as client:
        predictions = client.predict_many([folder], model="x", batch_size=4)
    assert all(p.error is not None and p.error.code == "model_not_found" for p in predictions)


def test_predict_many_rejects_unknown_parameters() -> None:
    with Client("http://s", transport=httpx.MockTransport(FakeService())) as client:
        with pytest.raises(TypeError, match="score_threshold"):
            client.predict_many([b"x"], task="semantic", score_threshold=0.5)
        with pytest.raises(ValueError, match="task"):
            client.predict_many([b"x"], task="panoptic")  # type: ignore[arg-type]


async def test_the_sync_wrapper_works_inside_a_running_loop(folder: Path) -> None:
    with Client("http://s", transport=httpx.MockTransport(FakeService())) as client:
        predictions = client.predict_many([folder / "img0.png"], format="json")
    assert predictions[0].ok


async def test_async_predict_many_bounds_its_concurrency(folder: Path) -> None:
    import asyncio

    in_flight = peak = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        await request.aread()
        return FakeService()(request)

    async with AsyncClient("http://s", transport=httpx.MockTransport(handle)) as client:
        predictions = await client.predict_many(
            [folder], batch_size=1, concurrency=2, format="json"
        )
    assert peak == 2 and len(predictions) == 6


def test_image_payloads() -> None:
    name, data, media_type = image_payload(np.zeros((3, 4), dtype=np.uint8))
    assert (name, media_type) == ("image.png", "image/png")
    assert Image.open(io.BytesIO(data)).size == (4, 3)
    assert Image.open(io.BytesIO(array_to_png(np.zeros((3, 4, 4), dtype=np.uint8)))).mode == "RGBA"
    assert Image.open(io.BytesIO(image_payload(Image.new("F", (2, 2)))[1])).mode == "RGB"
    with pytest.raises(TypeError, match="uint8"):
        image_payload(np.zeros((3, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="H, W"):
        image_payload(np.zeros((3, 4, 2), dtype=np.uint8))
    with pytest.raises(TypeError, match="path, bytes"):
        image_payload(3)  # type: ignore[arg-type]


def test_errors_are_exceptions_with_their_fields() -> None:
    error = SegserveError("m", status=422, code="c")
    assert json.loads(json.dumps(error.to_dict())) == {"status": 422, "code": "c", "message": "m"}
    assert repr(error) == "SegserveError(status=422, code='c', message='m')"
