"""Unit tests for app.output.png: every kind of PNG it writes, read back by Pillow and by libpng."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from app.output.png import grey_png, palette_png, rgb_png


def _pillow(data: bytes) -> PngImagePlugin.PngImageFile:
    image = Image.open(io.BytesIO(data))
    assert isinstance(image, PngImagePlugin.PngImageFile)
    image.load()  # checks every chunk's CRC and the zlib stream's checksum
    return image


def _libpng(data: bytes) -> np.ndarray:
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None
    return decoded


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk, in file order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    # A smooth gradient with mild noise, like a photo.
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(height), np.arange(width))[..., None] // 2 + [0, 40, 80]
    return np.clip(ramp + rng.integers(0, 4, size=(height, width, 3)), 0, 255).astype(np.uint8)


SHAPES = [(1, 1), (1, 7), (7, 1), (37, 53)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_palette_png_round_trip(shape: tuple[int, int], level: int) -> None:
    rng = np.random.default_rng(level)
    indices = rng.integers(0, 256, size=shape, dtype=np.uint8)
    palette = rng.integers(0, 256, size=768).tolist()
    data = palette_png(indices, palette, level)
    image = _pillow(data)
    assert image.mode == "P"
    assert image.size == shape[::-1]
    np.testing.assert_array_equal(np.asarray(image), indices)
    assert image.getpalette() == palette
    # libpng expands the palette: each pixel its colour (BGR).
    colours = np.array(palette, dtype=np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(_libpng(data), colours[indices][..., ::-1])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_png_round_trip(shape: tuple[int, int], dtype: type) -> None:
    values = np.random.default_rng(3).integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)
    data = grey_png(values)
    image = _pillow(data)
    assert image.mode == ("L" if dtype == np.uint8 else "I;16")
    np.testing.assert_array_equal(np.asarray(image).astype(dtype), values)
    decoded = _libpng(data)
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, values)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("level", [0, 1, 9])
def test_rgb_png_round_trip(shape: tuple[int, int], level: int) -> None:
    image = _photo(*shape, seed=level)
    data = rgb_png(image, level)
    decoded = _pillow(data)
    assert decoded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(decoded), image)
    np.testing.assert_array_equal(_libpng(data), image[..., ::-1])


def test_strided_inputs_are_written_as_their_values() -> None:
    rng = np.random.default_rng(5)
    big = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    photo = big[::2, 1::3]  # neither rows nor pixels contiguous
    np.testing.assert_array_equal(np.asarray(_pillow(rgb_png(photo))), photo)
    grey = big[..., 1].T
    np.testing.assert_array_equal(np.asarray(_pillow(grey_png(grey))), grey)
    for wide in (big[..., 0].astype(np.uint16)[:, ::-1] * 257, big[..., 2].astype(np.uint16).T):
        decoded = np.asarray(_pillow(grey_png(wide))).astype(np.uint16)
        np.testing.assert_array_equal(decoded, wide)


def test_photos_are_up_filtered_and_huffman_coded_masks_unfiltered() -> None:
    photo = _photo(120, 160, seed=9)
    stored, packed = rgb_png(photo, 0), rgb_png(photo, 1)
    assert len(stored) > photo.nbytes  # level 0 stores the rows
    assert len(packed) < 0.6 * photo.nbytes
    rows = zlib.decompress(dict(_chunks(packed))[b"IDAT"])
    assert rows[:: 160 * 3 + 1] == bytes([2]) * 120  # filter byte "up" on every row
    mask = np.zeros((50, 70), dtype=np.uint8)
    mask[10:30, 20:60] = 7
    rows = zlib.decompress(dict(_chunks(grey_png(mask)))[b"IDAT"])
    assert rows[::71] == bytes(50)  # filter byte "none" on every row
    assert len(grey_png(mask)) < 200  # runs of one value: a few bytes per row at most


def test_levels_above_1_search_for_repeats() -> None:
    # Every row the same ramp: run-length coding (level 1) finds nothing, a full search does.
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 4))
    fast, small = grey_png(ramp, 1), grey_png(ramp, 9)
    assert len(small) < len(fast) / 10
    np.testing.assert_array_equal(np.asarray(_pillow(small)), np.asarray(_pillow(fast)))


@pytest.mark.parametrize("text", ['[{"label": "chien"}, {"label": "Öl ∑ 犬"}]', "x" * 5000, ""])
def test_texts_are_itxt_chunks_before_the_pixels(text: str) -> None:
    data = grey_png(np.zeros((3, 4), dtype=np.uint8), texts={"instances": text})
    assert _pillow(data).text["instances"] == text
    kinds = [kind for kind, _ in _chunks(data)]
    assert kinds == [b"IHDR", b"iTXt", b"IDAT", b"IEND"]
    body = dict(_chunks(data))[b"iTXt"]
    compressed = body[len(b"instances\0")]
    assert compressed == (len(text.encode()) > 1024)
    assert len(body) < 200 or not compressed


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: palette_png(np.zeros((2, 2), np.int32), [0, 0, 0]), "uint8"),
        (lambda: palette_png(np.zeros((2, 2, 1), np.uint8), [0, 0, 0]), r"\(h, w\)"),
        (lambda: palette_png(np.zeros((2, 2), np.uint8), [0, 0]), "RGB triples"),
        (lambda: palette_png(np.zeros((2, 2), np.uint8), [0] * 771), "RGB triples"),
        (lambda: grey_png(np.zeros((2, 2), np.float32)), "uint8/uint16"),
        (lambda: rgb_png(np.zeros((2, 2, 4), np.uint8)), "RGB"),
        (lambda: rgb_png(np.zeros((2, 2, 3), np.uint8), 10), "0-9"),
        (lambda: grey_png(np.zeros((2, 2), np.uint8), -1), "0-9"),
        (lambda: grey_png(np.zeros((2, 0), np.uint8)), "at least one pixel"),
        (lambda: rgb_png(np.zeros((0, 3, 3), np.uint8)), "at least one pixel"),
        (lambda: palette_png(np.full((2, 2), 2, np.uint8), [0] * 6), "past the palette"),
    ],
)
def test_bad_arguments_say_what_is_wrong(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
