"""POST /segment on real torchvision architectures equals torchvision's reference pipeline."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
import torch
from torchvision.models import get_model, get_model_weights

from tests.integration.conftest import Checkpoints, Serve, model_toml
from tests.integration.reference import (
    assert_class_map_matches,
    decode_png_array,
    make_image,
    png_bytes,
    semantic_reference,
)

pytestmark = pytest.mark.integration

# (height, width): landscape, portrait, odd sides; all upsampled 5-15x by the 520 px preset.
SIZES = [(37, 53), (64, 48), (90, 61)]


def request_forms(data: bytes) -> list[dict[str, Any]]:
    """The three ways docs/api.md accepts an image, as httpx keyword arguments."""
    return [
        {"content": data, "headers": {"content-type": "image/png"}},
        {"files": {"image": ("image.png", data, "image/png")}},
        {"json": {"image": base64.b64encode(data).decode("ascii")}},
    ]


@pytest.mark.parametrize(
    "architecture",
    [
        "deeplabv3_mobilenet_v3_large",
        "lraspp_mobilenet_v3_large",
        "deeplabv3_resnet50",
        "fcn_resnet50",
    ],
)
async def test_png_class_map_equals_reference(
    architecture: str, checkpoints: Checkpoints, serve: Serve
) -> None:
    case = checkpoints.get(architecture)
    # The heavier ResNet-50 models get one image each: their cost is the 520 px forward.
    sizes = SIZES if "mobilenet" in architecture else SIZES[:1]
    classes_seen: set[int] = set()
    async with serve(case.toml()) as service:
        for k, (height, width) in enumerate(sizes):
            data = png_bytes(make_image(height, width, seed=10 + k))
            form = request_forms(data)[k % 3]
            response = await service.client.post("/segment", **form)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "image/png"
            got = decode_png_array(response.content)
            assert got.shape == (height, width)

            reference, _ = semantic_reference(case.model, architecture, data)
            assert_class_map_matches(got, reference, exact=True)
            classes_seen |= set(np.unique(reference.class_map).tolist())
    # Not vacuous: the seeded, calibrated model draws more than one class.
    assert len(classes_seen) >= 2


async def test_json_segments_areas_equal_reference_bincount(
    checkpoints: Checkpoints, serve: Serve
) -> None:
    architecture = "lraspp_mobilenet_v3_large"  # the one that draws many classes cheaply
    case = checkpoints.get(architecture)
    height, width = 71, 83
    data = png_bytes(make_image(height, width, seed=3))
    async with serve(case.toml()) as service:
        response = await service.client.post(
            "/segment",
            params={"format": "json"},
            content=data,
            headers={"content-type": "image/png"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["width"], body["height"]) == (case.name, width, height)

    reference, _ = semantic_reference(case.model, architecture, data)
    counts = np.bincount(reference.class_map.ravel(), minlength=len(case.categories))
    expected = {c: int(counts[c]) for c in range(1, len(case.categories)) if counts[c]}
    assert len(expected) >= 2, "the image should show at least two non-background classes"
    assert {s["class_id"]: s["area"] for s in body["segments"]} == expected
    for segment in body["segments"]:
        assert segment["label"] == case.categories[segment["class_id"]]
        assert segment["polygons"], "a class present in the map has at least one polygon"


async def test_untrained_weights_none_equals_seeded_builder(serve: Serve) -> None:
    """``weights = "none"``: the builder run under ``torch.manual_seed(settings.seed)``."""
    architecture = "lraspp_mobilenet_v3_large"
    seed = 1234
    categories = get_model_weights(architecture).DEFAULT.meta["categories"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_model(
            architecture, weights=None, weights_backbone=None, num_classes=len(categories)
        ).eval()
    data = png_bytes(make_image(45, 60, seed=5))
    toml = model_toml(task="semantic", architecture=architecture, weights="none")
    async with serve(("untrained", toml), seed=seed) as service:
        listed = (await service.client.get("/models")).json()["models"]
        response = await service.client.post(
            "/segment", content=data, headers={"content-type": "image/png"}
        )
    assert [(m["name"], m["weights"], m["categories"]) for m in listed] == [
        ("untrained", "untrained", categories)
    ]
    assert response.status_code == 200, response.text
    reference, _ = semantic_reference(model, architecture, data)
    assert_class_map_matches(decode_png_array(response.content), reference, exact=True)
