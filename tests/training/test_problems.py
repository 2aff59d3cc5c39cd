"""Broken datasets are refused before anything else, naming the file and every problem."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.training.datasets import DatasetError, Problem, load_dataset
from tests.training.broken import (
    edit_yaml,
    first_image,
    label_file,
    mask_of,
    read_coco,
    save_mask,
    save_with_orientation,
    snapshot,
    write_coco,
)

MakeDataset = Callable[..., Path]


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    error = caught.value
    # str() lists every problem, one a line, each "path: message".
    assert str(error).splitlines() == [f"{p.path}: {p.message}" for p in error.problems]
    return error.problems


def only(problems: list[Problem], path: Path | str, *fragments: str) -> Problem:
    """The one problem; it names ``path`` and contains every fragment."""
    assert len(problems) == 1, "\n".join(map(str, problems))
    assert problems[0].path == str(path)
    for fragment in fragments:
        assert fragment in problems[0].message, problems[0]
    return problems[0]


# --- the description --------------------------------------------------------------------


def test_unreadable_yaml(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    path.write_text("task: semantic\nnames: [a, b\n")
    only(problems_of(path), path, "could not read the dataset YAML")


def test_missing_dataset_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    only(problems_of(path), path, "could not read the dataset YAML")


def test_missing_task_and_format_and_unknown_keys_are_listed_together(
    make_dataset: MakeDataset,
) -> None:
    path = make_dataset("masks")
    edit_yaml(path, task=None, format=None, nmaes=["x"], epochs=3)
    messages = [p.message for p in problems_of(path)]
    assert messages == [
        "unknown key 'nmaes': the keys are task, format, path, names, train, val",
        "unknown key 'epochs': the keys are task, format, path, names, train, val",
        "task must be semantic or instance, got None",
        "format must be masks, coco or yolo, got None",
    ]


def test_format_not_matching_the_task(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    edit_yaml(path, task="instance")
    only(problems_of(path), path, "format masks does not suit task instance: use coco or yolo")


def test_missing_train_and_unknown_split_key(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    edit_yaml(path, train=None, val={"images": "images/val", "masks": "masks/val", "lbl": "x"})
    messages = sorted(p.message for p in problems_of(path))
    assert len(messages) == 2
    assert messages[0].startswith("train is required")
    assert messages[1] == "unknown key val.lbl: expected images, masks"


@pytest.mark.parametrize("fmt", ["masks", "yolo"])
def test_no_classes(make_dataset: MakeDataset, fmt: str) -> None:
    path = make_dataset(fmt)
    edit_yaml(path, names=["background"] if fmt == "masks" else [])
    only(problems_of(path), path, "no classes")


def test_names_required_for_masks(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    edit_yaml(path, names=None)
    assert any("names is required" in p.message for p in problems_of(path))


@pytest.mark.parametrize("fmt", ["masks", "yolo"])
def test_duplicate_names(make_dataset: MakeDataset, fmt: str) -> None:
    path = make_dataset(fmt)
    names = ["background", "circle", "circle", "x"] if fmt == "masks" else ["a", "b", "a"]
    edit_yaml(path, names=names)
    dup = "circle" if fmt == "masks" else "a"
    only(problems_of(path), path, f"duplicate class names: {dup}")


# --- images -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["masks", "yolo"])
def test_images_folder_missing(make_dataset: MakeDataset, fmt: str) -> None:
    path = make_dataset(fmt)
    folder = path.parent / "images" / "train"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    problems = problems_of(path)
    assert problems[0] == Problem(str(folder), "the images folder does not exist")


def test_images_folder_empty(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    folder = path.parent / "images" / "val"
    for f in folder.iterdir():
        f.unlink()
    (folder / "notes.txt").write_text("not an image")
    problems = problems_of(path)
    assert problems[0].path == str(folder)
    assert problems[0].message.startswith("the images folder holds no images")


@pytest.mark.parametrize("fmt", ["masks", "yolo"])
def test_image_in_a_refused_format(make_dataset: MakeDataset, fmt: str) -> None:
    path = make_dataset(fmt)
    image = first_image(path.parent)
    Image.new("RGB", (64, 64)).save(image, format="GIF")  # GIF bytes under .png/.jpg
    only(problems_of(path), image, "not a readable image", "JPEG, PNG, WEBP, BMP")


def test_image_with_a_corrupt_header(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    image = first_image(path.parent)
    image.unlink()
    image = image.with_suffix(".png")
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    only(problems_of(path), image, "could not read the image header")


def test_duplicate_image_stems(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    image = first_image(path.parent)
    twin = image.with_suffix(".bmp")
    Image.open(image).save(twin)
    only(problems_of(path), image.parent, f"share the stem '{image.stem}'", twin.name)


# --- semantic masks ---------------------------------------------------------------------


def test_missing_mask(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    image = first_image(path.parent)
    mask_of(path.parent, image).unlink()
    only(problems_of(path), image, f"no mask {image.stem}.png in {path.parent / 'masks/train'}")


def test_mask_saved_as_jpeg_is_named_in_the_missing_mask_problem(
    make_dataset: MakeDataset,
) -> None:
    path = make_dataset("masks")
    image = first_image(path.parent)
    mask = mask_of(path.parent, image)
    Image.open(mask).convert("L").save(mask.with_suffix(".jpg"))
    mask.unlink()
    only(problems_of(path), image, f"{image.stem}.jpg is there, but masks must be PNG")


def test_a_mask_without_an_image_is_only_logged(
    make_dataset: MakeDataset, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_dataset("masks")
    save_mask(path.parent / "masks" / "train" / "stray.png", np.zeros((64, 64)))
    load_dataset(path)
    assert "1 mask(s) have no image, e.g. stray.png" in caplog.text


def test_mask_size_differs(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    mask = mask_of(path.parent, first_image(path.parent))
    save_mask(mask, np.zeros((32, 64)))
    problem = only(problems_of(path), mask, "mask is 64x32 but its image is 64x64 as displayed")
    assert "EXIF" not in problem.message


def test_mask_of_the_stored_size_of_an_exif_rotated_image(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    image = first_image(path.parent)
    image.unlink()
    save_with_orientation(image.with_suffix(".jpg"), np.zeros((30, 64, 3), np.uint8), 6)
    mask = mask_of(path.parent, image)
    save_mask(mask, np.ones((30, 64)))  # drawn on the file as stored, not as displayed
    only(
        problems_of(path),
        mask,
        "mask is 64x30 but its image is 30x64 as displayed",
        "EXIF orientation 6",
        "as displayed (orientation applied)",
    )


def test_mask_values_outside_the_classes(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    mask = mask_of(path.parent, first_image(path.parent))
    values = np.zeros((64, 64))
    values[0, :4] = [1, 7, 9, 255]
    save_mask(mask, values, "P")
    only(
        problems_of(path),
        mask,
        "mask values 7, 9 are not classes: the allowed values are 0..3",
        "and 255 (ignore)",
    )


def test_binary_looking_mask(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    mask = mask_of(path.parent, first_image(path.parent))
    values = np.zeros((64, 64))
    values[10:20, 10:20] = 255
    save_mask(mask, values)
    only(problems_of(path), mask, "looks binary", "255 means ignore; write the foreground as 1")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "I;16", "LA"])
def test_mask_of_a_wrong_mode(make_dataset: MakeDataset, mode: str) -> None:
    path = make_dataset("masks")
    mask = mask_of(path.parent, first_image(path.parent))
    Image.new(mode, (64, 64)).save(mask)
    only(problems_of(path), mask, f'mask has mode "{mode}"', '"L" grayscale or "P" palette')


def test_masks_folder_missing(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks")
    edit_yaml(path, val={"images": "images/val", "masks": "masks/nope"})
    problems = problems_of(path)
    assert problems[0] == Problem(
        str(path.parent / "masks/nope"), "the masks folder does not exist"
    )
    assert len(problems) == 3  # and each of the 2 val images lacks its mask


# --- COCO -------------------------------------------------------------------------------


def test_coco_json_unreadable(make_dataset: MakeDataset) -> None:
    path = make_dataset("coco")
    json_path = path.parent / "annotations" / "train.json"
    json_path.write_text('{"images": [')
    only(problems_of(path), json_path, "could not read the COCO JSON")


def test_coco_problems_are_all_listed_with_their_annotation_ids(
    make_dataset: MakeDataset,
) -> None:
    path = make_dataset("coco")
    root = path.parent
    data = read_coco(root)
    anns = data["annotations"]
    polygon = next(a for a in anns if isinstance(a["segmentation"], list))
    rle = next(a for a in anns if isinstance(a["segmentation"], dict))
    others = [a for a in anns if a is not polygon and a is not rle]
    polygon["segmentation"] = [[1, 1, 5, 5]]
    rle["segmentation"]["size"] = [32, 64]
    others[0]["image_id"] = 999
    others[1]["category_id"] = 4
    others[2]["bbox"] = [3, 4, 0, 10]
    others[3]["segmentation"] = []
    data["images"][1]["file_name"] = "gone.jpg"
    data["images"][2]["height"] = 50
    json_path = write_coco(root, data)
    messages = {p.message for p in problems_of(path)}
    assert {p.path for p in problems_of(path)} == {str(json_path)}
    where = root / "images" / "train"
    assert messages == {
        f"image 2 (gone.jpg) is listed but no such file is in {where}",
        "image 3 (" + data["images"][2]["file_name"] + ") is 64x50 in the JSON but 64x64 as "
        "displayed",
        f"annotation {polygon['id']}: polygon 0 has 4 numbers: a polygon needs at least 3 "
        "points (6 numbers), as x, y pairs",
        f"annotation {rle['id']}: RLE size 32x64 (height x width) differs from the image's "
        "64x64 as displayed",
        f"annotation {others[0]['id']}: image_id 999 is not an image of this file",
        f"annotation {others[1]['id']}: category_id 4 is not a category (known: 2, 5, 9)",
        f"annotation {others[2]['id']}: bbox [3, 4, 0, 10] has zero (or negative) width or height",
        f"annotation {others[3]['id']}: has no segmentation (polygons or RLE): instance "
        "training needs masks",
    }


def test_coco_size_of_an_exif_rotated_image_mentions_exif(make_dataset: MakeDataset) -> None:
    path = make_dataset("coco")
    root = path.parent
    data = read_coco(root)
    entry = data["images"][0]
    image = root / "images" / "train" / entry["file_name"]
    image.unlink()
    save_with_orientation(image.with_suffix(".jpg"), np.zeros((30, 64, 3), np.uint8), 8)
    entry["file_name"] = image.with_suffix(".jpg").name
    entry["width"], entry["height"] = 64, 30  # the stored size
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != entry["id"]]
    json_path = write_coco(root, data)
    only(
        problems_of(path),
        json_path,
        "is 64x30 in the JSON but 30x64 as displayed",
        "EXIF orientation 8",
    )


def test_coco_no_classes_and_duplicate_class_names(make_dataset: MakeDataset) -> None:
    path = make_dataset("coco")
    data = read_coco(path.parent)
    data["categories"] = []
    json_path = write_coco(path.parent, data)
    assert "no classes: the categories list is empty" in [p.message for p in problems_of(path)]
    data["categories"] = [{"id": 2, "name": "a"}, {"id": 5, "name": "a"}, {"id": 9, "name": "b"}]
    write_coco(path.parent, data)
    only(problems_of(path), json_path, "duplicate class name 'a' (category ids 2 and 5)")


def test_a_bare_coco_json_whose_images_are_nowhere(tmp_path: Path) -> None:
    json_path = tmp_path / "instances.json"
    json_path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
                "annotations": [],
                "categories": [{"id": 1, "name": "thing"}],
            }
        )
    )
    problem = only(problems_of(json_path), json_path, "image 1 (a.jpg) is listed but")
    for folder in (tmp_path, tmp_path / "images", tmp_path.parent / "images"):
        assert str(folder) in problem.message


# --- YOLO -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.1 0.1 abc 0.5 0.2 0.9", "cannot parse '0 0.1 0.1 abc 0.5 0.2 0.9'"),
        ("3 0.1 0.1 0.5 0.5 0.2 0.9", "class 3 is outside 0..2 (the 3 names)"),
        ("-1 0.1 0.1 0.5 0.5 0.2 0.9", "class -1 is outside 0..2"),
        ("1 0.1 0.1 1.5 0.5 0.2 0.9", "coordinate 1.5 is outside [0, 1]"),
        ("1 0.1 0.1", "polygon of 1 point(s): at least 3 are needed"),
        ("1 0.5 0.5 0.2 0.2", "has 4 numbers after the class, a detection box (cx cy w h)"),
        ("1 0.1 0.1 0.5 0.5 0.2", "has 5 coordinates: they must come in x y pairs"),
        ("1 0.1 0.5 0.3 0.5 0.9 0.5", "polygon has zero width or height"),
    ],
)
def test_yolo_line_problems_name_the_file_and_line(
    make_dataset: MakeDataset, line: str, message: str
) -> None:
    path = make_dataset("yolo")
    labels = label_file(path.parent, first_image(path.parent))
    labels.write_text(f"0 0.1 0.1 0.5 0.1 0.3 0.4\n\n{line}\n")
    only(problems_of(path), labels, f"line 3: {message}")


def test_yolo_labels_folder_missing(make_dataset: MakeDataset) -> None:
    path = make_dataset("yolo")
    edit_yaml(path, val={"images": "images/val", "labels": "labels/nope"})
    only(problems_of(path), path.parent / "labels/nope", "the labels folder does not exist")


# --- all at once, quickly, and without writing ------------------------------------------


def test_many_problems_across_files_are_listed_at_once(make_dataset: MakeDataset) -> None:
    path = make_dataset("masks", train=8, val=2)
    root = path.parent
    images = sorted((root / "images" / "train").iterdir())
    mask_of(root, images[0]).unlink()
    save_mask(mask_of(root, images[1]), np.zeros((10, 10)))
    save_mask(mask_of(root, images[2]), np.full((64, 64), 200))
    Image.new("RGB", (64, 64)).save(mask_of(root, images[3]))
    images[4].write_bytes(b"GIF89a" + b"\x00" * 20)
    (root / "images" / "val" / "extra.png").write_bytes(b"not an image at all")
    before = snapshot(root)
    problems = problems_of(path)
    assert snapshot(root) == before
    named = {Path(p.path).name for p in problems}
    assert named == {
        images[0].name,
        mask_of(root, images[1]).name,
        mask_of(root, images[2]).name,
        mask_of(root, images[3]).name,
        images[4].name,
        "extra.png",
    }
    assert len(problems) == 7  # extra.png also lacks a mask
