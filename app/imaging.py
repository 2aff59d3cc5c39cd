"""Turn uploaded image bytes into the RGB arrays the models consume.

Only JPEG, PNG, WebP and BMP are accepted. The allowlist is enforced by passing
``formats=ALLOWED_FORMATS`` to Pillow, so no other decoder ever parses request bytes; other
well-known formats are only *named* (from their magic bytes) in the 415 message. The size
from the header is checked against :class:`ImageLimits` before any pixel is decoded. Only
the first frame of an animated image is decoded. PNG metadata (text, ICC profile) that
decompresses past Pillow's limits is refused as too large (413), like an oversized image.
EXIF orientation is applied first; EXIF that cannot be read is ignored (bad EXIF never
fails a request).

Mode conversion to 8-bit RGB:

- ``RGB`` (without a transparency key): used as is.
- ``1``, ``L``, ``P``, ``RGBX``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` (and any other mode
  Pillow can convert) without transparency: Pillow's ``Image.convert("RGB")``. Grey is
  copied into all three channels. CMYK uses Pillow's naive formula, with no colour
  management (embedded ICC profiles are ignored):
  R = round((255 - C) * (255 - K) / 255), likewise G from M and B from Y.
- 16-bit grey (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``): v8 = round(v16 / 257), computed
  as ``(v16 + 128) // 257`` (0 -> 0, 32896 -> 128, 65535 -> 255; the exact inverse of the
  usual 8-to-16-bit expansion v8 * 257).
- 32-bit integer ``I``: if every value lies in 0..65535 it is treated as 16-bit grey (rule
  above; some Pillow versions open 16-bit PNGs as ``I``); otherwise it is stretched
  linearly from the image's own min..max to 0..255, rounded to nearest.
- 32-bit float ``F``: stretched linearly from the image's own min..max to 0..255, rounded
  to nearest; non-finite values count as 0; a constant image becomes all 0.
- Transparency, i.e. an alpha band (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``) or a
  transparency key / palette alpha (``P``, ``1``, ``L``, ``RGB`` with a PNG ``tRNS``
  chunk): converted to RGBA by Pillow, then composited onto BLACK:
  out = round(c * alpha / 255). Fully transparent pixels become (0, 0, 0), the "no
  content" a model expects. Transparency keys of 16/32-bit modes are ignored.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageFile, ImageOps, PngImagePlugin, UnidentifiedImageError

from app.errors import (
    BadRequest,
    ImageTooLarge,
    ServiceError,
    UndecodableImage,
    UnsupportedMediaType,
)

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP")

# Pillow's default, stated here because a truncated upload must be a 422, never a silently
# grey-filled image: with this flag on, load() pads missing data instead of raising.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class ImageLimits:
    """Caps on the decoded size, checked from the header before any pixel is decoded."""

    max_pixels: int = 40_000_000
    max_side: int = 10_000


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# DIB header sizes Pillow's BMP reader understands. "BM" alone is too weak a signature
# (plain text can start with it); requiring a valid header size keeps that a 415.
_BMP_DIB_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})

# Formats we refuse but can name, so the 415 says what was sent. These are prefix checks
# only: no parser for any of these formats ever runs on request bytes.
_OTHER_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "GIF": (b"GIF87a", b"GIF89a"),
    "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),  # classic and BigTIFF
    "PSD": (b"8BPS",),
    "PDF": (b"%PDF",),
    "EPS": (b"%!PS", b"\xc5\xd0\xd3\xc6"),
    "JPEG2000": (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51"),
    "JPEGXL": (b"\x00\x00\x00\x0cJXL \r\n\x87\n", b"\xff\x0a"),
    "QOI": (b"qoif",),
    "DDS": (b"DDS ",),
    "ICNS": (b"icns",),
}
# ISO-BMFF containers ("....ftyp<brand>") carry the format in their brand.
_FTYP_BRANDS = {
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"heic": "HEIF",
    b"heix": "HEIF",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
}

_STRIP_BYTES = 4 * 1024 * 1024  # see _to_array
MAX_JPEG_SCANS = 100  # see _check_jpeg_scans
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ORIENTATION_TAG = ExifTags.Base.Orientation


def sniff_format(data: bytes) -> str | None:
    """The allowed format ``data`` is in, judged by its magic bytes, else ``None``."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == _PNG_SIGNATURE:
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_DIB_HEADER_SIZES:
        return "BMP"
    return None


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> npt.NDArray[np.uint8]:
    """Decode ``data`` into a fresh (H, W, 3) uint8 C-contiguous RGB array, EXIF-oriented.

    Raises BadRequest (empty), UnsupportedMediaType (not an allowed format), ImageTooLarge
    (over ``limits``) or UndecodableImage (truncated or corrupt).
    """
    if not data:
        raise BadRequest("empty image: the request carried 0 bytes of image data")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(_unsupported_message(data))
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
            # Image.open has only parsed the header: enforce our caps before load()
            # allocates and decodes. Pillow's own decompression-bomb check ran inside
            # open() too; its threshold (~89 Mpx warning, ~179 Mpx error) is above our
            # default, so ours is the one that normally applies.
            _check_size(im.size, limits)
            if fmt == "JPEG":
                _check_jpeg_scans(data)
            im.load()  # after open() the current frame is the first one of an animation
            oriented = _apply_exif_orientation(im)
            if oriented is not im:
                im.close()  # free the unrotated pixels now: large images are held twice else
            # Orientation can only swap the sides, and the check is symmetric, so the
            # oriented size is within the same limits already.
            return _to_rgb(oriented)
    except (ServiceError, MemoryError):
        raise  # our own errors carry their meaning; running out of memory is our fault
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception only where warnings are turned into errors.
        raise ImageTooLarge(_bomb_message(exc, limits)) from exc
    except UnidentifiedImageError as exc:
        # Magic bytes matched but the header did not parse (its message names a BytesIO).
        raise UndecodableImage(f"could not decode the {fmt} image: invalid header") from exc
    except Exception as exc:
        if _is_metadata_bomb(exc):
            raise ImageTooLarge(
                f"the {fmt} image's compressed metadata (text or ICC profile) expands past "
                f"the safety limit of {PngImagePlugin.MAX_TEXT_CHUNK} bytes a chunk and "
                f"{PngImagePlugin.MAX_TEXT_MEMORY} in all"
            ) from exc
        # OSError ("image file is truncated"), SyntaxError, ValueError, struct.error...:
        # whatever Pillow raises on bad data is the client's 422, never our 500.
        raise UndecodableImage(f"could not decode the {fmt} image: {_describe(exc)}") from exc


def _check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    side = max(width, height)
    if side > limits.max_side:
        raise ImageTooLarge(
            f"image is {width}x{height} pixels: its longer side ({side}) exceeds the limit "
            f"of {limits.max_side} pixels"
        )
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels} pixels"
        )


def _check_jpeg_scans(data: bytes) -> None:
    # A progressive JPEG decodes every block once per scan, and a scan can cover the whole
    # image in a few bytes (end-of-band runs): thousands of scans make a "progressive bomb"
    # that is small on the wire but takes minutes of CPU. Encoders write about 10 (libjpeg's
    # default script) and rarely more than a few dozen.
    scans = _count_jpeg_scans(data, MAX_JPEG_SCANS)
    if scans > MAX_JPEG_SCANS:
        raise ImageTooLarge(
            f"the JPEG has more than {MAX_JPEG_SCANS} progressive scans, the limit for "
            "decoding it safely (each scan decodes the whole image again)"
        )


def _count_jpeg_scans(data: bytes, stop_after: int) -> int:
    """Start-of-scan markers in ``data``'s marker structure, counting up to ``stop_after`` + 1.

    Walks the segments (so SOS bytes inside metadata, e.g. an EXIF thumbnail, do not count)
    and skips each scan's entropy-coded data to its next marker. Malformed structure just
    ends the count: the decoder reports it.
    """
    pos, end, scans = 2, len(data), 0  # after SOI
    while pos + 1 < end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker != 0xDA:
            continue
        scans += 1
        if scans > stop_after:
            break
        pos = _skip_entropy_coded(data, pos)
    return scans


def _skip_entropy_coded(data: bytes, pos: int) -> int:
    """The position of the first marker at or after ``pos`` in entropy-coded data."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        follower = data[pos + 1]
        if follower == 0x00 or 0xD0 <= follower <= 0xD7:  # stuffed 0xFF, restart marker
            pos += 2
            continue
        return pos


def _apply_exif_orientation(im: Image.Image) -> Image.Image:
    try:
        orientation = im.getexif().get(_ORIENTATION_TAG, 1)
        # Only call exif_transpose when it will rotate: otherwise it returns a full copy.
        if not isinstance(orientation, int) or not 2 <= orientation <= 8:
            return im
        return ImageOps.exif_transpose(im)
    except Exception:
        # Malformed EXIF raises all sorts (SyntaxError, struct.error, TypeError...).
        # Bad EXIF never fails a request: keep the stored orientation.
        return im


def _to_rgb(im: Image.Image) -> npt.NDArray[np.uint8]:
    """Apply the module docstring's mode-conversion rules to a loaded image (closing it)."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _grey_to_rgb(_scale_16bit(np.asarray(im)))
    if mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            return _grey_to_rgb(_stretch(values))
        return _grey_to_rgb(_scale_16bit(values))
    if mode == "F":
        values = np.asarray(im, dtype=np.float64)
        return _grey_to_rgb(_stretch(np.where(np.isfinite(values), values, 0.0)))
    if _has_transparency(im):
        return _composite_on_black(im)
    if mode == "RGB":
        return _to_array(im)
    return _to_array(im.convert("RGB"), im)


def _has_transparency(im: Image.Image) -> bool:
    bands = im.getbands()
    return (
        "A" in bands
        or "a" in bands
        or im.info.get("transparency") is not None
        or (im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA")
    )


def _composite_on_black(im: Image.Image) -> npt.NDArray[np.uint8]:
    # Pillow cannot convert premultiplied "La" to RGBA directly, but can via "LA".
    if im.mode == "RGBA":
        rgba = im  # no copy: a large image is held at most twice below (rgba, out)
    else:
        rgba = im.convert("LA").convert("RGBA") if im.mode == "La" else im.convert("RGBA")
        im.close()
    out = Image.new("RGB", rgba.size)  # black
    # Pasting through the alpha band blends exactly round(c * a / 255) onto the black.
    out.paste(rgba, (0, 0), rgba)
    return _to_array(out, rgba)


def _to_array(rgb: Image.Image, *spent: Image.Image) -> npt.NDArray[np.uint8]:
    """``rgb`` as a fresh, writable (H, W, 3) array; closes ``rgb`` and ``spent``.

    Copied in strips: ``tobytes()`` of a whole image (as ``np.array(image)`` does) holds
    two packed copies at once besides the image: a peak about one image's size above the
    image plus the array, which strips keep it to (docs/PERFORMANCE.md has the figure).
    """
    width, height = rgb.size
    for image in spent:
        image.close()
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _STRIP_BYTES // (3 * width))
    for top in range(0, height, rows):
        strip = rgb.crop((0, top, width, min(top + rows, height)))
        out[top : top + strip.height] = np.frombuffer(strip.tobytes(), np.uint8).reshape(
            strip.height, width, 3
        )
    rgb.close()
    return out


def _scale_16bit(values: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    # Rounded division by 257 (not >> 8) so 8-bit data stored as 16-bit round-trips.
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _stretch(values: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    as_float = values.astype(np.float64)
    lo, hi = float(as_float.min()), float(as_float.max())
    if hi <= lo:
        return np.zeros(as_float.shape, dtype=np.uint8)
    scaled = np.rint((as_float - lo) * (255.0 / (hi - lo)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _grey_to_rgb(grey: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(np.repeat(grey[:, :, np.newaxis], 3, axis=2))


def _sniff_other(data: bytes) -> str | None:
    for name, signatures in _OTHER_SIGNATURES.items():
        if data.startswith(signatures):
            return name
    icon = _sniff_icon(data)
    if icon is not None:
        return icon
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(data[8:12])
    head = data[:1024].lstrip()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return None


def _sniff_icon(data: bytes) -> str | None:
    # ICO/CUR's 4-byte signature is also how many TGA files begin (TGA has no magic), so
    # require a plausible directory too: at least one entry, the first image stored after it.
    kind = {b"\x00\x00\x01\x00": "ICO", b"\x00\x00\x02\x00": "CUR"}.get(data[:4])
    if kind is None or len(data) < 22:
        return None
    count = int.from_bytes(data[4:6], "little")
    first_offset = int.from_bytes(data[18:22], "little")
    return kind if count >= 1 and first_offset >= 6 + 16 * count else None


def _unsupported_message(data: bytes) -> str:
    allowed = ", ".join(ALLOWED_FORMATS)
    name = _sniff_other(data)
    if name is not None:
        return f"unsupported image format {name}: the allowed formats are {allowed}"
    return f"the data is not an image in a recognised format: the allowed formats are {allowed}"


def _is_metadata_bomb(exc: Exception) -> bool:
    # Pillow refuses PNG text/ICC chunks that decompress past MAX_TEXT_CHUNK (or all of them
    # past MAX_TEXT_MEMORY) with a plain ValueError; its message is the only way to tell.
    text = str(exc)
    return isinstance(exc, ValueError) and ("MAX_TEXT_CHUNK" in text or "MAX_TEXT_MEMORY" in text)


def _bomb_message(exc: Exception, limits: ImageLimits) -> str:
    # Pillow's message is "Image size (N pixels) exceeds limit of M pixels, ...".
    match = re.search(r"\((\d+) pixels\)", str(exc))
    if match is not None and int(match.group(1)) > limits.max_pixels:
        pixels = int(match.group(1))
        return f"image is {pixels} pixels, over the limit of {limits.max_pixels} pixels"
    return f"image is too large to decode safely: {_describe(exc)}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
