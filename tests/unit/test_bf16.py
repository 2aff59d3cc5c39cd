"""bf16 weights on CPU: the swapped pooling computes the same average, the cast model stays close."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision import models as tv_models

from app.predictors.bf16 import GlobalAvgPool2d, cast_to_bf16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_global_pool_is_adaptive_average_pooling(dtype: torch.dtype, channels_last: bool) -> None:
    x = torch.randn(2, 64, 13, 9, generator=torch.Generator().manual_seed(0)).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = GlobalAvgPool2d()(x)
    want = nn.AdaptiveAvgPool2d(1)(x.float())
    assert got.shape == (2, 64, 1, 1) and got.dtype == dtype
    tolerance = 1e-6 if dtype is torch.float32 else 1e-2  # bf16 keeps 8 bits of mantissa
    torch.testing.assert_close(got.float(), want, rtol=tolerance, atol=tolerance)


def _build(architecture: str) -> nn.Module:
    torch.manual_seed(0)
    model = tv_models.get_model(architecture, weights=None, weights_backbone=None, aux_loss=False)
    return model.eval()


@pytest.mark.parametrize(
    ("architecture", "pools"),
    # ASPP pooling; LR-ASPP's scale branch + MobileNetV3's squeeze-excitation blocks.
    [("deeplabv3_resnet50", 1), ("lraspp_mobilenet_v3_large", 9)],
)
def test_cast_swaps_every_global_pool_and_keeps_the_logits(architecture: str, pools: int) -> None:
    model = _build(architecture)
    assert sum(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules()) == pools
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = model(x)["out"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(x)["out"].float()
        cast = cast_to_bf16(copy.deepcopy(model))
        got = cast(x.to(torch.bfloat16))["out"].float()
    assert sum(isinstance(m, GlobalAvgPool2d) for m in cast.modules()) == pools
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in cast.modules())
    assert {p.dtype for p in cast.parameters()} == {torch.bfloat16}
    # As close to fp32 as autocast is (both round convolution inputs to bf16), give or take.
    error = (got - want).abs().mean().item()
    autocast_error = (autocast - want).abs().mean().item()
    assert error <= 2 * autocast_error, (error, autocast_error)
    assert error < 0.05 * want.abs().mean().item()
