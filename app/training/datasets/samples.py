"""The records a loaded dataset is made of, and the error that lists every problem in one.

The training loop and the evaluation depend on these records, never on how a format was
parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: the file it is in, and what is wrong and what to do."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DatasetError(Exception):
    """A dataset refused; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        # One problem a line, nothing else: callers add their own heading.
        super().__init__("\n".join(str(p) for p in self.problems))

    def report(self, source: object) -> str:
        """What the commands print: a heading, every problem indented, the count."""
        lines = [f"the dataset {source} is refused:"]
        lines += [f"  {problem}" for problem in self.problems]
        lines.append(f"{len(self.problems)} problem(s); nothing was written")
        return "\n".join(lines)


@dataclass(frozen=True)
class SemanticSample:
    """An image and its class-index mask (PNG, same stem)."""

    image: Path
    mask: Path


@dataclass(frozen=True)
class InstanceAnnotation:
    """One object. Coordinates are in pixels of the image as displayed (EXIF applied)."""

    label: int  # 1..K
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    polygons: tuple[tuple[float, ...], ...] = ()  # each flat x0, y0, x1, y1, ...
    rle: dict[str, Any] | None = None  # COCO RLE: {"size": [h, w], "counts": str|bytes|list}
    iscrowd: bool = False


@dataclass(frozen=True)
class InstanceSample:
    """An image and its objects; ``height``/``width`` are the displayed (oriented) size."""

    image: Path
    height: int
    width: int
    annotations: tuple[InstanceAnnotation, ...]
    image_id: int  # the COCO image id, or the image's index for YOLO


Sample: TypeAlias = SemanticSample | InstanceSample


@dataclass(frozen=True)
class Dataset:
    """A checked dataset: categories (background first) and the train/val samples."""

    task: Literal["semantic", "instance"]
    format: Literal["masks", "coco", "yolo"]
    categories: list[str]  # K + 1 names, background first
    train: list[Sample]
    val: list[Sample]
    source: Path  # the YAML or JSON given
    coco_category_ids: list[int] | None  # label k (1..K) -> original COCO id [k - 1]


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (a problem is one line of the report)."""
    return " ".join(str(exc).split()) or type(exc).__name__
