"""The same requests on a CUDA device: results equal the CPU reference up to rounding.

Skipped where there is no GPU (CI here); run on a lent GPU machine with
`pytest tests/integration/test_device.py`.
"""

from __future__ import annotations

import pytest
import torch

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

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUT = {"score_threshold": 0.05, "mask_threshold": 0.5, "max_instances": 100}


async def test_semantic_on_cuda_equals_the_cpu_reference(
    checkpoints: Checkpoints, serve: Serve
) -> None:
    case = checkpoints.get("deeplabv3_mobilenet_v3_large")
    data = png_bytes(make_image(97, 131, seed=5))
    ref, _ = semantic_reference(case.model, case.architecture, data)
    async with serve(case.toml(), device="cuda", warmup=True) as service:
        assert (await service.client.get("/models")).json()["models"][0]["device"] == "cuda:0"
        response = await service.client.post(
            "/segment", content=data, headers={"content-type": "image/png"}
        )
    assert response.status_code == 200, response.text
    assert_class_map_matches(decode_png_array(response.content), ref, exact=False)


async def test_instances_on_cuda_equal_the_cpu_reference(
    checkpoints: Checkpoints, serve: Serve
) -> None:
    case = checkpoints.get("maskrcnn_resnet50_fpn_v2")
    data = png_bytes(make_image(100, 150, seed=20))
    ref = instance_reference(case.model, case.architecture, data)
    async with serve(case.toml(), device="cuda", warmup=True) as service:
        response = await service.client.post(
            "/instances",
            params={**CUT, "mask_encoding": "rle"},
            content=data,
            headers={"content-type": "image/png"},
        )
    assert response.status_code == 200, response.text
    assert_instances_match(response.json()["instances"], ref, case.categories, exact=False, **CUT)
