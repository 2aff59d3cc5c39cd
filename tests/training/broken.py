"""Small clean datasets, and the ways tests break them (one breakage a function)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from app.training.shapes import write_shapes_dataset

SIZE = 64


def clean_dataset(cache: Path, out: Path, fmt: str, *, train: int = 6, val: int = 2) -> Path:
    """A copy (under ``out``) of a small generated dataset; the YAML path."""
    source = cache / f"{fmt}-{train}-{val}"
    if not source.exists():
        write_shapes_dataset(source, format=fmt, train=train, val=val, size=SIZE, seed=1)  # type: ignore[arg-type]
    shutil.copytree(source, out)
    return out / "dataset.yaml"


def read_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def edit_yaml(path: Path, **changes: Any) -> None:
    """Set keys of the YAML (a value of None deletes the key)."""
    data = read_yaml(path)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def first_image(root: Path, split: str = "train") -> Path:
    return sorted((root / "images" / split).iterdir())[0]


def mask_of(root: Path, image: Path, split: str = "train") -> Path:
    return root / "masks" / split / f"{image.stem}.png"


def save_mask(path: Path, values: np.ndarray, mode: str = "L") -> None:
    image = Image.fromarray(values.astype(np.uint8))
    if mode == "P":
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    path.unlink(missing_ok=True)
    image.save(path)


def read_coco(root: Path, split: str = "train") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "annotations" / f"{split}.json").read_text())
    return data


def write_coco(root: Path, data: dict[str, Any], split: str = "train") -> Path:
    path = root / "annotations" / f"{split}.json"
    path.write_text(json.dumps(data))
    return path


def label_file(root: Path, image: Path, split: str = "train") -> Path:
    return root / "labels" / split / f"{image.stem}.txt"


def save_with_orientation(path: Path, stored: np.ndarray, orientation: int) -> None:
    """Store ``stored`` as is, tagged with an EXIF orientation (JPEG or PNG by suffix)."""
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(stored).save(path, exif=exif)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }
