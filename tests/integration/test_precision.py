"""The fast paths against torchvision's reference pipeline (fp32, NCHW).

* ``channels_last`` and batch-norm folding (both on by default) compute the same fp32 values
  in another memory layout and with rescaled convolution weights: results equal the reference
  within rounding, by the same tolerances as batched results.
* ``bf16`` autocast rounds every convolution's inputs to 8 bits of mantissa: results differ
  visibly, so we measure agreement and hold it to a floor that only a broken path misses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from tests.integration.conftest import Checkpoints, Serve
from tests.integration.reference import (
    assert_class_map_matches,
    assert_instances_match,
    decode_png_array,
    instance_reference,
    make_image,
    png_bytes,
    semantic_reference,
)

pytestmark = pytest.mark.integration

CUT = {"score_threshold": 0.05, "mask_threshold": 0.5, "max_instances": 100}


async def _instances(service, data: bytes, **params: Any) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    response = await service.client.post(
        "/instances",
        params={**params, "mask_encoding": "rle"},
        content=data,
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200, response.text
    return response.json()["instances"]  # type: ignore[no-any-return]


async def _segment(service, data: bytes) -> np.ndarray:  # type: ignore[no-untyped-def]
    response = await service.client.post(
        "/segment", content=data, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    return decode_png_array(response.content)


@pytest.mark.parametrize("architecture", ["deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50"])
async def test_fast_path_class_maps_equal_reference_within_rounding(
    architecture: str, checkpoints: Checkpoints, serve: Serve
) -> None:
    case = checkpoints.get(architecture)
    async with serve(case.toml(), channels_last=True, fold_batchnorm=True) as service:
        models = (await service.client.get("/models")).json()["models"]
        assert (models[0]["channels_last"], models[0]["fold_batchnorm"]) == (True, True)
        data = png_bytes(make_image(61, 90, seed=31))
        got = await _segment(service, data)
    reference, _ = semantic_reference(case.model, architecture, data)
    assert_class_map_matches(got, reference, exact=False)


async def test_fast_path_instances_equal_reference_within_rounding(
    checkpoints: Checkpoints, serve: Serve
) -> None:
    architecture = "maskrcnn_resnet50_fpn_v2"
    case = checkpoints.get(architecture)
    data = png_bytes(make_image(100, 150, seed=32))
    async with serve(case.toml(), channels_last=True, fold_batchnorm=True) as service:
        instances = await _instances(service, data, **CUT)
    assert instances, "the seeded model should detect something"
    ref = instance_reference(case.model, architecture, data)
    assert_instances_match(instances, ref, case.categories, exact=False, **CUT)


async def test_bf16_class_maps_mostly_agree_with_fp32(
    checkpoints: Checkpoints, serve: Serve
) -> None:
    architecture = "deeplabv3_mobilenet_v3_large"
    case = checkpoints.get(architecture)
    data = png_bytes(make_image(64, 96, seed=33))
    async with serve(case.toml(), precision="bf16") as service:
        models = (await service.client.get("/models")).json()["models"]
        assert models[0]["precision"] == "bf16"
        got = await _segment(service, data)
    reference, _ = semantic_reference(case.model, architecture, data)
    agreement = float((got == reference.class_map).mean())
    # Pixels may flip only where fp32's top two classes were close; most are not.
    assert agreement >= 0.9, f"bf16 class map agrees with fp32 on {agreement:.1%} of pixels"
    assert len(np.unique(got)) >= 2


async def test_bf16_instances_find_the_fp32_detections(
    checkpoints: Checkpoints, serve: Serve
) -> None:
    architecture = "maskrcnn_resnet50_fpn_v2"
    case = checkpoints.get(architecture)
    data = png_bytes(make_image(100, 150, seed=34))
    async with serve(case.toml(), precision="bf16") as service:
        got = await _instances(service, data, score_threshold=0.3)
    ref = instance_reference(case.model, architecture, data)
    top = ref.cut(0.3, 10)
    assert len(top) == 10, "the seeded model should detect plenty at 0.3"
    # Untrained weights make boxes fragile (scores crowd within bf16's 1/128 steps, so NMS
    # keeps other neighbours), so the floor is loose: most of fp32's top detections have a
    # bf16 detection of the same class overlapping it by IoU >= 0.5.
    iou = box_iou(torch.tensor([ref.boxes[i] for i in top]), torch.tensor([g["bbox"] for g in got]))
    same_class = torch.tensor([ref.labels[i] for i in top])[:, None] == torch.tensor(
        [g["class_id"] for g in got]
    )
    best = (iou * same_class).max(dim=1).values
    assert (best >= 0.5).float().mean() >= 0.8, f"best IoUs of fp32's top 10: {best.tolist()}"
