"""Tiled POST /segment on a real torchvision model equals the rule of docs/api.md ("Tiling"),
computed here by an independent loop over windows with torchvision's model on the same weights.

The reference is written from the documentation alone, without segserve code: the grid along
each axis (windows of T start every T - O pixels while they end before the edge, and one more
ends at the edge), each window normalised as the preset normalises (``/255``, ``mean``,
``std``) without its resize, ``model(batch)["out"]`` at the window's size, the logits of every
window covering a pixel summed, argmax over classes. The service batches windows (and folds
batch norms, in channels-last, when those settings are on), which rounds the sums differently:
agreement is required on 99.9% of the pixels, and the pixels that differ must be near-ties.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchvision.models import get_model, get_model_weights

from tests.integration.conftest import ModelCase, Serve
from tests.integration.reference import calibrate, decode_png_array, make_image, png_bytes

pytestmark = pytest.mark.integration

ARCHITECTURE = "lraspp_mobilenet_v3_large"  # draws many classes at native resolution, cheaply
CATEGORIES = ["__background__", *(f"class{k}" for k in range(1, 21))]  # 21, like VOC
MIN_AGREEMENT = 0.999
NEAR_TIE = 1e-2  # top-2 summed-logit gap under which rounding may flip a pixel

# Settings the service may run with: the bit-exact NCHW path and the defaults (channels-last
# convolutions, batch norms folded), which change rounding only.
SETTINGS = {
    "exact": {"channels_last": False, "fold_batchnorm": False},
    "defaults": {"channels_last": True, "fold_batchnorm": True},
}


@pytest.fixture(scope="module")
def case(weights_dir: Path) -> ModelCase:
    """LR-ASPP with 21 classes on seeded weights, batch norms calibrated on real-looking
    images (so the map varies), saved as a checkpoint the service loads."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(14)
        model = get_model(
            ARCHITECTURE, weights=None, weights_backbone=None, num_classes=len(CATEGORIES)
        )
    calibrate(model, ARCHITECTURE, seed=1014)
    checkpoint = f"{ARCHITECTURE}-21classes-tiling.pth"
    torch.save(model.state_dict(), weights_dir / checkpoint)
    return ModelCase("semantic", ARCHITECTURE, CATEGORIES, model, checkpoint)


# ------------------------------------------------------------------ the rule, independently


def starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    out, start = [], 0
    while start + tile < length:
        out.append(start)
        start += tile - overlap
    out.append(length - tile)
    return out


def window_boxes(height: int, width: int, tile: int, overlap: int) -> Iterator[tuple[int, ...]]:
    h, w = min(tile, height), min(tile, width)
    for y in starts(height, tile, overlap):
        for x in starts(width, tile, overlap):
            yield y, x, h, w


def normalised(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float, as the preset normalises, without its resize."""
    preset = get_model_weights(ARCHITECTURE).DEFAULT.transforms()
    mean = torch.tensor(preset.mean).view(3, 1, 1)
    std = torch.tensor(preset.std).view(3, 1, 1)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    return (tensor - mean) / std


def tiled_sums(model: torch.nn.Module, image: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    """(C, H, W) float64 sums of the logits of every window covering each pixel."""
    height, width = image.shape[:2]
    x = normalised(image)
    sums = np.zeros((len(CATEGORIES), height, width), dtype=np.float64)
    with torch.inference_mode():
        for y0, x0, h, w in window_boxes(height, width, tile, overlap):
            window = x[:, y0 : y0 + h, x0 : x0 + w].unsqueeze(0)
            logits = model(window)["out"][0]
            assert logits.shape == (len(CATEGORIES), h, w)  # at the window's own size
            sums[:, y0 : y0 + h, x0 : x0 + w] += logits.double().numpy()
    return sums


def native_logits(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The plain forward at the image's native resolution (no resize)."""
    with torch.inference_mode():
        return model(normalised(image).unsqueeze(0))["out"][0].double().numpy()


def assert_agrees(got: np.ndarray, sums: np.ndarray, what: str) -> float:
    """>= 99.9% of pixels equal the reference's argmax; those that differ are near-ties."""
    expected = sums.argmax(axis=0).astype(np.uint8)
    assert got.shape == expected.shape and got.dtype == np.uint8
    # Not vacuous: the reference map has several classes.
    assert len(np.unique(expected)) >= 4, f"{what}: reference classes {np.unique(expected)}"
    differ = got != expected
    agreement = 1 - differ.mean()
    assert agreement >= MIN_AGREEMENT, f"{what}: {int(differ.sum())} of {differ.size} differ"
    if differ.any():
        top2 = np.sort(sums, axis=0)[-2:]
        gaps = (top2[1] - top2[0])[differ]
        assert gaps.max() <= NEAR_TIE, f"{what}: a pixel differs at a top-2 gap of {gaps.max()}"
    print(f"{what}: {int(differ.sum())} of {differ.size} pixels differ from the reference")
    return float(agreement)


async def segment(service: Any, image: np.ndarray, tile: int, **params: Any) -> np.ndarray:
    response = await service.client.post(
        "/segment",
        params={"format": "png", "tile": tile, **params},
        content=png_bytes(image),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200, response.text
    timing = response.headers["server-timing"]
    assert "stitch;dur=" in timing
    height, width = image.shape[:2]
    overlap = params.get("overlap", tile // 4)
    assert f'windows;desc="{len(list(window_boxes(height, width, tile, overlap)))}"' in timing
    return decode_png_array(response.content)


# (height, width, tile, overlap): awkward sizes.
CASES: dict[str, tuple[int, int, int, int]] = {
    "smaller-than-a-tile": (45, 60, 64, 16),
    "one-over-a-multiple-of-the-stride": (64 + 48 + 1, 64 + 2 * 48 + 1, 64, 16),
    "very-wide": (40, 700, 64, 16),
    "no-overlap": (70, 90, 32, 0),
    "three-pixels-high": (3, 200, 32, 8),
}


@pytest.mark.parametrize("settings", list(SETTINGS), ids=list(SETTINGS))
async def test_tiled_class_map_equals_the_rule(
    case: ModelCase, serve: Serve, settings: str
) -> None:
    async with serve(case.toml(), **SETTINGS[settings]) as service:
        for k, (what, (height, width, tile, overlap)) in enumerate(CASES.items()):
            image = make_image(height, width, seed=140 + k)
            got = await segment(service, image, tile=tile, overlap=overlap)
            sums = tiled_sums(case.model, image, tile, overlap)
            assert_agrees(got, sums, f"{settings}, {what}")


@pytest.mark.parametrize("settings", list(SETTINGS), ids=list(SETTINGS))
async def test_a_tile_covering_the_image_is_the_native_resolution_forward(
    case: ModelCase, serve: Serve, settings: str
) -> None:
    image = make_image(90, 130, seed=77)
    expected = native_logits(case.model, image)
    async with serve(case.toml(), **SETTINGS[settings]) as service:
        for tile in (130, 4096):  # exactly the long side, and the largest tile
            got = await segment(service, image, tile=tile)
            assert_agrees(got, expected, f"{settings}, tile={tile}")
            if settings == "exact":
                # One window, alone in its batch, on the NCHW path: the very same operations.
                np.testing.assert_array_equal(got, expected.argmax(axis=0))
        # Not the untiled answer, which resizes to the preset's 520 px short side.
        untiled = await service.client.post(
            "/segment", content=png_bytes(image), headers={"content-type": "image/png"}
        )
        assert (decode_png_array(untiled.content) != expected.argmax(axis=0)).any()


async def test_windows_of_a_tiled_request_batch_together_and_still_follow_the_rule(
    case: ModelCase, serve: Serve
) -> None:
    """The reference runs each window alone; the service batches them (max_batch_size 8)."""
    image = make_image(100, 150, seed=5)
    name, text = case.toml(max_batch_size=8, max_wait_ms=20.0)
    async with serve((name, text), **SETTINGS["exact"]) as service:
        sizes: list[int] = []
        batcher = service.registry.models[name].batcher
        previous = batcher.on_batch
        batcher.on_batch = sizes.append
        try:
            got = await segment(service, image, tile=48, overlap=12)
        finally:
            batcher.on_batch = previous
    assert sum(sizes) == 12 and max(sizes) > 1, sizes
    assert_agrees(got, tiled_sums(case.model, image, 48, 12), "batched windows")


async def test_window_logits_come_as_class_planes_from_the_network_itself(
    case: ModelCase, serve: Serve
) -> None:
    """Channels-last networks give channels-last logits; reordering them after the forward
    copies the full-size logits, so predict_windows has the model's own upsampling write class
    planes, and leaves the model as it found it."""
    name, text = case.toml()
    async with serve((name, text), **SETTINGS["defaults"]) as service:
        predictor = service.registry.models[name].predictor
        model = predictor.model
        layouts: list[bool] = []
        probe = model.register_forward_hook(
            lambda _m, _i, out: layouts.append(out["out"].is_contiguous())
        )
        windows = [make_image(40, 56, seed=s) for s in (1, 2)]
        try:
            planes = predictor.predict_windows(windows)
            with torch.inference_mode():
                batch = torch.stack(
                    [predictor.window_preprocess(predictor.to_tensor(w)) for w in windows]
                )
                channels_last = predictor._logits(batch)
        finally:
            probe.remove()
    assert layouts == [True, False]  # planes from the network; its usual output is not
    assert not model.classifier._forward_hooks
    assert [p.shape for p in planes] == [(len(CATEGORIES), 40, 56)] * 2
    assert all(p.flags.c_contiguous for p in planes)
    np.testing.assert_allclose(np.stack(planes), channels_last.numpy(), rtol=0, atol=1e-5)
