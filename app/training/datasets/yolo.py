"""Instance datasets in Ultralytics' YOLO segmentation text format.

``<labels>/<image stem>.txt``, one object a line: ``class x1 y1 x2 y2 ...`` with the
coordinates normalised to [0, 1] by the displayed image's width and height. Class c (0..K-1)
becomes label c + 1 (0 is the background). As in Ultralytics, an image whose label file is
empty or missing is an image with no objects (a negative example), not a problem.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.training.datasets.description import Split
from app.training.datasets.images import list_images, read_header
from app.training.datasets.samples import InstanceAnnotation, InstanceSample, Problem, one_line

# Exporters write coordinates like 1.0000001 from float rounding: tolerated, then clipped.
_TOLERANCE = 1e-6


def load_yolo_split(
    split: Split, num_classes: int, problems: list[Problem], pool: ThreadPoolExecutor
) -> list[InstanceSample]:
    """Samples of one split; ``num_classes`` = K, the classes without the background."""
    images = list_images(split.images, problems)
    if not split.labels.is_dir():
        what = "is not a folder" if split.labels.exists() else "does not exist"
        problems.append(Problem(str(split.labels), f"the labels folder {what}"))

    def check(item: tuple[int, Path]) -> tuple[InstanceSample | None, list[Problem]]:
        index, image = item
        return _load_one(index, image, split.labels / f"{image.stem}.txt", num_classes)

    samples = []
    for sample, found in pool.map(check, enumerate(images)):
        problems.extend(found)
        if sample is not None:
            samples.append(sample)
    return samples


def _load_one(
    index: int, image: Path, label_file: Path, num_classes: int
) -> tuple[InstanceSample | None, list[Problem]]:
    try:
        header = read_header(image)
    except ValueError as exc:
        return None, [Problem(str(image), str(exc))]
    try:
        text = label_file.read_text(encoding="utf-8") if label_file.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(str(label_file), f"could not read the label file: {one_line(exc)}")]
    annotations = []
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        result = _parse_line(line, num_classes, header.width, header.height)
        if isinstance(result, str):
            found.append(Problem(str(label_file), f"line {number}: {result}"))
        else:
            annotations.append(result)
    sample = InstanceSample(image, header.height, header.width, tuple(annotations), index)
    return sample, found


def _parse_line(line: str, num_classes: int, width: int, height: int) -> InstanceAnnotation | str:
    fields = line.split()
    try:
        cls = int(fields[0])
        coords = [float(v) for v in fields[1:]]
    except ValueError:
        return f"cannot parse {line.strip()[:80]!r}: expected 'class x1 y1 x2 y2 ...' numbers"
    if not 0 <= cls < num_classes:
        return f"class {cls} is outside 0..{num_classes - 1} (the {num_classes} names)"
    if len(coords) == 4:
        return (
            "has 4 numbers after the class, a detection box (cx cy w h): segmentation "
            "labels are polygons of at least 3 points"
        )
    if len(coords) % 2:
        return f"has {len(coords)} coordinates: they must come in x y pairs"
    if len(coords) < 6:
        return f"polygon of {len(coords) // 2} point(s): at least 3 are needed"
    if not all(math.isfinite(v) and -_TOLERANCE <= v <= 1 + _TOLERANCE for v in coords):
        bad = next(v for v in coords if not (-_TOLERANCE <= v <= 1 + _TOLERANCE))
        return f"coordinate {bad} is outside [0, 1]: coordinates are normalised by the image size"
    xs = [min(max(v, 0.0), 1.0) * width for v in coords[0::2]]
    ys = [min(max(v, 0.0), 1.0) * height for v in coords[1::2]]
    box = (min(xs), min(ys), max(xs), max(ys))
    if box[2] <= box[0] or box[3] <= box[1]:
        return "polygon has zero width or height (all its points on one line)"
    polygon = tuple(v for xy in zip(xs, ys, strict=True) for v in xy)
    return InstanceAnnotation(label=cls + 1, box=box, polygons=(polygon,))
