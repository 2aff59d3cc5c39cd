"""Instance datasets in COCO's instances JSON: polygons, RLE (compressed or not), crowds.

Category ids may be sparse (COCO's own skip numbers); they map to labels 1..K in ascending
id order, and ``coco_category_ids[k - 1]`` maps label k back. Every image the JSON lists
has its header read, so its displayed size can be checked against the JSON and the RLEs.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.training.datasets.description import Split
from app.training.datasets.images import ImageHeader, read_header
from app.training.datasets.rasterize import rle_box
from app.training.datasets.samples import InstanceAnnotation, InstanceSample, Problem, one_line


@dataclass(frozen=True)
class CocoSplit:
    samples: list[InstanceSample]
    category_ids: list[int]  # ascending; label k -> category_ids[k - 1]
    names: list[str]  # the K class names, in label order


@dataclass(frozen=True)
class _Image:
    id: int
    file_name: str
    height: Any
    width: Any
    path: Path | None


def load_coco_split(
    split: Split, problems: list[Problem], pool: ThreadPoolExecutor
) -> CocoSplit | None:
    """The samples of one COCO file; every problem found goes to ``problems``."""
    src = str(split.labels)
    data = _read_json(split.labels, problems)
    if data is None:
        return None
    categories = _categories(src, data["categories"], problems)
    images = _images(split, src, data["images"], problems)
    if not split.images.is_dir() and not split.more_images:
        problems.append(Problem(str(split.images), "the images folder does not exist"))
    found = [image for image in images.values() if image.path is not None]
    paths = [image.path for image in found if image.path is not None]
    headers: dict[int, ImageHeader] = {}
    for image, result in zip(found, pool.map(_header_or_error, paths), strict=True):
        if isinstance(result, str):
            problems.append(Problem(str(image.path), result))
        else:
            headers[image.id] = result
            _check_size(src, image, result, problems)
    by_image = _annotations(src, data["annotations"], images, headers, categories, problems)
    if categories is None:
        return None
    ids = sorted(categories)
    samples = []
    for image in images.values():
        header = headers.get(image.id)
        if image.path is None or header is None:
            continue
        annotations = tuple(by_image.get(image.id, ()))
        samples.append(
            InstanceSample(image.path, header.height, header.width, annotations, image.id)
        )
    return CocoSplit(samples, ids, [categories[i] for i in ids])


def _read_json(path: Path, problems: list[Problem]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.append(Problem(str(path), f"could not read the COCO JSON: {one_line(exc)}"))
        return None
    if not isinstance(data, dict):
        problems.append(
            Problem(str(path), "a COCO file is an object with images, annotations and categories")
        )
        return None
    missing = [
        k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)
    ]
    if missing:
        problems.append(Problem(str(path), f"the COCO JSON lacks the list(s) {', '.join(missing)}"))
        return None
    return data


def _categories(src: str, items: list[Any], problems: list[Problem]) -> dict[int, str] | None:
    categories: dict[int, str] = {}
    ok = True
    for index, item in enumerate(items):
        cid: Any = item.get("id") if isinstance(item, dict) else None
        name = item.get("name") if isinstance(item, dict) else None
        if not _is_int(cid) or not isinstance(name, str) or not name:
            problems.append(Problem(src, f"categories[{index}] needs an integer id and a name"))
            ok = False
        elif cid in categories:
            problems.append(Problem(src, f"category id {cid} appears twice"))
            ok = False
        else:
            categories[cid] = name
    if not items:
        problems.append(Problem(src, "no classes: the categories list is empty"))
        ok = False
    seen: dict[str, int] = {}
    for cid, name in sorted(categories.items()):
        if name in seen:
            problems.append(
                Problem(src, f"duplicate class name {name!r} (category ids {seen[name]} and {cid})")
            )
            ok = False
        seen.setdefault(name, cid)
    return categories if ok else None


def _images(split: Split, src: str, items: list[Any], problems: list[Problem]) -> dict[int, _Image]:
    folders = (split.images, *split.more_images)
    images: dict[int, _Image] = {}
    if not items:
        problems.append(Problem(src, "the COCO JSON lists no images"))
    for index, item in enumerate(items):
        iid: Any = item.get("id") if isinstance(item, dict) else None
        name = item.get("file_name") if isinstance(item, dict) else None
        if not _is_int(iid) or not isinstance(name, str) or not name:
            problems.append(Problem(src, f"images[{index}] needs an integer id and a file_name"))
            continue
        if iid in images:
            problems.append(Problem(src, f"image id {iid} appears twice"))
            continue
        path = next((f / name for f in folders if (f / name).is_file()), None)
        if path is None:
            where = ", ".join(str(f) for f in folders)
            problems.append(
                Problem(src, f"image {iid} ({name}) is listed but no such file is in {where}")
            )
        images[iid] = _Image(iid, name, item.get("height"), item.get("width"), path)
    return images


def _header_or_error(path: Path) -> ImageHeader | str:
    try:
        return read_header(path)
    except ValueError as exc:
        return str(exc)


def _check_size(src: str, image: _Image, header: ImageHeader, problems: list[Problem]) -> None:
    if image.height is None and image.width is None:
        return  # optional in practice: the displayed size is used
    if (image.width, image.height) == (header.width, header.height):
        return
    message = (
        f"image {image.id} ({image.file_name}) is {image.width}x{image.height} in the "
        f"JSON but {header.width}x{header.height} as displayed"
    )
    if header.orientation != 1 and (image.width, image.height) == header.stored_size:
        message += (
            f": the file has EXIF orientation {header.orientation}; the JSON (and its "
            "labels) must describe the image as displayed, orientation applied"
        )
    problems.append(Problem(src, message))


def _annotations(
    src: str,
    items: list[Any],
    images: dict[int, _Image],
    headers: dict[int, ImageHeader],
    categories: dict[int, str] | None,
    problems: list[Problem],
) -> dict[int, list[InstanceAnnotation]]:
    labels = {cid: k for k, cid in enumerate(sorted(categories or {}), start=1)}
    by_image: dict[int, list[InstanceAnnotation]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(Problem(src, f"annotations[{index}] is not an object"))
            continue
        where = f"annotation {item.get('id', f'#{index}')}"
        found: list[str] = []
        iid: Any = item.get("image_id")
        cid: Any = item.get("category_id")
        if iid not in images:
            found.append(f"image_id {iid!r} is not an image of this file")
        if categories is not None and cid not in labels:
            known = ", ".join(map(str, sorted(labels)))
            found.append(f"category_id {cid!r} is not a category (known: {known})")
        header = headers.get(iid) if _is_int(iid) else None
        polygons, rle = _segmentation(item.get("segmentation"), header, found)
        box = _box(item.get("bbox"), polygons, rle, found)
        problems.extend(Problem(src, f"{where}: {message}") for message in found)
        if found or header is None or box is None or cid not in labels:
            continue
        label = labels[cid]
        crowd = bool(item.get("iscrowd", 0))
        by_image.setdefault(iid, []).append(InstanceAnnotation(label, box, polygons, rle, crowd))
    return by_image


def _segmentation(
    value: Any, header: ImageHeader | None, found: list[str]
) -> tuple[tuple[tuple[float, ...], ...], dict[str, Any] | None]:
    if isinstance(value, dict):
        size, counts = value.get("size"), value.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(map(_is_int, size))):
            found.append("RLE needs size [height, width]")
            return (), None
        if not isinstance(counts, (str, list)):
            found.append("RLE counts must be a string (compressed) or a list of run lengths")
            return (), None
        if isinstance(counts, list) and (
            not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != size[0] * size[1]
        ):
            found.append(
                f"uncompressed RLE counts must be run lengths summing to height x "
                f"width = {size[0] * size[1]}"
            )
            return (), None
        if header is not None and size != [header.height, header.width]:
            found.append(
                f"RLE size {size[0]}x{size[1]} (height x width) differs from the "
                f"image's {header.height}x{header.width} as displayed"
            )
            return (), None
        return (), {"size": list(size), "counts": counts}
    if not isinstance(value, list) or not value:
        found.append("has no segmentation (polygons or RLE): instance training needs masks")
        return (), None
    polygons = []
    for k, polygon in enumerate(value):
        if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
            found.append(f"polygon {k} is not a flat list of numbers [x0, y0, x1, y1, ...]")
        elif len(polygon) < 6 or len(polygon) % 2:
            found.append(
                f"polygon {k} has {len(polygon)} numbers: a polygon needs at least "
                "3 points (6 numbers), as x, y pairs"
            )
        else:
            polygons.append(tuple(float(v) for v in polygon))
    return tuple(polygons), None


def _box(
    value: Any,
    polygons: tuple[tuple[float, ...], ...],
    rle: dict[str, Any] | None,
    found: list[str],
) -> tuple[float, float, float, float] | None:
    if value is None:  # absent: derive it, as the polygon's or the RLE's extent
        if polygons:
            xs = [v for p in polygons for v in p[0::2]]
            ys = [v for p in polygons for v in p[1::2]]
            value = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        elif rle is not None:
            value = rle_box(rle)
        else:
            return None
    if not (isinstance(value, list) and len(value) == 4 and all(map(_is_number, value))):
        found.append(f"bbox must be [x, y, width, height], got {value!r}")
        return None
    x, y, w, h = (float(v) for v in value)
    if w <= 0 or h <= 0:
        found.append(f"bbox {value} has zero (or negative) width or height")
        return None
    return (x, y, x + w, y + h)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
