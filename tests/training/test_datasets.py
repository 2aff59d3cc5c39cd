"""Loading well-formed datasets: categories, samples, splits, orientation, rasterisation."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from app.training.datasets import (
    InstanceAnnotation,
    InstanceSample,
    SemanticSample,
    instance_masks,
    load_dataset,
    read_image,
    read_mask,
)
from app.training.datasets.images import read_header
from app.training.shapes import COCO_IDS, write_shapes_dataset
from tests.training.broken import edit_yaml, read_coco, save_with_orientation, snapshot

MakeDataset = Callable[..., Path]
NAMES = ["background", "circle", "square", "triangle"]


@pytest.mark.parametrize("fmt", ["masks", "coco", "yolo"])
def test_every_format_loads_with_its_categories_and_samples(
    make_dataset: MakeDataset, fmt: str
) -> None:
    dataset = load_dataset(make_dataset(fmt, train=6, val=2))
    assert dataset.categories == NAMES
    assert dataset.format == fmt
    assert dataset.task == ("semantic" if fmt == "masks" else "instance")
    assert (len(dataset.train), len(dataset.val)) == (6, 2)
    assert dataset.coco_category_ids == (list(COCO_IDS) if fmt == "coco" else None)
    names = sorted(s.image.name for s in dataset.train)
    assert names == [f"train_{i:05d}{Path(n).suffix}" for i, n in enumerate(names)]
    for sample in dataset.train + dataset.val:
        if fmt == "masks":
            assert isinstance(sample, SemanticSample)
            assert sample.mask.stem == sample.image.stem
            assert set(np.unique(read_mask(sample.mask))) <= {0, 1, 2, 3}
        else:
            assert isinstance(sample, InstanceSample)
            assert (sample.height, sample.width) == (64, 64)
            assert 1 <= len(sample.annotations) <= 5
            assert all(1 <= a.label <= 3 for a in sample.annotations)


def test_names_as_a_mapping_load_like_a_list(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    edit_yaml(path, names=dict(enumerate(NAMES)))
    assert load_dataset(path).categories == NAMES


def test_palette_and_grayscale_masks_load_identically(tmp_path: Path) -> None:
    values = np.random.default_rng(0).integers(0, 4, size=(9, 7)).astype(np.uint8)
    values[0, 0] = 255
    grey = Image.fromarray(values)
    grey.save(tmp_path / "l.png")
    palette = Image.fromarray(values)
    # A palette whose colours differ from the indices: the index is the class, not the colour.
    palette.putpalette([c for i in range(256) for c in (255 - i, i, 7)])
    palette.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert Image.open(tmp_path / "l.png").mode == "L"
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), values)
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png"), values)


def test_generated_masks_are_palette_and_grayscale_alike(make_dataset: MakeDataset) -> None:
    dataset = load_dataset(make_dataset("masks"))
    modes = set()
    for sample in dataset.train:
        assert isinstance(sample, SemanticSample)
        modes.add(Image.open(sample.mask).mode)
    assert modes == {"L", "P"}


def _class_of_colour(pixels: np.ndarray) -> np.ndarray:
    """Class 1..3 from the dominant channel of the generator's colour families (R, G, B)."""
    return np.argmax(pixels.astype(int), axis=-1) + 1


@pytest.mark.parametrize("fmt", ["masks", "coco", "yolo"])
def test_exif_rotated_images_get_labels_aligned_with_read_image(
    tmp_path: Path, fmt: Literal["masks", "coco", "yolo"]
) -> None:
    yaml_path = write_shapes_dataset(
        tmp_path, format=fmt, train=8, size=64, seed=3, exif_fraction=1.0
    )
    dataset = load_dataset(yaml_path, val_fraction=0.2)
    misaligned_without_exif = 0
    for sample in dataset.train + dataset.val:
        image = read_image(sample.image)
        assert read_header(sample.image).orientation in (2, 3, 6, 8)
        if isinstance(sample, SemanticSample):
            labels = read_mask(sample.mask)
        else:
            masks = instance_masks(sample)
            labels = np.zeros(image.shape[:2], dtype=np.uint8)
            for annotation, mask in zip(sample.annotations, masks, strict=True):
                labels[mask.astype(bool)] = annotation.label
        fg = labels > 0
        agree = _class_of_colour(image[fg]) == labels[fg]
        assert agree.mean() > 0.9, sample.image  # JPEG blurs a few edge pixels
        raw = np.asarray(Image.open(sample.image).convert("RGB"))  # orientation NOT applied
        if (_class_of_colour(raw[fg]) != labels[fg]).mean() > 0.2:
            misaligned_without_exif += 1
    # The check above is only meaningful if ignoring EXIF would have broken the alignment.
    assert misaligned_without_exif >= 4


def test_displayed_size_swaps_sides_for_transposing_orientations(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 wide, 20 high as stored
    for orientation, displayed in ((1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))):
        for suffix in (".jpg", ".png"):
            path = tmp_path / f"o{orientation}{suffix}"
            save_with_orientation(path, stored, orientation)
            header = read_header(path)
            assert (header.width, header.height) == displayed, path
            assert read_image(path).shape[:2] == displayed[::-1]


def test_exif_rotated_non_square_image_takes_a_mask_of_its_displayed_size(
    make_dataset: MakeDataset,
) -> None:
    path = make_dataset("masks")
    root = path.parent
    image = sorted((root / "images" / "train").iterdir())[0]
    image.unlink()
    save_with_orientation(image.with_suffix(".jpg"), np.zeros((30, 64, 3), np.uint8), 6)
    mask = np.zeros((64, 30), dtype=np.uint8)  # displayed: 30 wide, 64 high
    mask[:10] = 1
    Image.fromarray(mask).save(root / "masks" / "train" / f"{image.stem}.png")
    load_dataset(path)  # no problem


def test_seeded_val_split_is_deterministic_and_disjoint(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks", train=20, val=0)
    first = load_dataset(path, val_fraction=0.25, seed=7)
    again = load_dataset(path, val_fraction=0.25, seed=7)
    other = load_dataset(path, val_fraction=0.25, seed=8)
    assert first.train == again.train and first.val == again.val
    assert len(first.val) == 5 and len(first.train) == 15
    train = {s.image for s in first.train}
    val = {s.image for s in first.val}
    assert not train & val
    assert len(train | val) == 20
    assert {s.image for s in other.val} != val
    # At least one image always goes to val, however small the fraction.
    assert len(load_dataset(path, val_fraction=0.001).val) == 1


def test_coco_sparse_category_ids_round_trip(make_dataset: MakeDataset) -> None:
    path = make_dataset("coco")
    dataset = load_dataset(path)
    assert dataset.coco_category_ids == [2, 5, 9]
    data = read_coco(path.parent)
    by_image: dict[int, list[int]] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation["category_id"])
    ids = dataset.coco_category_ids
    checked = 0
    for sample in dataset.train + dataset.val:
        assert isinstance(sample, InstanceSample)
        if sample.image.parent.name != "train":
            continue
        back = [ids[a.label - 1] for a in sample.annotations]
        assert back == by_image.get(sample.image_id, [])
        checked += len(back)
    assert checked > 0


def test_coco_categories_out_of_id_order_map_in_ascending_id_order(
    make_dataset: MakeDataset,
) -> None:
    path = make_dataset("coco")
    for split in ("train", "val"):
        data = read_coco(path.parent, split)
        data["categories"] = [
            {"id": 9, "name": "triangle"},
            {"id": 2, "name": "circle"},
            {"id": 5, "name": "square"},
        ]
        (path.parent / "annotations" / f"{split}.json").write_text(json.dumps(data))
    dataset = load_dataset(path)
    assert dataset.categories == NAMES
    assert dataset.coco_category_ids == [2, 5, 9]


def test_instance_masks_match_pycocotools_for_polygons_and_both_rles(
    make_dataset: MakeDataset,
) -> None:
    path = make_dataset("coco", train=12, val=0)
    json_path = path.parent / "annotations" / "train.json"
    data = json.loads(json_path.read_text())
    kinds = {
        "polygon"
        if isinstance(a["segmentation"], list)
        else ("rle-str" if isinstance(a["segmentation"]["counts"], str) else "rle-list")
        for a in data["annotations"]
    }
    assert kinds == {"polygon", "rle-str", "rle-list"}  # all three kinds are exercised
    coco = COCO(str(json_path))
    dataset = load_dataset(path)
    compared = 0
    for sample in dataset.train + dataset.val:
        assert isinstance(sample, InstanceSample)
        ours = instance_masks(sample)
        ann_ids = coco.getAnnIds(imgIds=[sample.image_id])
        theirs = np.stack([coco.annToMask(a) for a in coco.loadAnns(ann_ids)])
        np.testing.assert_array_equal(ours, theirs)
        compared += len(ann_ids)
    assert compared == len(data["annotations"])


def test_one_object_of_several_polygons_is_their_union() -> None:
    square = (1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0)
    other = (10.0, 10.0, 14.0, 10.0, 14.0, 14.0)
    annotation = InstanceAnnotation(1, (1, 1, 14, 14), polygons=(square, other))
    sample = InstanceSample(Path("x.png"), 16, 16, (annotation,), 1)
    mask = instance_masks(sample)
    expected = mask_utils.decode(
        mask_utils.merge(mask_utils.frPyObjects([list(square), list(other)], 16, 16))
    )
    assert mask.shape == (1, 16, 16)
    np.testing.assert_array_equal(mask[0], expected)
    assert mask[0, 3, 3] == 1 and mask[0, 11, 12] == 1 and mask[0, 8, 8] == 0


def test_compressed_and_uncompressed_rle_decode_alike() -> None:
    truth = np.zeros((6, 5), dtype=np.uint8)
    truth[1:4, 2:5] = 1
    compressed = mask_utils.encode(np.asfortranarray(truth))
    flat = truth.ravel(order="F").tolist()
    runs: list[int] = []
    current, length = 0, 0
    for v in flat:
        if v == current:
            length += 1
        else:
            runs.append(length)
            current, length = v, 1
    runs.append(length)
    samples = [
        InstanceSample(Path("x.png"), 6, 5, (InstanceAnnotation(1, (2, 1, 5, 4), rle=rle),), 1)
        for rle in (
            {"size": [6, 5], "counts": compressed["counts"].decode()},
            {"size": [6, 5], "counts": compressed["counts"]},
            {"size": [6, 5], "counts": runs},
        )
    ]
    for sample in samples:
        np.testing.assert_array_equal(instance_masks(sample)[0], truth)


def test_yolo_polygons_are_scaled_to_the_displayed_image(make_dataset: MakeDataset) -> None:
    path = make_dataset("yolo")
    root = path.parent
    image = sorted((root / "images" / "train").iterdir())[0]
    (root / "labels" / "train" / f"{image.stem}.txt").write_text(
        "2 0.25 0.5 0.75 0.5 0.5 1.0\n\n1 0 0 0.5 0 0.5 0.25 0 0.25\n"
    )
    dataset = load_dataset(path)
    sample = next(s for s in dataset.train + dataset.val if s.image == image)
    assert isinstance(sample, InstanceSample)
    first, second = sample.annotations
    assert first.label == 3 and first.box == (16.0, 32.0, 48.0, 64.0)
    assert first.polygons == ((16.0, 32.0, 48.0, 32.0, 32.0, 64.0),)
    assert second.label == 2 and second.box == (0.0, 0.0, 32.0, 16.0)


def test_yolo_missing_or_empty_label_file_is_an_image_without_objects(
    make_dataset: MakeDataset,
) -> None:
    path = make_dataset("yolo")
    root = path.parent
    images = sorted((root / "images" / "train").iterdir())
    (root / "labels" / "train" / f"{images[0].stem}.txt").unlink()
    (root / "labels" / "train" / f"{images[1].stem}.txt").write_text("")
    dataset = load_dataset(path)
    empty = {s.image for s in dataset.train + dataset.val if not s.annotations}  # type: ignore[union-attr]
    assert {images[0], images[1]} <= empty


def test_a_bare_coco_json_finds_its_images_in_an_images_folder(
    make_dataset: MakeDataset, tmp_path: Path
) -> None:
    root = make_dataset("coco").parent
    bare = tmp_path / "bare"
    (bare / "annotations").mkdir(parents=True)
    shutil.copytree(root / "images" / "train", bare / "images")
    shutil.copy(root / "annotations" / "train.json", bare / "annotations" / "instances.json")
    dataset = load_dataset(bare / "annotations" / "instances.json", val_fraction=0.5)
    assert dataset.format == "coco" and dataset.categories == NAMES
    assert len(dataset.train) + len(dataset.val) == 6 and len(dataset.val) == 3
    assert all(s.image.parent == bare / "images" for s in dataset.train)


@pytest.mark.parametrize("fmt", ["masks", "coco", "yolo"])
def test_loading_writes_nothing(make_dataset: MakeDataset, fmt: str) -> None:
    root = make_dataset(fmt).parent
    before = snapshot(root)
    load_dataset(root / "dataset.yaml")
    assert snapshot(root) == before


def test_the_generator_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    def files(out: Path, seed: int) -> dict[str, bytes]:
        write_shapes_dataset(out, format="coco", train=4, size=48, seed=seed, exif_fraction=0.5)
        return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    first, again = files(tmp_path / "a", 5), files(tmp_path / "b", 5)
    assert first == again
    assert files(tmp_path / "c", 6) != first
