"""What the client accepts as an image, and how it becomes the bytes it sends."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

# A path (str or Path), the file's bytes, a Pillow image or an (H, W[, 1|3|4]) uint8 array.
ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Image.Image, np.ndarray]

# The service's formats (docs/api.md, "Image input"): what a folder is searched for.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})

_MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}
# Modes Pillow writes to PNG as they are; others are converted to RGB first.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})


def _png(image: Image.Image) -> bytes:
    if image.mode not in _PNG_MODES:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def array_to_png(array: np.ndarray) -> bytes:
    """An (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA uint8 array as PNG bytes."""
    if array.dtype != np.uint8:
        raise TypeError(f"an image array must be uint8, not {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"an image array is (H, W), (H, W, 3) or (H, W, 4), not {array.shape}")
    return _png(Image.fromarray(np.ascontiguousarray(array)))


def describe(image: ImageInput, index: int) -> str:
    """A name for the image in results and messages: the path, else its kind and index."""
    if isinstance(image, str | os.PathLike):
        return os.fspath(image)
    kind = {Image.Image: "PIL image", np.ndarray: "array"}
    for cls, name in kind.items():
        if isinstance(image, cls):
            return f"<{name} #{index}>"
    return f"<bytes #{index}>"


def image_payload(image: ImageInput) -> tuple[str, bytes, str]:
    """``(filename, bytes, media type)`` of the image as it is sent.

    A file goes as it is (the service detects the format from the bytes); a Pillow image or
    an array is encoded to PNG first.
    """
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        media_type = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return path.name or "image", path.read_bytes(), media_type
    if isinstance(image, bytes | bytearray | memoryview):
        return "image", bytes(image), "application/octet-stream"
    if isinstance(image, Image.Image):
        return "image.png", _png(image), "image/png"
    if isinstance(image, np.ndarray):
        return "image.png", array_to_png(image), "image/png"
    raise TypeError(
        f"an image is a path, bytes, a PIL image or a uint8 numpy array, not {type(image).__name__}"
    )


def expand_inputs(
    inputs: ImageInput | Iterable[ImageInput], *, recursive: bool = False
) -> list[ImageInput]:
    """The images of ``inputs`` in order: a folder becomes its image files (by extension,
    sorted by name; with ``recursive``, its subfolders' too); anything else stays as it is
    (a path that does not exist fails when it is read, as that image's error)."""
    items: Iterable[ImageInput]
    single = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)
    items = [inputs] if isinstance(inputs, single) else inputs
    out: list[ImageInput] = []
    for item in items:
        if isinstance(item, str | os.PathLike) and Path(item).is_dir():
            pattern = "**/*" if recursive else "*"
            found = (p for p in Path(item).glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS)
            out.extend(sorted((p for p in found if p.is_file()), key=lambda p: str(p)))
        else:
            out.append(item)
    return out
