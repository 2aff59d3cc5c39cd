"""Reading training images and masks the way the service reads requests.

Images go through :func:`app.imaging.decode_image`, so a model is trained on exactly the
pixels it will be served (EXIF orientation and mode rules included). Checking a dataset only
needs each image's *displayed* size, which :func:`displayed_size` reads from the header and
the EXIF orientation tag without decoding a pixel.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from app.errors import ServiceError
from app.imaging import ALLOWED_FORMATS, ImageLimits, decode_image, sniff_format
from app.training.datasets.samples import DatasetError, Problem

# Training data is the operator's own, not an untrusted upload: allow images far larger than
# the service accepts, up to Pillow's decompression-bomb warning threshold (~89 Mpx), above
# which Pillow itself would refuse to decode without a changed global.
TRAINING_LIMITS = ImageLimits(max_pixels=89_000_000, max_side=40_000)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
ORIENTATION_TAG = 274
# EXIF orientations 5..8 transpose the image: the displayed width is the stored height.
_TRANSPOSING = frozenset({5, 6, 7, 8})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageHeader:
    """What checking needs from an image file: its displayed size and EXIF orientation."""

    width: int  # as displayed (EXIF orientation applied)
    height: int
    orientation: int  # 1 when absent or unreadable

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) as stored in the file, before orientation."""
        if self.orientation in _TRANSPOSING:
            return self.height, self.width
        return self.width, self.height


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB, EXIF orientation applied: the pixels the service would see."""
    return decode_image(path.read_bytes(), TRAINING_LIMITS)


def read_mask(path: Path) -> npt.NDArray[np.uint8]:
    """(H, W) uint8 class indices of a single-channel PNG ("L", or "P": the palette index)."""
    with Image.open(path, formats=("PNG",)) as im:
        if im.mode not in ("L", "P"):
            raise DatasetError([Problem(str(path), wrong_mask_mode_message(im.mode))])
        # np.asarray of a "P" image gives the palette indices, never the colours.
        return np.array(im, dtype=np.uint8)


def wrong_mask_mode_message(mode: str) -> str:
    return (
        f'mask has mode "{mode}"; a mask must be single-channel 8-bit ("L" grayscale or '
        '"P" palette) whose value (or palette index) is the class index: save the class '
        'map as a grayscale or palette PNG, e.g. Image.fromarray(classes.astype("uint8"))'
    )


def list_images(folder: Path, problems: list[Problem]) -> list[Path]:
    """The images directly in ``folder`` sorted by name; problems if none or stems repeat."""
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        problems.append(Problem(str(folder), f"the images folder {what}"))
        return []
    images = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not images:
        allowed = ", ".join(sorted(IMAGE_SUFFIXES))
        problems.append(Problem(str(folder), f"the images folder holds no images ({allowed})"))
    by_stem: dict[str, list[str]] = {}
    for image in images:
        by_stem.setdefault(image.stem, []).append(image.name)
    for stem, names in by_stem.items():
        if len(names) > 1:
            problems.append(
                Problem(
                    str(folder),
                    f"images {', '.join(names)} share the stem {stem!r}, so their labels "
                    "would be the same file: rename all but one",
                )
            )
    # Keep one image per stem, so one problem is reported once, not once a duplicate.
    seen: set[str] = set()
    unique = []
    for image in images:
        if image.stem not in seen:
            seen.add(image.stem)
            unique.append(image)
    return unique


def read_header(path: Path) -> ImageHeader:
    """The displayed size of the image at ``path``, from its header only.

    Raises ValueError with a message for the user when the file is not an image the service
    would accept (format, header, size limits).
    """
    with path.open("rb") as f:
        head = f.read(32)
    if sniff_format(head) is None:
        allowed = ", ".join(ALLOWED_FORMATS)
        raise ValueError(f"not a readable image: the allowed formats are {allowed}")
    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as im:
            width, height = im.size
            orientation = _orientation(im, path)
    except Exception as exc:  # Pillow raises many types on a corrupt header
        raise ValueError(f"could not read the image header: {_describe(exc)}") from exc
    for limit, value in (("side", max(width, height)), ("pixels", width * height)):
        cap = TRAINING_LIMITS.max_side if limit == "side" else TRAINING_LIMITS.max_pixels
        if value > cap:
            raise ValueError(f"image is {width}x{height}: over the training limit of {cap} {limit}")
    if orientation in _TRANSPOSING:
        width, height = height, width
    return ImageHeader(width, height, orientation)


def _orientation(im: Image.Image, path: Path) -> int:
    """The EXIF orientation decode_image will apply (1 if none), without decoding pixels."""
    try:
        if im.format == "PNG" and "exif" not in im.info:
            # Pillow's PNG getexif() decodes the whole image to reach an eXIf chunk stored
            # after the pixel data; walking the chunk list finds it without decoding.
            raw = _png_exif_chunk(path)
            if raw is None:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        value = exif.get(ORIENTATION_TAG, 1)
    except Exception:
        return 1  # like decode_image: unreadable EXIF is ignored, never an error
    return value if isinstance(value, int) and 2 <= value <= 8 else 1


def _png_exif_chunk(path: Path) -> bytes | None:
    with path.open("rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return None
        while True:
            header = f.read(8)
            if len(header) < 8:
                return None
            length, kind = struct.unpack(">I4s", header)
            if kind == b"eXIf":
                return f.read(length)
            if kind == b"IEND":
                return None
            f.seek(length + 4, 1)  # the chunk's data and CRC


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        return exc.message
    return (str(exc).strip() or type(exc).__name__)[:200]
