"""Synthetic "shapes" datasets (circles, squares, triangles) for tests and demos.

A small network learns these scenes in minutes: each class has its own colour family (red
circles, green squares, blue triangles, jittered) on a mildly noisy grey background. They
still exercise what real data has: rings and square frames with holes, touching and
overlapping objects (later ones occlude earlier ones; an instance is its visible part),
palette and grayscale masks, PNG and JPEG images, and, for ``exif_fraction`` of the images,
files stored rotated or flipped with an EXIF Orientation tag, whose labels are drawn in the
DISPLAYED frame, as the service sees them. Everything is deterministic for a seed.

    python -m app.training.shapes OUT --format masks --train 400 --val 100 --size 256
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from app.output.palette import palette

CLASSES = ("circle", "square", "triangle")
# COCO ids deliberately sparse, so the label <-> category id mapping is always exercised.
COCO_IDS = (2, 5, 9)
_COLOURS = np.array([[205, 45, 40], [45, 175, 60], [45, 75, 215]])  # per class, RGB
_MIN_VISIBLE = 20  # pixels: smaller leftovers of an occluded object are not labelled
# EXIF orientation -> the transpose that turns the displayed scene into the stored file
# (the inverse of what ImageOps.exif_transpose applies when reading).
_STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
Format = Literal["masks", "coco", "yolo"]


@dataclass(frozen=True)
class Scene:
    image: npt.NDArray[np.uint8]  # (H, W, 3) as displayed
    labels: npt.NDArray[np.uint8]  # (H, W) class index, 0 = background
    objects: list[tuple[int, npt.NDArray[np.bool_]]]  # (class 1..3, visible mask), drawn order


def write_shapes_dataset(
    out: Path,
    *,
    format: Format,
    train: int,
    val: int = 0,
    size: int = 256,
    seed: int = 0,
    exif_fraction: float = 0.0,
) -> Path:
    """Write a dataset under ``out`` and return its YAML (the path to give load_dataset)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    description: dict[str, Any] = {"task": "semantic" if format == "masks" else "instance"}
    description["format"] = format
    description["path"] = "."
    if format == "masks":
        description["names"] = ["background", *CLASSES]
    elif format == "yolo":
        description["names"] = list(CLASSES)
    label_key = {"masks": "masks", "coco": "annotations", "yolo": "labels"}[format]
    for split, count in (("train", train), ("val", val)):
        if count <= 0:
            continue
        coco_images: list[dict[str, Any]] = []
        coco_annotations: list[dict[str, Any]] = []
        for index in range(count):
            scene = draw_scene(rng, size)
            stem = f"{split}_{index:05d}"
            image_path = _save_image(out / "images" / split, stem, scene.image, rng, exif_fraction)
            if format == "masks":
                _save_mask(out / "masks" / split / f"{stem}.png", scene.labels, index)
            elif format == "yolo":
                _save_yolo(out / "labels" / split / f"{stem}.txt", scene)
            else:
                coco_images.append(
                    {"id": index + 1, "file_name": image_path.name, "height": size, "width": size}
                )
                coco_annotations.extend(_coco_annotations(scene, index + 1, rng))
        if format == "coco":
            for number, annotation in enumerate(coco_annotations, start=1):
                annotation["id"] = number
            categories = [{"id": i, "name": n} for i, n in zip(COCO_IDS, CLASSES, strict=True)]
            document = {
                "images": coco_images,
                "annotations": coco_annotations,
                "categories": categories,
            }
            json_path = out / "annotations" / f"{split}.json"
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(document), encoding="utf-8")
            description[split] = {
                "images": f"images/{split}",
                label_key: f"annotations/{split}.json",
            }
        else:
            description[split] = {"images": f"images/{split}", label_key: f"{label_key}/{split}"}
    yaml_path = out / "dataset.yaml"
    yaml_path.write_text(yaml.safe_dump(description, sort_keys=False), encoding="utf-8")
    return yaml_path


def draw_scene(rng: np.random.Generator, size: int) -> Scene:
    """One scene of 1-5 objects; objects left with too few visible pixels are dropped."""
    shapes: list[tuple[int, npt.NDArray[np.bool_]]] = []
    previous: tuple[float, float, float] | None = None
    for _ in range(int(rng.integers(1, 6))):
        cls = int(rng.integers(1, 4))
        radius = float(rng.uniform(0.08, 0.18)) * size
        if previous is not None and rng.random() < 0.4:
            # Next to the previous object: touching (factor 1) or overlapping it (< 1).
            px, py, pr = previous
            angle = rng.uniform(0, 2 * np.pi)
            reach = (pr + radius) * float(rng.choice([1.0, 0.6]))
            cx, cy = px + reach * np.cos(angle), py + reach * np.sin(angle)
            cx, cy = (
                float(np.clip(cx, radius, size - radius)),
                float(np.clip(cy, radius, size - radius)),
            )
        else:
            cx, cy = (float(v) for v in rng.uniform(radius, size - radius, size=2))
        holed = cls != 3 and rng.random() < 0.3
        shapes.append(
            (cls, _shape_mask(cls, cx, cy, radius, holed, float(rng.uniform(0, np.pi)), size))
        )
        previous = (cx, cy, radius)
    kept = _drop_hidden(shapes)
    image = _background(rng, size)
    labels = np.zeros((size, size), dtype=np.uint8)
    for cls, mask in kept:
        colour = _COLOURS[cls - 1] + rng.integers(-25, 26, size=3)
        noise = rng.normal(0, 4, size=(int(mask.sum()), 3))
        image[mask] = np.clip(colour + noise, 0, 255).astype(np.uint8)
        labels[mask] = cls
    return Scene(image, labels, _visible(kept))


def _shape_mask(
    cls: int, cx: float, cy: float, r: float, holed: bool, angle: float, size: int
) -> npt.NDArray[np.bool_]:
    canvas = np.zeros((size, size), dtype=np.uint8)
    if cls == 1:
        cv2.circle(canvas, (round(cx), round(cy)), round(r), 1, thickness=-1)
        if holed:  # a ring
            cv2.circle(canvas, (round(cx), round(cy)), round(r * 0.5), 0, thickness=-1)
    else:
        corners = 4 if cls == 2 else 3
        cv2.fillPoly(canvas, [_regular_polygon(cx, cy, r, corners, angle)], 1)
        if holed:  # a square frame
            cv2.fillPoly(canvas, [_regular_polygon(cx, cy, r * 0.5, corners, angle)], 0)
    return canvas.astype(bool)


def _regular_polygon(cx: float, cy: float, r: float, corners: int, angle: float) -> np.ndarray:
    t = angle + np.arange(corners) * 2 * np.pi / corners
    return np.round(np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)).astype(np.int32)


def _visible(
    shapes: list[tuple[int, npt.NDArray[np.bool_]]],
) -> list[tuple[int, npt.NDArray[np.bool_]]]:
    """Each shape minus the shapes drawn after it (which occlude it)."""
    covered = np.zeros_like(shapes[0][1]) if shapes else None
    visible = []
    for cls, mask in reversed(shapes):
        assert covered is not None
        visible.append((cls, mask & ~covered))
        covered = covered | mask
    return visible[::-1]


def _drop_hidden(
    shapes: list[tuple[int, npt.NDArray[np.bool_]]],
) -> list[tuple[int, npt.NDArray[np.bool_]]]:
    # Dropping an object uncovers the objects under it, so recompute until none is too small;
    # the scene is then drawn from the kept objects only, so image and labels agree.
    kept = list(shapes)
    while kept:
        small = [i for i, (_, m) in enumerate(_visible(kept)) if m.sum() < _MIN_VISIBLE]
        if not small:
            break
        del kept[small[0]]
    return kept


def _background(rng: np.random.Generator, size: int) -> npt.NDArray[np.uint8]:
    base = rng.integers(100, 150)
    noise = rng.normal(0, 6, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _save_image(
    folder: Path, stem: str, scene: np.ndarray, rng: np.random.Generator, exif_fraction: float
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(scene)
    # JPEGs without chroma subsampling (4:4:4), so colours stay on their labelled pixels.
    if rng.random() < exif_fraction:
        orientation = int(rng.choice(list(_STORE)))
        exif = Image.Exif()
        exif[274] = orientation
        path = folder / f"{stem}.jpg"
        image.transpose(_STORE[orientation]).save(path, quality=95, subsampling=0, exif=exif)
    elif rng.random() < 0.5:
        path = folder / f"{stem}.png"
        image.save(path, compress_level=1)
    else:
        path = folder / f"{stem}.jpg"
        image.save(path, quality=95, subsampling=0)
    return path


def _save_mask(path: Path, labels: np.ndarray, index: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = Image.fromarray(labels)  # "L"
    if index % 2 == 0:
        mask.putpalette(palette())  # now "P": the same indices, shown in colour
    mask.save(path, compress_level=1)


def _contours(mask: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """Outer and hole contours of ``mask`` as (N, 2) points at pixel centres (slivers of
    fewer than 3 points left out), and whether the mask is one piece without holes."""
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    polygons = [c.reshape(-1, 2).astype(np.float64) + 0.5 for c in found if len(c) >= 3]
    return polygons, len(found) == 1 and len(polygons) == 1


def _bridged(contours: list[np.ndarray]) -> np.ndarray:
    """All contours as ONE polygon, joined by zero-width bridges (as Ultralytics does).

    Each bridge is walked there and back, so it cancels under even-odd filling: holes stay
    holes and separate pieces stay separate.
    """
    merged = contours[0]
    for contour in contours[1:]:
        distances = ((merged[:, None, :] - contour[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(np.argmin(distances), distances.shape)
        rolled = np.roll(contour, -int(j), axis=0)
        merged = np.concatenate([merged[: i + 1], rolled, rolled[:1], merged[i:]])
    return merged


def _save_yolo(path: Path, scene: Scene) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = scene.labels.shape
    lines = []
    for cls, mask in scene.objects:
        contours, _ = _contours(mask)
        if not contours:
            continue  # only slivers left: no polygon can describe it
        points = _bridged(contours) / np.array([width, height])
        coords = " ".join(f"{v:.6f}" for v in np.clip(points, 0, 1).ravel())
        lines.append(f"{cls - 1} {coords}")
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def _coco_annotations(
    scene: Scene, image_id: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    annotations = []
    for cls, mask in scene.objects:
        ys, xs = np.nonzero(mask)
        bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        contours, simple = _contours(mask)
        segmentation: Any
        if simple and rng.random() < 0.7:
            segmentation = [contours[0].ravel().round(2).tolist()]
        else:  # holes or pieces (or by chance): RLE, compressed or not
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            if rng.random() < 0.3:
                segmentation = {"size": rle["size"], "counts": _run_lengths(mask)}
            else:
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        annotations.append(
            {
                "image_id": image_id,
                "category_id": COCO_IDS[cls - 1],
                "segmentation": segmentation,
                "bbox": bbox,
                "area": int(mask.sum()),
                "iscrowd": 0,
            }
        )
    return annotations


def _run_lengths(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: alternating runs of 0 and 1, column-major, starting with 0."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.training.shapes", description=__doc__)
    parser.add_argument("out", type=Path, help="folder to write the dataset into")
    parser.add_argument("--format", choices=("masks", "coco", "yolo"), default="masks")
    parser.add_argument("--train", type=int, default=400, help="training images")
    parser.add_argument("--val", type=int, default=100, help="validation images (0: none)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--exif-fraction", type=float, default=0.0, help="share stored with EXIF rotation"
    )
    args = parser.parse_args(argv)
    path = write_shapes_dataset(
        args.out,
        format=args.format,
        train=args.train,
        val=args.val,
        size=args.size,
        seed=args.seed,
        exif_fraction=args.exif_fraction,
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
