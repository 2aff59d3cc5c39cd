"""Animated images that declare huge frames are refused from their headers (413), before a
decoder allocates anything for their pixels."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, ImageFile

from app.errors import ImageTooLarge
from app.imaging import ImageLimits, decode_image


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (16, 16), (60 * k, 0, 0)) for k in range(3)]
    buffer = io.BytesIO()
    options = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], **options)
    return buffer.getvalue()


def _webp_with_canvas(width: int, height: int) -> bytes:
    """A real animated WebP whose VP8X header declares a (width, height) canvas."""
    data = bytearray(_animated("WEBP"))
    at = data.find(b"VP8X")
    assert at > 0
    data[at + 12 : at + 15] = (width - 1).to_bytes(3, "little")
    data[at + 15 : at + 18] = (height - 1).to_bytes(3, "little")
    return bytes(data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _apng_with_size(width: int, height: int) -> bytes:
    """A real APNG whose IHDR and first frame control declare (width, height)."""
    data = _animated("PNG")
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            body = struct.pack(">II", width, height) + body[8:]
        elif kind == b"fcTL" and struct.unpack(">I", body[:4])[0] == 0:
            body = body[:4] + struct.pack(">II", width, height) + body[12:]
        chunks.append(_png_chunk(kind, body))
        at += 12 + length
    return data[:8] + b"".join(chunks)


@pytest.mark.parametrize(
    "data",
    [_webp_with_canvas(10_000, 9_000), _apng_with_size(10_000, 9_000)],
    ids=["webp", "png"],
)
def test_huge_animated_frames_are_refused_from_the_header(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Image.open(io.BytesIO(data)) as opened:  # the header really says so
        assert opened.size == (10_000, 9_000)
        assert getattr(opened, "is_animated", False)
        plugin = type(opened)  # WebPImageFile, PngImageFile: each has its own load()
    loads: list[object] = []

    def spy(self: ImageFile.ImageFile) -> None:
        loads.append(self)
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(plugin, "load", spy)
    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(ImageTooLarge, match="10000x9000 = 90000000 pixels"):
        decode_image(data, ImageLimits(max_pixels=40_000_000, max_side=10_000))
    assert loads == []  # no decoder ran: the caps were checked on the header alone
