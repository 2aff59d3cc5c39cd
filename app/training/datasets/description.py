"""The dataset description: a small Ultralytics-like YAML file, or a bare COCO JSON.

Schema (docs/training.md, "Datasets")::

    task: semantic | instance           # required
    format: masks | coco | yolo         # required; masks <-> semantic, coco/yolo <-> instance
    path: <root>                        # optional; relative to the YAML's folder (default)
    names: [..] or {0: .., 1: ..}       # masks: index = mask value, 0 = background;
                                        # yolo: classes 0..K-1; coco: optional (from JSON)
    train: {images: DIR, masks|annotations|labels: DIR|FILE}   # required
    val:   {images: DIR, masks|annotations|labels: DIR|FILE}   # optional: else split train

Every problem is collected (unknown keys included, since a typo such as ``nmaes`` would
otherwise silently change what is trained).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.training.datasets.samples import Problem, one_line

TASK_FORMATS = {"semantic": ("masks",), "instance": ("coco", "yolo")}
LABEL_KEY = {"masks": "masks", "coco": "annotations", "yolo": "labels"}
_KEYS = ("task", "format", "path", "names", "train", "val")


@dataclass(frozen=True)
class Split:
    """Where one split's images and labels are (labels: a folder, or the COCO JSON)."""

    images: Path
    labels: Path
    # Further folders to look for an image in, in order (a bare COCO JSON's usual layouts).
    more_images: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Description:
    task: str
    format: str
    names: list[str] | None  # as written (None: not given)
    train: Split
    val: Split | None
    source: Path


def describe(path: Path, problems: list[Problem]) -> Description | None:
    """Read the description at ``path`` (YAML, or a COCO JSON); None if it is unusable."""
    if path.suffix.lower() == ".json":
        return _describe_json(path, problems)
    src = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(Problem(src, f"could not read the dataset YAML: {one_line(exc)}"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(src, "the dataset YAML must be a mapping (task:, format:, ...)"))
        return None
    before = len(problems)
    for key in data:
        if key not in _KEYS:
            problems.append(Problem(src, f"unknown key {key!r}: the keys are {', '.join(_KEYS)}"))
    task, fmt = data.get("task"), data.get("format")
    if task not in TASK_FORMATS:
        problems.append(Problem(src, f"task must be semantic or instance, got {task!r}"))
    if fmt not in LABEL_KEY:
        problems.append(Problem(src, f"format must be masks, coco or yolo, got {fmt!r}"))
    elif task in TASK_FORMATS and fmt not in TASK_FORMATS[task]:
        allowed = " or ".join(TASK_FORMATS[task])
        problems.append(Problem(src, f"format {fmt} does not suit task {task}: use {allowed}"))
    root = _root(path, data.get("path"), problems)
    names = _names(src, data.get("names"), problems)
    if names is None and fmt in ("masks", "yolo") and "names" not in data:
        problems.append(Problem(src, f"names is required for format {fmt} (the class names)"))
    label_key = LABEL_KEY.get(fmt) if isinstance(fmt, str) else None
    train = _split(src, "train", data.get("train"), root, label_key, problems)
    val = None
    if data.get("val") is not None:
        val = _split(src, "val", data["val"], root, label_key, problems)
    if len(problems) > before or train is None:
        return None
    assert isinstance(task, str)  # checked above
    assert isinstance(fmt, str)
    return Description(task, fmt, names, train, val, path)


def _describe_json(path: Path, problems: list[Problem]) -> Description | None:
    # A bare COCO file: each image is looked for beside it, then in images/, then in
    # ../images/ (the usual layouts of COCO exports).
    if not path.is_file():
        problems.append(Problem(str(path), "the COCO JSON file does not exist"))
        return None
    here = path.parent
    split = Split(here, path, more_images=(here / "images", here.parent / "images"))
    return Description("instance", "coco", None, split, None, path)


def _root(path: Path, value: Any, problems: list[Problem]) -> Path:
    base = path.parent
    if value is None:
        return base
    if not isinstance(value, str):
        problems.append(Problem(str(path), f"path must be a folder name, got {value!r}"))
        return base
    root = base / Path(value).expanduser()
    if not root.is_dir():
        problems.append(Problem(str(path), f"path {value!r} is not a folder ({root})"))
    return root


def _names(src: str, value: Any, problems: list[Problem]) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (not isinstance(k, int), str(k)))
        if keys != list(range(len(value))):
            problems.append(
                Problem(src, f"names as a mapping must have the keys 0..{len(value) - 1}")
            )
            return None
        value = [value[k] for k in keys]
    if not isinstance(value, list):
        problems.append(Problem(src, "names must be a list or a mapping {0: name, ...}"))
        return None
    names: list[str] = []
    for index, name in enumerate(value):
        if isinstance(name, (dict, list)) or name is None or str(name).strip() == "":
            problems.append(Problem(src, f"names[{index}] must be a non-empty name, got {name!r}"))
            return None
        names.append(str(name))
    return names


def _split(
    src: str, key: str, value: Any, root: Path, label_key: str | None, problems: list[Problem]
) -> Split | None:
    if value is None:
        problems.append(Problem(src, f"{key} is required: {{images: DIR, ...}}"))
        return None
    expected = ("images", label_key) if label_key else ("images",)
    if not isinstance(value, dict):
        fields = ", ".join(f"{k}: ..." for k in expected)
        problems.append(Problem(src, f"{key} must be a mapping {{{fields}}}, got {value!r}"))
        return None
    ok = True
    for field in value:
        # Without a known format the label key is unknown: only the format is reported.
        if label_key is not None and field not in expected:
            problems.append(
                Problem(src, f"unknown key {key}.{field}: expected {', '.join(expected)}")
            )
            ok = False
    for field in expected:
        if not isinstance(value.get(field), str):
            problems.append(Problem(src, f"{key}.{field} is required (a path under {root})"))
            ok = False
    if not ok or label_key is None:
        return None
    return Split(images=root / value["images"], labels=root / value[label_key])
