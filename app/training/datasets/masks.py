"""Semantic datasets: one PNG class-index mask per image (VOC-like), checked in full.

Each mask is decoded (its values must be checked); each image only has its header read.
Files are checked on a few threads: PNG inflation and file reads release the GIL.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from app.training.datasets.description import Split
from app.training.datasets.images import (
    ImageHeader,
    list_images,
    read_header,
    wrong_mask_mode_message,
)
from app.training.datasets.samples import Problem, SemanticSample

log = logging.getLogger(__name__)

IGNORE_INDEX = 255  # in a mask: excluded from the loss and the metrics


def load_semantic_split(
    split: Split, num_classes: int, problems: list[Problem], pool: ThreadPoolExecutor
) -> list[SemanticSample]:
    """Samples of one split; every problem found goes to ``problems``.

    ``num_classes`` counts the background: valid mask values are 0..num_classes-1 and 255.
    """
    images = list_images(split.images, problems)
    masks_dir = split.labels
    if not masks_dir.is_dir():
        what = "is not a folder" if masks_dir.exists() else "does not exist"
        problems.append(Problem(str(masks_dir), f"the masks folder {what}"))
        masks: dict[str, Path] = {}
        others: dict[str, Path] = {}
    else:
        files = sorted(p for p in masks_dir.iterdir() if p.is_file())
        masks = {p.stem: p for p in files if p.suffix.lower() == ".png"}
        others = {p.stem: p for p in files if p.suffix.lower() != ".png"}

    def check(image: Path) -> list[Problem]:
        return _check_pair(
            image, masks.get(image.stem), others.get(image.stem), masks_dir, num_classes
        )

    samples = []
    for image, found in zip(images, pool.map(check, images), strict=True):
        problems.extend(found)
        mask = masks.get(image.stem)
        if mask is not None:
            samples.append(SemanticSample(image=image, mask=mask))
    # A mask without an image is not refused: a user may prune bad images and keep their
    # masks. It is logged, since it can also reveal a naming mismatch (which the missing
    # masks of the images then report as problems anyway).
    orphans = sorted(set(masks) - {image.stem for image in images})
    if orphans and images:
        log.warning(
            "%s: %d mask(s) have no image, e.g. %s.png", masks_dir, len(orphans), orphans[0]
        )
    return samples


def _check_pair(
    image: Path, mask: Path | None, other: Path | None, masks_dir: Path, num_classes: int
) -> list[Problem]:
    found: list[Problem] = []
    header: ImageHeader | None = None
    try:
        header = read_header(image)
    except ValueError as exc:
        found.append(Problem(str(image), str(exc)))
    if mask is None:
        hint = ""
        if other is not None:
            hint = (
                f": {other.name} is there, but masks must be PNG (lossy formats change "
                "the class values)"
            )
        found.append(Problem(str(image), f"no mask {image.stem}.png in {masks_dir}{hint}"))
        return found
    found.extend(_check_mask(mask, header, num_classes))
    return found


def _check_mask(mask: Path, header: ImageHeader | None, num_classes: int) -> list[Problem]:
    src = str(mask)
    try:
        with Image.open(mask, formats=("PNG",)) as im:
            if im.mode not in ("L", "P"):
                return [Problem(src, wrong_mask_mode_message(im.mode))]
            values = np.asarray(im)  # a "P" image gives its palette indices
    except Exception as exc:  # Pillow raises many types on corrupt files
        return [Problem(src, f"could not read the mask as a PNG: {str(exc)[:200]}")]
    found = []
    height, width = values.shape
    if header is not None and (width, height) != (header.width, header.height):
        message = (
            f"mask is {width}x{height} but its image is {header.width}x{header.height} as displayed"
        )
        if header.orientation != 1 and (width, height) == header.stored_size:
            message += (
                f": the image has EXIF orientation {header.orientation} and is stored as "
                f"{width}x{height}; labels must be drawn on the image as displayed "
                "(orientation applied), as the service sees it"
            )
        found.append(Problem(src, message))
    present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    bad = [int(v) for v in present if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        found.append(
            Problem(
                src,
                f"mask values {shown} are not classes: the allowed values are "
                f"0..{num_classes - 1} (the index in names) and {IGNORE_INDEX} (ignore)",
            )
        )
    elif set(present.tolist()) == {0, IGNORE_INDEX} and num_classes <= IGNORE_INDEX:
        found.append(
            Problem(
                src,
                f"mask looks binary (only 0 and {IGNORE_INDEX}): {IGNORE_INDEX} means "
                "ignore; write the foreground as 1 (or its class index)",
            )
        )
    return found
