import io
import json

import numpy as np
from PIL import Image

from bench.agreement import class_map_agreement, instance_agreement
from bench.baselines.pipeline import rle_of


def png(array: np.ndarray, palette: bool) -> bytes:
    image = Image.fromarray(array)
    if palette:
        image.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_class_map_agreement_reads_palette_and_grey_pngs() -> None:
    reference = np.zeros((4, 5), dtype=np.uint8)
    reference[0, :2] = 7
    got = reference.copy()
    got[3, 4] = 2  # one of 20 pixels differs
    for palette in (False, True):
        result = class_map_agreement(png(got, palette), reference)
        assert result["pixels_equal"] == 0.95
        assert result["reference_classes"] == 2
        assert "95.000%" in result["summary"]
        assert "says little" not in result["summary"]


def test_a_one_class_reference_is_flagged() -> None:
    reference = np.full((3, 3), 18, dtype=np.uint8)
    result = class_map_agreement(png(reference, False), reference)
    assert result["pixels_equal"] == 1.0
    assert "one-class reference says little" in result["summary"]


def test_class_map_of_another_shape_agrees_nowhere() -> None:
    result = class_map_agreement(png(np.zeros((2, 2), np.uint8), False), np.zeros((3, 3), np.uint8))
    assert result["pixels_equal"] == 0.0


def instance(class_id: int, mask: np.ndarray) -> dict:
    return {"class_id": class_id, "rle": rle_of(mask)}


def test_instance_agreement_counts_labels_and_mask_overlap() -> None:
    a = np.zeros((6, 6), bool)
    a[:3, :3] = True
    b = np.zeros((6, 6), bool)
    b[:3, :2] = True  # IoU with a: 6 / 9
    reference = [instance(1, a), instance(2, a)]
    body = json.dumps({"instances": [instance(1, b), instance(3, a), instance(1, a)]}).encode()
    result = instance_agreement(body, reference)
    assert result["instances"] == 3
    assert result["reference_instances"] == 2
    assert result["labels_equal"] == 1
    assert result["mean_mask_iou"] == (6 / 9 + 1.0) / 2


def test_no_instances_on_either_side_agree() -> None:
    result = instance_agreement(b'{"instances": []}', [])
    assert result["labels_equal"] == 0
    assert result["mean_mask_iou"] is None
    assert result["summary"].startswith("0 instances (reference 0)")
