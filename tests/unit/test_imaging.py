"""Unit tests for app.imaging: every image is generated in memory with Pillow."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from app import imaging
from app.errors import BadRequest, ImageTooLarge, UndecodableImage, UnsupportedMediaType
from app.imaging import ImageLimits, decode_image, sniff_format
from tests.hostile.corpus import progressive_jpeg

ALLOWED_TEXT = "JPEG, PNG, WEBP, BMP"


def encode(im: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def rgb_array(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_chunk(tag: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(tag + payload)
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height (8-bit grey) with a few bytes of body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def assert_fresh_rgb(out: np.ndarray, height: int, width: int) -> None:
    assert out.shape == (height, width, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    assert out.flags.writeable


# --- formats -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_sniff_format_allowed(fmt: str) -> None:
    assert sniff_format(encode(Image.new("RGB", (3, 2)), fmt)) == fmt


@pytest.mark.parametrize(
    "data", [b"", b"GIF89a....", b"BMW is a car maker, not a bitmap", b"\xff\xd8", b"RIFF1234WAVE"]
)
def test_sniff_format_rejects(data: bytes) -> None:
    assert sniff_format(data) is None


@pytest.mark.parametrize(
    ("fmt", "kwargs"), [("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True})]
)
def test_lossless_formats_round_trip_exactly(fmt: str, kwargs: dict[str, Any]) -> None:
    pixels = rgb_array(7, 5)
    out = decode_image(encode(Image.fromarray(pixels), fmt, **kwargs))
    assert_fresh_rgb(out, 5, 7)
    np.testing.assert_array_equal(out, pixels)


def test_jpeg_round_trips_closely() -> None:
    # Solid 16x16 blocks aligned to JPEG's MCUs survive compression almost unchanged.
    colours = rgb_array(4, 3, seed=1)
    pixels = np.kron(colours, np.ones((16, 16, 1), dtype=np.uint8))
    out = decode_image(encode(Image.fromarray(pixels), "JPEG", quality=95, subsampling=0))
    assert_fresh_rgb(out, 48, 64)
    assert np.abs(out.astype(int) - pixels.astype(int)).max() <= 4


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "GIF"), ("TIFF", "TIFF"), ("ICO", "ICO")])
def test_disallowed_image_formats_are_named(fmt: str, name: str) -> None:
    data = encode(Image.new("RGB", (16, 16), (1, 2, 3)), fmt)
    with pytest.raises(UnsupportedMediaType) as info:
        decode_image(data)
    assert f"unsupported image format {name}" in info.value.message
    assert ALLOWED_TEXT in info.value.message


@pytest.mark.parametrize("fmt", ["TIFF", "GIF", "ICO", "TGA"])
def test_pillow_itself_refuses_formats_outside_the_allowlist(
    monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    # Even if the magic-byte check were fooled, Pillow is only allowed the four decoders
    # (formats=ALLOWED_FORMATS): the file's own decoder never runs, so it cannot decode.
    monkeypatch.setattr(imaging, "sniff_format", lambda data: "PNG")
    data = encode(Image.new("RGB", (8, 8), (9, 9, 9)), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow alone would decode it
    with pytest.raises(UndecodableImage, match="invalid header"):
        decode_image(data)


def test_tga_is_not_mistaken_for_an_icon() -> None:
    # Uncompressed TGA starts with the bytes of CUR's signature; it has no magic of its own.
    data = encode(Image.new("RGB", (16, 16)), "TGA")
    assert data[:4] == b"\x00\x00\x02\x00"
    with pytest.raises(UnsupportedMediaType, match="not an image in a recognised format"):
        decode_image(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x13" + np.random.default_rng(0).bytes(999),
        b"hello, this is plain text",
        b'{"image": "aGVsbG8="}',
        b"BMW is a car maker, not a bitmap",
    ],
)
def test_non_images_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        decode_image(data)
    assert "not an image" in info.value.message
    assert ALLOWED_TEXT in info.value.message


def test_empty_is_bad_request() -> None:
    with pytest.raises(BadRequest, match="empty image"):
        decode_image(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_undecodable(fmt: str) -> None:
    data = encode(Image.fromarray(rgb_array(64, 64)), fmt)
    with pytest.raises(UndecodableImage, match=f"could not decode the {fmt} image: .*truncated"):
        decode_image(data[: len(data) // 2])


def test_truncated_data_is_never_padded() -> None:
    # With Pillow's LOAD_TRUNCATED_IMAGES on, the truncated PNG above would decode (padded).
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_signature_only_png_is_undecodable() -> None:
    with pytest.raises(UndecodableImage, match="could not decode the PNG image: invalid header"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)


def test_unexpected_pillow_errors_become_undecodable(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: ImageFile.ImageFile) -> None:
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken)
    with pytest.raises(UndecodableImage, match="PNG image: decoder exploded"):
        decode_image(encode(Image.new("RGB", (2, 2)), "PNG"))


# --- size limits ---------------------------------------------------------------------


def test_huge_header_is_too_large_without_decoding() -> None:
    # 100000 x 100000 would be 10 GB of pixels; the body is a few bytes.
    with pytest.raises(ImageTooLarge, match="10000000000 pixels, over the limit of 40000000"):
        decode_image(png_header_only(100_000, 100_000))


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (20_000, 1, r"longer side \(20000\) exceeds the limit of 10000 pixels"),
        (9_000, 9_000, "81000000 pixels, over the limit of 40000000 pixels"),
    ],
)
def test_limits_are_checked_before_load(
    monkeypatch: pytest.MonkeyPatch, width: int, height: int, message: str
) -> None:
    calls: list[str] = []

    def spy(self: ImageFile.ImageFile) -> None:
        calls.append("load")
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(ImageTooLarge, match=message):
        decode_image(png_header_only(width, height))
    assert calls == []
    # With the limits raised, the same bytes do reach load(): the check is what stopped it.
    with pytest.raises(UndecodableImage):
        decode_image(png_header_only(width, height), ImageLimits(10**9, 10**6))
    assert calls == ["load"]


def test_custom_limits() -> None:
    limits = ImageLimits(max_pixels=100, max_side=12)
    assert decode_image(encode(Image.new("RGB", (10, 10)), "PNG"), limits).shape == (10, 10, 3)
    with pytest.raises(ImageTooLarge, match="11x10 = 110 pixels, over the limit of 100"):
        decode_image(encode(Image.new("RGB", (11, 10)), "PNG"), limits)
    with pytest.raises(ImageTooLarge, match=r"1x13 pixels: its longer side \(13\)"):
        decode_image(encode(Image.new("RGB", (1, 13)), "PNG"), limits)


def test_pillow_bomb_error_is_too_large_even_with_generous_limits() -> None:
    limits = ImageLimits(max_pixels=10**12, max_side=10**6)
    with pytest.raises(ImageTooLarge, match="too large to decode safely"):
        decode_image(png_header_only(100_000, 100_000), limits)


def test_pillow_bomb_warning_is_too_large_where_warnings_are_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pillow warns between MAX_IMAGE_PIXELS and twice that; shrink it to reach that band.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = encode(Image.new("RGB", (12, 10)), "PNG")  # 120 pixels: a warning, not an error
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLarge, match="too large to decode safely"):
            decode_image(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert decode_image(data).shape == (10, 12, 3)  # our own limits are what apply


@pytest.mark.parametrize(
    ("tag", "header"), [(b"zTXt", b"Comment\x00\x00"), (b"iCCP", b"icc\x00\x00")]
)
def test_png_metadata_that_expands_hugely_is_too_large(tag: bytes, header: bytes) -> None:
    data = encode(Image.new("RGB", (4, 4)), "PNG")
    iend = data.index(b"IEND") - 4
    bomb = png_chunk(tag, header + zlib.compress(b"A" * 20_000_000, 9))  # ~20 KB on the wire
    with pytest.raises(ImageTooLarge, match="compressed metadata .* expands past"):
        decode_image(data[:iend] + bomb + data[iend:])


def test_jpeg_scans_are_counted_through_the_marker_structure() -> None:
    baseline = encode(Image.fromarray(rgb_array(64, 48)), "JPEG")
    restarts = encode(Image.fromarray(rgb_array(64, 48)), "JPEG", restart_marker_blocks=1)
    assert b"\xff\xd0" in restarts
    assert imaging._count_jpeg_scans(baseline, 100) == 1
    assert imaging._count_jpeg_scans(restarts, 100) == 1
    assert imaging._count_jpeg_scans(progressive_jpeg(), 100) == 10
    assert imaging._count_jpeg_scans(progressive_jpeg(50), 100) == 60
    assert imaging._count_jpeg_scans(progressive_jpeg(500), 100) == 101  # stops early
    # SOS bytes inside a metadata segment are not scans.
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + 2000) + b"Exif\x00\x00" + b"\xff\xda" * 1000
    assert imaging._count_jpeg_scans(baseline[:2] + app1 + baseline[2:], 100) == 1
    assert decode_image(baseline[:2] + app1 + baseline[2:]).shape == (48, 64, 3)


def test_a_progressive_jpeg_bomb_is_too_large() -> None:
    assert decode_image(progressive_jpeg(90)).shape == (48, 64, 3)  # 100 scans: fine
    with pytest.raises(ImageTooLarge, match="more than 100 progressive scans"):
        decode_image(progressive_jpeg(91))


# --- EXIF orientation ----------------------------------------------------------------


def marked_image() -> Image.Image:
    """4 wide x 2 tall, black, with a red marker in the stored top-left corner."""
    im = Image.new("RGB", (4, 2))
    im.putpixel((0, 0), (255, 0, 0))
    return im


def with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize(("orientation", "marker"), [(6, (0, 1)), (8, (3, 0)), (3, (1, 3))])
def test_exif_orientation_is_applied(orientation: int, marker: tuple[int, int]) -> None:
    im = marked_image()
    out = decode_image(encode(im, "PNG", exif=with_orientation(orientation)))
    expected_shape = (2, 4, 3) if orientation == 3 else (4, 2, 3)
    assert out.shape == expected_shape
    assert out.flags.c_contiguous
    red = np.argwhere(out[:, :, 0] == 255)
    assert [tuple(p) for p in red] == [marker]


def test_exif_orientation_in_jpeg_swaps_sides() -> None:
    im = Image.new("RGB", (32, 16), (90, 90, 90))
    out = decode_image(encode(im, "JPEG", exif=with_orientation(6)))
    assert out.shape == (32, 16, 3)


def test_malformed_exif_is_ignored() -> None:
    im = marked_image()
    out = decode_image(encode(im, "PNG", exif=b"garbage"))
    np.testing.assert_array_equal(out, np.asarray(im))


def test_failing_exif_transpose_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(image: Image.Image) -> Image.Image:
        raise SyntaxError("bad EXIF")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    im = marked_image()
    out = decode_image(encode(im, "PNG", exif=with_orientation(6)))
    np.testing.assert_array_equal(out, np.asarray(im))


# --- modes ---------------------------------------------------------------------------


def grey(*values: int) -> np.ndarray:
    """The expected RGB row for grey ``values``."""
    return np.repeat(np.array([values], dtype=np.uint8)[:, :, None], 3, axis=2)


@pytest.mark.parametrize("fmt", ["PNG", "BMP"])
def test_mode_1(fmt: str) -> None:
    im = Image.new("1", (3, 1))
    im.putpixel((1, 0), 1)
    data = encode(im, fmt)
    assert Image.open(io.BytesIO(data)).mode == "1"
    np.testing.assert_array_equal(decode_image(data), grey(0, 255, 0))


def test_mode_l() -> None:
    im = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    np.testing.assert_array_equal(decode_image(encode(im, "PNG")), grey(0, 77, 255))


def test_mode_la_composites_onto_black() -> None:
    im = Image.fromarray(np.array([[[200, 255], [200, 0], [200, 128]]], dtype=np.uint8), "LA")
    # 200 * 128 / 255 = 100.39 -> 100
    np.testing.assert_array_equal(decode_image(encode(im, "PNG")), grey(200, 0, 100))


def palette_image() -> Image.Image:
    im = Image.new("P", (3, 1))
    im.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    for x in range(3):
        im.putpixel((x, 0), x)
    return im


@pytest.mark.parametrize("fmt", ["PNG", "BMP"])
def test_mode_p(fmt: str) -> None:
    data = encode(palette_image(), fmt)
    assert Image.open(io.BytesIO(data)).mode == "P"
    expected = [[[10, 20, 30], [40, 50, 60], [70, 80, 90]]]
    np.testing.assert_array_equal(decode_image(data), expected)


def test_mode_p_with_transparency() -> None:
    data = encode(palette_image(), "PNG", transparency=1)
    reopened = Image.open(io.BytesIO(data))
    assert reopened.mode == "P"
    assert "transparency" in reopened.info
    expected = [[[10, 20, 30], [0, 0, 0], [70, 80, 90]]]
    np.testing.assert_array_equal(decode_image(data), expected)


@pytest.mark.parametrize(
    ("fmt", "kwargs"), [("PNG", {}), ("WEBP", {"lossless": True, "exact": True})]
)
def test_mode_rgba_composites_onto_black(fmt: str, kwargs: dict[str, Any]) -> None:
    pixels = np.array(
        [[[255, 0, 0, 0], [200, 100, 50, 255], [255, 255, 255, 128], [100, 200, 0, 64]]],
        dtype=np.uint8,
    )
    out = decode_image(encode(Image.fromarray(pixels, "RGBA"), fmt, **kwargs))
    # round(c * a / 255): 255*128/255 = 128; 100*64/255 = 25.1 -> 25; 200*64/255 = 50.2 -> 50
    expected = [[[0, 0, 0], [200, 100, 50], [128, 128, 128], [25, 50, 0]]]
    assert_fresh_rgb(out, 1, 4)
    np.testing.assert_array_equal(out, expected)


def test_transparency_keys_of_l_and_rgb_become_black() -> None:
    grey_im = Image.fromarray(np.array([[0, 200, 50]], dtype=np.uint8))
    out = decode_image(encode(grey_im, "PNG", transparency=200))
    np.testing.assert_array_equal(out, grey(0, 0, 50))
    rgb_im = Image.fromarray(np.array([[[10, 20, 30], [1, 2, 3]]], dtype=np.uint8))
    out = decode_image(encode(rgb_im, "PNG", transparency=(10, 20, 30)))
    np.testing.assert_array_equal(out, [[[0, 0, 0], [1, 2, 3]]])


def test_mode_cmyk_jpeg() -> None:
    cmyk = np.zeros((16, 48, 4), dtype=np.uint8)
    cmyk[:, 16:32] = (255, 0, 0, 0)  # pure cyan ink
    cmyk[:, 32:] = (0, 0, 0, 128)  # half black
    data = encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=100)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    expected = np.array([[255, 255, 255], [0, 255, 255], [127, 127, 127]])
    assert np.abs(out[8, [8, 24, 40]].astype(int) - expected).max() <= 2


def test_mode_cmyk_exact_rule() -> None:
    im = Image.fromarray(np.array([[[100, 50, 25, 10], [0, 0, 0, 128]]], dtype=np.uint8), "CMYK")
    # round((255 - C) * (255 - K) / 255): 155*245/255 = 148.9 -> 149, ...
    np.testing.assert_array_equal(imaging._to_rgb(im), [[[149, 197, 221], [127, 127, 127]]])


def test_mode_i16_png() -> None:
    values = np.array([[0, 32896, 65535, 128, 129, 257 * 77]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    np.testing.assert_array_equal(decode_image(data), grey(0, 128, 255, 0, 1, 77))


def test_mode_i16_big_endian() -> None:
    im = Image.frombytes("I;16B", (2, 1), b"\xff\xff\x80\x80")
    np.testing.assert_array_equal(imaging._to_rgb(im), grey(255, 128))


def test_mode_i() -> None:
    in_range = Image.fromarray(np.array([[0, 65535, 257 * 3]], dtype=np.int32))
    assert in_range.mode == "I"
    np.testing.assert_array_equal(imaging._to_rgb(in_range), grey(0, 255, 3))
    # Outside 0..65535: stretched over its own min..max (-10 -> 0, 10 -> 51, 90 -> 255).
    negative = Image.fromarray(np.array([[-10, 10, 90]], dtype=np.int32))
    np.testing.assert_array_equal(imaging._to_rgb(negative), grey(0, 51, 255))
    wide = Image.fromarray(np.array([[0, 14_000, 70_000]], dtype=np.int32))
    np.testing.assert_array_equal(imaging._to_rgb(wide), grey(0, 51, 255))


def test_mode_f() -> None:
    im = Image.fromarray(np.array([[0.0, 0.2, 1.0, 0.6]], dtype=np.float32))
    assert im.mode == "F"
    np.testing.assert_array_equal(imaging._to_rgb(im), grey(0, 51, 255, 153))
    stretched = Image.fromarray(np.array([[-2.0, 0.0, 8.0]], dtype=np.float32))
    np.testing.assert_array_equal(imaging._to_rgb(stretched), grey(0, 51, 255))
    constant = Image.fromarray(np.full((1, 3), 7.5, dtype=np.float32))
    np.testing.assert_array_equal(imaging._to_rgb(constant), grey(0, 0, 0))
    with_nan = Image.fromarray(np.array([[np.nan, 0.0, 10.0]], dtype=np.float32))
    np.testing.assert_array_equal(imaging._to_rgb(with_nan), grey(0, 0, 255))


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("YCbCr", (128, 128, 128), (128, 128, 128)),
        ("HSV", (0, 0, 200), (200, 200, 200)),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
        ("RGBa", (100, 50, 0, 128), (100, 50, 0)),  # premultiplied: already "on black"
        ("La", (100, 128), (100, 100, 100)),
    ],
)
def test_other_modes(mode: str, value: tuple[int, ...], expected: tuple[int, ...]) -> None:
    out = imaging._to_rgb(Image.new(mode, (2, 1), value))
    assert_fresh_rgb(out, 1, 2)
    assert np.abs(out.astype(int) - np.array(expected)).max() <= 1


def test_mode_pa_composites_onto_black() -> None:
    pa = palette_image().convert("PA")
    pa.putpixel((0, 0), (0, 0))  # palette entry 0 with alpha 0
    np.testing.assert_array_equal(imaging._to_rgb(pa), [[[0, 0, 0], [40, 50, 60], [70, 80, 90]]])


# --- copying out of Pillow -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_strip_copies_are_exact(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setattr(imaging, "_STRIP_BYTES", 100)  # 3-row strips on a 9-wide image
    pixels = rgb_array(9, 31, seed=3)
    source = Image.fromarray(pixels).convert(mode)
    expected = np.asarray(source.convert("RGB")) if mode != "RGBA" else pixels
    out = decode_image(encode(source, "PNG"))
    assert_fresh_rgb(out, 31, 9)
    np.testing.assert_array_equal(out, expected)


def test_copying_out_holds_about_one_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whole-image tobytes() (as np.array(image) does) holds its chunks, their join and the
    # array at once: about 3x the array. Strips keep the Python-side peak near 1x (the
    # array plus two strips: the test scales the strip down with the image).
    monkeypatch.setattr(imaging, "_STRIP_BYTES", 256 * 1024)
    image = Image.fromarray(rgb_array(1500, 1000, seed=4))
    tracemalloc.start()
    try:
        out = imaging._to_array(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (1000, 1500, 3)
    assert peak < 1.5 * out.nbytes


# --- animations ----------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "kwargs"), [("WEBP", {"lossless": True}), ("PNG", {})])
def test_animated_images_decode_the_first_frame(fmt: str, kwargs: dict[str, Any]) -> None:
    first = Image.new("RGB", (8, 6), (200, 10, 10))
    second = Image.new("RGB", (8, 6), (10, 10, 200))
    data = encode(first, fmt, save_all=True, append_images=[second], duration=100, **kwargs)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    out = decode_image(data)
    assert_fresh_rgb(out, 6, 8)
    assert (out == (200, 10, 10)).all()
