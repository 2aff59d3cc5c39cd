"""POST /instances on real Mask R-CNN architectures equals torchvision's reference pipeline."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import get_model

from tests.integration.conftest import Checkpoints, Serve
from tests.integration.reference import (
    InstanceReference,
    assert_instances_match,
    decode_png_array,
    instance_reference,
    make_image,
    png_bytes,
    quiet_count,
    quiet_threshold,
)

pytestmark = pytest.mark.integration

ARCHITECTURES = ["maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn"]
SIZES = [(100, 150), (77, 61)]  # (height, width): upscaled and downscaled by min/max_size
# torchvision's own defaults (box_score_thresh, box_detections_per_img): the request asks
# for exactly what the reference model returns.
MODEL_CUT: dict[str, Any] = {"score_threshold": 0.05, "mask_threshold": 0.5, "max_instances": 100}


async def post_instances(service: Any, data: bytes, **params: Any) -> Any:
    response = await service.client.post(
        "/instances", params=params, content=data, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    return response


def reference_id_map(ref: InstanceReference, kept: list[int], mask_threshold: float) -> np.ndarray:
    """docs/api.md's id map from the reference: pixel k = the k-th instance, earliest on top."""
    ids = np.zeros(ref.probs.shape[1:], dtype=np.uint8)
    for k in range(len(kept), 0, -1):
        ids[ref.probs[kept[k - 1]] > mask_threshold] = k
    return ids


@pytest.mark.parametrize("architecture", ARCHITECTURES)
async def test_json_rle_equals_reference(
    architecture: str, checkpoints: Checkpoints, serve: Serve
) -> None:
    case = checkpoints.get(architecture)
    async with serve(case.toml()) as service:
        for k, (height, width) in enumerate(SIZES):
            data = png_bytes(make_image(height, width, seed=20 + k))
            ref = instance_reference(case.model, architecture, data)
            response = await post_instances(service, data, mask_encoding="rle", **MODEL_CUT)
            body = response.json()
            assert (body["model"], body["width"], body["height"]) == (case.name, width, height)
            instances = body["instances"]
            assert len(instances) > 0, "the seeded model should detect something"
            assert any(i["area"] > 0 for i in instances)
            # The same tensor operations as the reference: equal bit for bit.
            assert_instances_match(instances, ref, case.categories, exact=True, **MODEL_CUT)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
async def test_request_thresholds_equal_reference_cut(
    architecture: str, checkpoints: Checkpoints, serve: Serve
) -> None:
    """A stricter request keeps the reference's detections above its cut, in order.

    segserve pushes the request's score threshold and max_instances into the model, so
    masks are computed for fewer boxes than the reference computes: the mask head then runs
    at another batch size of regions, and mask probabilities may round differently
    (see ``reference``). Everything else is the reference's own output.
    """
    case = checkpoints.get(architecture)
    data = png_bytes(make_image(100, 150, seed=20))
    ref = instance_reference(case.model, architecture, data)
    cut = {
        "score_threshold": quiet_threshold(ref.scores, 20, 60),
        "mask_threshold": 0.35,
        "max_instances": quiet_count(ref.scores, 5, 10),
    }
    async with serve(case.toml()) as service:
        response = await post_instances(service, data, mask_encoding="both", **cut)
    instances = response.json()["instances"]
    assert len(instances) == cut["max_instances"]
    assert all(i["polygons"] or i["area"] == 0 for i in instances)
    assert_instances_match(instances, ref, case.categories, exact=False, **cut)


async def test_png_id_map_equals_reference(checkpoints: Checkpoints, serve: Serve) -> None:
    architecture = ARCHITECTURES[0]
    case = checkpoints.get(architecture)
    height, width = 77, 61
    data = png_bytes(make_image(height, width, seed=21))
    ref = instance_reference(case.model, architecture, data)
    async with serve(case.toml()) as service:
        response = await post_instances(service, data, format="png", **MODEL_CUT)
    assert response.headers["content-type"] == "image/png"
    kept = ref.cut(MODEL_CUT["score_threshold"], MODEL_CUT["max_instances"])
    expected = reference_id_map(ref, kept, MODEL_CUT["mask_threshold"])
    np.testing.assert_array_equal(decode_png_array(response.content), expected)
    assert len(np.unique(expected)) > 2, "several instances should show in the map"

    with Image.open(io.BytesIO(response.content)) as image:
        listed = json.loads(image.text["instances"])
    assert [(i["class_id"], i["score"], i["bbox"]) for i in listed] == [
        (ref.labels[i], ref.scores[i], ref.boxes[i]) for i in kept
    ]


async def test_builder_options_bound_every_request(checkpoints: Checkpoints, serve: Serve) -> None:
    """``[options]`` are the builder's keyword arguments: the reference is built with them."""
    architecture = "maskrcnn_resnet50_fpn"
    case = checkpoints.get(architecture)
    extra = {"box_score_thresh": 0.9, "box_detections_per_img": 10}
    reference_model = get_model(
        architecture,
        weights=None,
        weights_backbone=None,
        num_classes=len(case.categories),
        **case.options,
        **extra,
    )
    reference_model.load_state_dict(case.model.state_dict())
    reference_model.eval()
    data = png_bytes(make_image(100, 150, seed=1))
    with torch.inference_mode():
        ref = instance_reference(reference_model, architecture, data)
    assert 0 < len(ref.scores) <= 10
    async with serve(case.toml(extra_options=extra)) as service:
        response = await post_instances(service, data, mask_encoding="rle")  # API defaults
    cut = {"score_threshold": 0.5, "mask_threshold": 0.5, "max_instances": 100}
    assert_instances_match(response.json()["instances"], ref, case.categories, exact=True, **cut)


async def test_classes_filter_before_the_max_instances_cut(
    checkpoints: Checkpoints, serve: Serve
) -> None:
    architecture = ARCHITECTURES[0]
    case = checkpoints.get(architecture)
    data = png_bytes(make_image(100, 150, seed=20))
    ref = instance_reference(case.model, architecture, data)
    ranked = ref.cut(MODEL_CUT["score_threshold"], MODEL_CUT["max_instances"])
    # The class of a detection that is not among the best two: a cut before the filter
    # would lose it.
    label_id = next(ref.labels[i] for i in ranked[2:] if ref.labels[i] != ref.labels[ranked[0]])
    label = case.categories[label_id]
    expected = [i for i in ranked if ref.labels[i] == label_id][:2]
    async with serve(case.toml()) as service:
        response = await post_instances(
            service, data, classes=label, max_instances=2, score_threshold=0.05
        )
    instances = response.json()["instances"]
    assert [(i["class_id"], i["score"], i["bbox"]) for i in instances] == [
        (ref.labels[i], ref.scores[i], ref.boxes[i]) for i in expected
    ]
    assert [i["area"] for i in instances] == [int((ref.probs[i] > 0.5).sum()) for i in expected]
