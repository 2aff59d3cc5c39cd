"""PNG files from numpy arrays: the masks, class maps and overlays the service returns.

Written here rather than by Pillow or OpenCV to pick, per kind of image, the filter and the
zlib strategy that suit it, and to compress with zlib-ng, several times faster than the zlib
those libraries bundle (figures in docs/PERFORMANCE.md, "Encoding's share"):

- masks (class maps, instance ids): no filter, run-length deflate. Their rows are long runs
  of one value, which RLE codes nearly as small as a full string search, and much faster.
- photos (overlays): filter "up" (each byte minus the one above), Huffman coding only. After
  filtering, a photo's rows are small residuals that string matching rarely finds again:
  Huffman coding alone is as small, and faster.

Level 1 (the default) uses those fast strategies; 2-9 use zlib's full search at that level
(smaller, slower); 0 stores the rows uncompressed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
from zlib_ng import zlib_ng

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY, _RGB, _PALETTE = 0, 2, 3  # PNG colour types
_FILTER_NONE, _FILTER_UP = 0, 2
# Compress an iTXt chunk only when it is big enough for zlib to pay off.
_ZIP_TEXT_OVER = 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib_ng.crc32(data, zlib_ng.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _itxt(keyword: str, text: str) -> bytes:
    """An iTXt chunk (UTF-8 text, so any Unicode is kept), zlib-compressed when long."""
    data = text.encode("utf-8")
    zipped = len(data) > _ZIP_TEXT_OVER
    if zipped:
        data = zlib_ng.compress(data)
    # keyword, compression flag and method, empty language tag and translated keyword
    header = keyword.encode("latin-1") + b"\0" + bytes((int(zipped), 0)) + b"\0\0"
    return _chunk(b"iTXt", header + data)


def _idat(rows: np.ndarray, level: int, strategy: int) -> bytes:
    """The IDAT chunk of filtered rows (each starting with its filter byte)."""
    if level > 1:
        strategy = zlib_ng.Z_DEFAULT_STRATEGY
    compressor = zlib_ng.compressobj(level, zlib_ng.DEFLATED, 15, 9, strategy)
    return _chunk(b"IDAT", compressor.compress(rows) + compressor.flush())


def _filtered(pixels: np.ndarray, filter_type: int) -> np.ndarray:
    """(h, row bytes + 1) uint8: each row of `pixels` (h, row bytes) behind its filter byte."""
    height, width = pixels.shape
    rows = np.empty((height, width + 1), dtype=np.uint8)
    rows[:, 0] = filter_type
    if filter_type == _FILTER_UP:  # `_png` refuses images without rows
        rows[0, 1:] = pixels[0]  # the row above the first is zeros
        np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])
    else:
        rows[:, 1:] = pixels
    return rows


def _png(
    pixels: np.ndarray,
    colour_type: int,
    bit_depth: int,
    level: int,
    *,
    photo: bool = False,
    palette: Sequence[int] | None = None,
    texts: dict[str, str] | None = None,
) -> bytes:
    if not 0 <= level <= 9:
        raise ValueError(f"compress level must be 0-9, got {level}")
    height, width = pixels.shape[:2]
    if not height or not width:
        raise ValueError(f"a PNG needs at least one pixel, got {width}x{height}")
    rows = pixels.reshape(height, -1).view(np.uint8)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = [_SIGNATURE, _chunk(b"IHDR", header)]
    if palette is not None:
        chunks.append(_chunk(b"PLTE", bytes(palette)))
    chunks += [_itxt(key, text) for key, text in (texts or {}).items()]
    if photo:
        chunks.append(_idat(_filtered(rows, _FILTER_UP), level, zlib_ng.Z_HUFFMAN_ONLY))
    else:
        chunks.append(_idat(_filtered(rows, _FILTER_NONE), level, zlib_ng.Z_RLE))
    chunks.append(_chunk(b"IEND", b""))
    return b"".join(chunks)


def palette_png(indices: np.ndarray, palette: Sequence[int], level: int = 1) -> bytes:
    """An 8-bit palette PNG of a (h, w) uint8 index map; `palette`: 3 ints (RGB) per entry."""
    if indices.ndim != 2 or indices.dtype != np.uint8:
        raise ValueError(f"indices must be (h, w) uint8, got {indices.shape} {indices.dtype}")
    if len(palette) % 3 or not 3 <= len(palette) <= 768:
        raise ValueError(f"palette must hold 1-256 RGB triples, got {len(palette)} ints")
    if len(palette) < 768 and indices.size and int(indices.max()) >= len(palette) // 3:
        raise ValueError(f"index {int(indices.max())} is past the palette's {len(palette) // 3}")
    return _png(indices, _PALETTE, 8, level, palette=palette)


def grey_png(values: np.ndarray, level: int = 1, texts: dict[str, str] | None = None) -> bytes:
    """A greyscale PNG of a (h, w) uint8 (8-bit) or uint16 (16-bit) map, with iTXt `texts`."""
    if values.ndim != 2 or values.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"values must be (h, w) uint8/uint16, got {values.shape} {values.dtype}")
    if values.dtype == np.uint16:
        # PNG is big-endian; C order, so that the rows' bytes can be viewed as such.
        return _png(np.ascontiguousarray(values, dtype=">u2"), _GREY, 16, level, texts=texts)
    return _png(values, _GREY, 8, level, texts=texts)


def rgb_png(image: np.ndarray, level: int = 1) -> bytes:
    """An RGB PNG of a (h, w, 3) uint8 photo-like image."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (h, w, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return _png(np.ascontiguousarray(image), _RGB, 8, level, photo=True)
