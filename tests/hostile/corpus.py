"""A hostile-image corpus, generated in memory: no binary fixture is checked in.

Every :class:`Case` is the bytes of one uploaded file, the media type a client claims for
it, and the status and error code docs/api.md names for it. The expected outcome does not
depend on the request form (multipart, raw body, base64 JSON) nor on the endpoint: the
same bytes get the same answer everywhere.

Sizes are kept small (the largest files are a few hundred KB) so the whole corpus runs in
seconds; the "bombs" claim huge sizes in their headers or expand hugely, they are not huge.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# The corpus app's body cap: small, so "oversized" stays cheap; every other case is below it.
BODY_CAP = 2 * 1024 * 1024

OK = (200, None)
BAD_REQUEST = (400, "bad_request")
PAYLOAD_TOO_LARGE = (413, "payload_too_large")
IMAGE_TOO_LARGE = (413, "image_too_large")
UNSUPPORTED = (415, "unsupported_media_type")
UNDECODABLE = (422, "undecodable_image")


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    claimed_type: str  # Content-Type of the raw body and of the multipart file part
    status: int
    code: str | None  # the error body's code; None for 200

    @property
    def filename(self) -> str:
        return "upload." + self.claimed_type.rsplit("/", 1)[-1]


# --- builders --------------------------------------------------------------------------


def save(im: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def pattern(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A deterministic image with structure, so decoders have real work to do."""
    rng = np.random.default_rng(width * 7919 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def png_chunk(tag: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(tag + payload)
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", crc)


def png_from_rows(width: int, height: int, idat: bytes, depth: int = 8, colour: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_header_claiming(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` grey pixels, with a tiny body."""
    return png_from_rows(width, height, zlib.compress(b"\x00" * 16))


def png_zero_bomb(width: int, height: int) -> bytes:
    """A complete, valid grey PNG of zeros: a few KB on the wire, width x height decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return png_from_rows(width, height, idat)


def png_with_chunks(*chunks: bytes) -> bytes:
    """A small valid PNG with ``chunks`` inserted before IEND."""
    data = save(pattern(8, 8), "PNG")
    iend = data.index(b"IEND") - 4
    return data[:iend] + b"".join(chunks) + data[iend:]


def png_metadata_bomb(tag: bytes, header: bytes, size: int, count: int = 1) -> bytes:
    """``count`` compressed metadata chunks, each expanding to ``size`` bytes."""
    chunk = png_chunk(tag, header + zlib.compress(b"A" * size, 9))
    return png_with_chunks(*([chunk] * count))


def gif_header_claiming(width: int, height: int) -> bytes:
    # Logical screen and image descriptor both claim the size; one tiny LZW block follows.
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + descriptor + b"\x02\x02\x44\x01\x00;"


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 marker is rewritten to claim another size."""
    data = save(pattern(16, 16), "JPEG")
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def bmp_claiming(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = b"\x00" * 64
    return b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54) + info + pixels


def progressive_jpeg(extra_scans: int = 0) -> bytes:
    """A progressive JPEG (10 scans), with its smallest scan repeated ``extra_scans`` times.

    libjpeg decodes every scan over the whole image, so repeated scans cost CPU like the
    end-of-band-run "progressive bombs" do, without hand-made Huffman tables.
    """
    data = save(pattern(64, 48), "JPEG", progressive=True)
    eoi = data.rindex(b"\xff\xd9")
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    scans = [data[a:b] for a, b in zip(starts, [*starts[1:], eoi], strict=True)]
    return data[:eoi] + min(scans, key=len) * extra_scans + data[eoi:]


def jpeg_with_sos_bytes_in_metadata() -> bytes:
    """A baseline JPEG whose APP1 segment is full of start-of-scan marker bytes."""
    return jpeg_with_app1(b"\xff\xda" * 2000)


def exif_with(orientation: Any) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def jpeg_with_app1(payload: bytes) -> bytes:
    """A JPEG with a raw APP1 "Exif" segment holding ``payload`` right after SOI."""
    body = b"Exif\x00\x00" + payload
    segment = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    data = save(pattern(16, 16), "JPEG")
    return data[:2] + segment + data[2:]


def orientation_as_text() -> bytes:
    """EXIF whose Orientation entry is the ASCII string "six" instead of a SHORT."""
    entry = struct.pack("<HHI", 0x0112, 2, 4) + b"six\x00"
    return b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 1) + entry + b"\x00" * 4


def exif_pointing_outside() -> bytes:
    """A TIFF-structured EXIF whose IFD claims 65535 entries at an offset past the end."""
    return b"II*\x00" + struct.pack("<I", 0x7FFFFFF0) + struct.pack("<H", 0xFFFF)


def animated(fmt: str, **kwargs: Any) -> bytes:
    frames = [Image.new("RGB", (24, 16), colour) for colour in ((200, 10, 10), (10, 10, 200))]
    return save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, **kwargs)


def palette_with_transparency() -> bytes:
    im = pattern(32, 24).convert("P")
    return save(im, "PNG", transparency=3)


def cmyk_jpeg_with_adobe_marker() -> bytes:
    data = save(pattern(32, 24, "CMYK"), "JPEG", quality=90)
    assert b"Adobe" in data  # libjpeg writes the APP14 Adobe marker for CMYK
    return data


def sixteen_bit_grey_png() -> bytes:
    values = np.random.default_rng(16).integers(0, 65536, (24, 32), dtype=np.uint16)
    return save(Image.fromarray(values), "PNG")


def sixteen_bit_big_endian_png() -> bytes:
    values = np.arange(32 * 24, dtype=">u2").reshape(24, 32) * 80
    return save(Image.frombytes("I;16B", (32, 24), values.tobytes()), "PNG")


def png_16bit(colour: int, channels: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour or grey+alpha)."""
    width, height = 32, 24
    samples = np.random.default_rng(colour).integers(0, 65536, (height, width * channels))
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in samples)
    return png_from_rows(width, height, zlib.compress(rows), depth=16, colour=colour)


def psd_header() -> bytes:
    return b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 3, 16, 16, 8, 3) + b"\x00" * 64


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("image.png", save(pattern(8, 8), "PNG"))
    return buffer.getvalue()


def oversized_png() -> bytes:
    """A real PNG just over the corpus body cap (noise does not compress)."""
    side = int((BODY_CAP / 3) ** 0.5) + 8
    data = save(pattern(side, side), "PNG", compress_level=0)
    assert len(data) > BODY_CAP
    return data


# --- the corpus --------------------------------------------------------------------------

Builder = Callable[[], bytes]

# name: (builder, claimed Content-Type, (status, code))
_CASES: dict[str, tuple[Builder, str, tuple[int, str | None]]] = {
    # Decompression bombs and huge or impossible sizes: refused from the header.
    "png_header_100000x100000": (
        lambda: png_header_claiming(100_000, 100_000),
        "image/png",
        IMAGE_TOO_LARGE,
    ),
    "png_header_max_uint32": (
        lambda: png_header_claiming(2**31 - 1, 2**31 - 1),
        "image/png",
        IMAGE_TOO_LARGE,
    ),
    "png_zero_bomb_9000x9000": (lambda: png_zero_bomb(9000, 9000), "image/png", IMAGE_TOO_LARGE),
    # ~4 KB that decodes to 3.6 Mpx: within every cap, so it is served like any image.
    "png_zero_bomb_2000x1800_within_caps": (
        lambda: png_zero_bomb(2000, 1800),
        "image/png",
        OK,
    ),
    "png_side_over_cap_12000x8": (lambda: png_zero_bomb(12_000, 8), "image/png", IMAGE_TOO_LARGE),
    # Metadata bombs: compressed text / ICC chunks past Pillow's limits (1 MB a chunk, 64 MB).
    "png_ztxt_bomb_50mb": (
        lambda: png_metadata_bomb(b"zTXt", b"Comment\x00\x00", 50_000_000),
        "image/png",
        IMAGE_TOO_LARGE,
    ),
    "png_iccp_bomb_50mb": (
        lambda: png_metadata_bomb(b"iCCP", b"icc\x00\x00", 50_000_000),
        "image/png",
        IMAGE_TOO_LARGE,
    ),
    "png_ztxt_70_chunks_of_1mb": (
        lambda: png_metadata_bomb(b"zTXt", b"Comment\x00\x00", 1_000_000, count=70),
        "image/png",
        IMAGE_TOO_LARGE,
    ),
    "png_ztxt_small_ok": (
        lambda: png_metadata_bomb(b"zTXt", b"Comment\x00\x00", 10_000),
        "image/png",
        OK,
    ),
    "gif_header_65535x65535": (
        lambda: gif_header_claiming(65_535, 65_535),
        "image/gif",
        UNSUPPORTED,
    ),
    "jpeg_sof_65535x65535": (lambda: jpeg_claiming(65_535, 65_535), "image/jpeg", IMAGE_TOO_LARGE),
    "bmp_header_100000x100000": (
        lambda: bmp_claiming(100_000, 100_000),
        "image/bmp",
        IMAGE_TOO_LARGE,
    ),
    "bmp_negative_width": (lambda: bmp_claiming(-5, 5), "image/bmp", IMAGE_TOO_LARGE),
    "png_zero_size": (lambda: png_header_claiming(0, 0), "image/png", UNDECODABLE),
    "png_zero_height": (lambda: png_header_claiming(5, 0), "image/png", UNDECODABLE),
    "jpeg_zero_size": (lambda: jpeg_claiming(0, 0), "image/jpeg", UNDECODABLE),
    "bmp_zero_size": (lambda: bmp_claiming(0, 0), "image/bmp", UNDECODABLE),
    "jpeg_progressive_bomb_5000_scans": (
        lambda: progressive_jpeg(5000),
        "image/jpeg",
        IMAGE_TOO_LARGE,
    ),
    "jpeg_progressive_ok": (progressive_jpeg, "image/jpeg", OK),
    "jpeg_sos_bytes_in_metadata": (jpeg_with_sos_bytes_in_metadata, "image/jpeg", OK),
    # Truncated and corrupt.
    "jpeg_truncated": (lambda: save(pattern(64, 48), "JPEG")[:600], "image/jpeg", UNDECODABLE),
    "png_truncated": (lambda: save(pattern(64, 48), "PNG")[:800], "image/png", UNDECODABLE),
    "webp_truncated": (lambda: save(pattern(64, 48), "WEBP")[:200], "image/webp", UNDECODABLE),
    "bmp_truncated": (lambda: save(pattern(64, 48), "BMP")[:300], "image/bmp", UNDECODABLE),
    "png_signature_only": (lambda: b"\x89PNG\r\n\x1a\n", "image/png", UNDECODABLE),
    "jpeg_soi_only": (lambda: b"\xff\xd8\xff", "image/jpeg", UNDECODABLE),
    "png_bad_crc": (lambda: png_header_claiming(4, 4)[:-5] + b"\x00" * 5, "image/png", UNDECODABLE),
    "jpeg_garbage_after_soi": (
        lambda: b"\xff\xd8\xff" + bytes(range(256)) * 8,
        "image/jpeg",
        UNDECODABLE,
    ),
    "bmp_bad_pixel_depth": (
        lambda: bmp_claiming(4, 4)[:28] + b"\x63\x00" + bmp_claiming(4, 4)[30:],
        "image/bmp",
        UNDECODABLE,
    ),
    # Wrong magic: the bytes decide, not the claimed type.
    "png_bytes_claimed_jpeg": (lambda: save(pattern(32, 24), "PNG"), "image/jpeg", OK),
    "jpeg_bytes_claimed_png": (lambda: save(pattern(32, 24), "JPEG"), "image/png", OK),
    "webp_bytes_claimed_bmp": (lambda: save(pattern(32, 24), "WEBP"), "image/bmp", OK),
    "gif_bytes_claimed_png": (lambda: save(pattern(32, 24), "GIF"), "image/png", UNSUPPORTED),
    # Formats outside the allowlist.
    "tiff": (lambda: save(pattern(16, 16), "TIFF"), "image/tiff", UNSUPPORTED),
    "tiff_mode_f": (lambda: save(pattern(16, 16, "F"), "TIFF"), "image/tiff", UNSUPPORTED),
    "tiff_mode_i": (lambda: save(pattern(16, 16, "I"), "TIFF"), "image/tiff", UNSUPPORTED),
    "gif_static": (lambda: save(pattern(16, 16), "GIF"), "image/gif", UNSUPPORTED),
    "ico": (lambda: save(pattern(16, 16), "ICO"), "image/x-icon", UNSUPPORTED),
    "psd": (psd_header, "image/vnd.adobe.photoshop", UNSUPPORTED),
    "pdf": (lambda: save(pattern(16, 16), "PDF"), "application/octet-stream", UNSUPPORTED),
    "svg": (
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
        "image/svg+xml",
        UNSUPPORTED,
    ),
    "jpeg2000": (lambda: save(pattern(16, 16), "JPEG2000"), "image/jp2", UNSUPPORTED),
    "avif": (lambda: save(pattern(16, 16), "AVIF"), "image/avif", UNSUPPORTED),
    "qoi": (lambda: save(pattern(16, 16), "QOI"), "image/qoi", UNSUPPORTED),
    "tga": (lambda: save(pattern(16, 16), "TGA"), "image/x-tga", UNSUPPORTED),
    # Not images at all.
    "empty": (lambda: b"", "image/png", BAD_REQUEST),
    "plain_text": (lambda: b"this is not an image, just some text\n", "image/png", UNSUPPORTED),
    "html": (
        lambda: b"<!doctype html><html><body><img src=x></body></html>",
        "image/jpeg",
        UNSUPPORTED,
    ),
    "zip": (zip_archive, "application/octet-stream", UNSUPPORTED),
    "bm_prefixed_text": (lambda: b"BMW is a car maker, not a bitmap", "image/bmp", UNSUPPORTED),
    "random_bytes": (
        lambda: b"\x13" + np.random.default_rng(1).bytes(4095),
        "image/png",
        UNSUPPORTED,
    ),
    "oversized_body": (oversized_png, "image/png", PAYLOAD_TOO_LARGE),
    # Animations: the first frame is decoded (GIF is outside the allowlist).
    "animated_gif": (lambda: animated("GIF"), "image/gif", UNSUPPORTED),
    "animated_webp": (lambda: animated("WEBP", lossless=True), "image/webp", OK),
    "animated_png": (lambda: animated("PNG"), "image/png", OK),
    # Every mode an allowed format can carry.
    "mode_1_png": (lambda: save(pattern(32, 24, "1"), "PNG"), "image/png", OK),
    "mode_1_bmp": (lambda: save(pattern(32, 24, "1"), "BMP"), "image/bmp", OK),
    "mode_l_png": (lambda: save(pattern(32, 24, "L"), "PNG"), "image/png", OK),
    "mode_la_png": (lambda: save(pattern(32, 24, "LA"), "PNG"), "image/png", OK),
    "mode_p_png": (lambda: save(pattern(32, 24, "P"), "PNG"), "image/png", OK),
    "mode_p_bmp": (lambda: save(pattern(32, 24, "P"), "BMP"), "image/bmp", OK),
    "mode_p_trns_png": (palette_with_transparency, "image/png", OK),
    "mode_rgba_png": (lambda: save(pattern(32, 24, "RGBA"), "PNG"), "image/png", OK),
    "mode_rgba_webp": (
        lambda: save(pattern(32, 24, "RGBA"), "WEBP", lossless=True),
        "image/webp",
        OK,
    ),
    "mode_rgba_bmp": (lambda: save(pattern(32, 24, "RGBA"), "BMP"), "image/bmp", OK),
    "mode_cmyk_jpeg_adobe": (cmyk_jpeg_with_adobe_marker, "image/jpeg", OK),
    "mode_ycbcr_jpeg": (lambda: save(pattern(32, 24, "YCbCr"), "JPEG"), "image/jpeg", OK),
    "mode_l_jpeg": (lambda: save(pattern(32, 24, "L"), "JPEG"), "image/jpeg", OK),
    "mode_i16_png": (sixteen_bit_grey_png, "image/png", OK),
    "mode_i16b_png": (sixteen_bit_big_endian_png, "image/png", OK),
    "mode_rgb16_png": (lambda: png_16bit(colour=2, channels=3), "image/png", OK),
    "mode_la16_png": (lambda: png_16bit(colour=4, channels=2), "image/png", OK),
    # Bad EXIF never fails a request.
    "exif_garbage_png": (lambda: save(pattern(32, 24), "PNG", exif=b"garbage"), "image/png", OK),
    "exif_garbage_jpeg": (lambda: jpeg_with_app1(b"\x00\xff" * 300), "image/jpeg", OK),
    "exif_ifd_outside_jpeg": (lambda: jpeg_with_app1(exif_pointing_outside()), "image/jpeg", OK),
    "exif_orientation_9": (
        lambda: save(pattern(32, 24), "JPEG", exif=exif_with(9)),
        "image/jpeg",
        OK,
    ),
    "exif_orientation_0": (
        lambda: save(pattern(32, 24), "PNG", exif=exif_with(0)),
        "image/png",
        OK,
    ),
    "exif_orientation_65535": (
        lambda: save(pattern(32, 24), "PNG", exif=exif_with(65535)),
        "image/png",
        OK,
    ),
    "exif_orientation_text": (
        lambda: save(pattern(32, 24), "PNG", exif=orientation_as_text()),
        "image/png",
        OK,
    ),
    "exif_orientation_6": (
        lambda: save(pattern(32, 24), "JPEG", exif=exif_with(6)),
        "image/jpeg",
        OK,
    ),
    "exif_huge_png": (
        lambda: save(pattern(32, 24), "PNG", exif=b"Exif\x00\x00" + b"\x00" * 1_000_000),
        "image/png",
        OK,
    ),
    "exif_max_app1_jpeg": (lambda: jpeg_with_app1(b"MM\x00*" + b"\xff" * 65_000), "image/jpeg", OK),
    # Tiny and extreme shapes.
    "png_1x1": (lambda: save(pattern(1, 1), "PNG"), "image/png", OK),
    "jpeg_1x1": (lambda: save(pattern(1, 1), "JPEG"), "image/jpeg", OK),
    "webp_1x1": (lambda: save(pattern(1, 1), "WEBP"), "image/webp", OK),
    "bmp_1x1": (lambda: save(pattern(1, 1), "BMP"), "image/bmp", OK),
    "png_1x5000": (lambda: save(pattern(1, 5000), "PNG"), "image/png", OK),
    "png_5000x1": (lambda: save(pattern(5000, 1), "PNG"), "image/png", OK),
}


def build_corpus() -> list[Case]:
    return [
        Case(name, build(), claimed, status, code)
        for name, (build, claimed, (status, code)) in _CASES.items()
    ]


CASE_NAMES = list(_CASES)
