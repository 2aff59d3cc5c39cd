"""Run a semantic network in bf16 weights on CPU, instead of under autocast.

CPU autocast keeps some ops in fp32 (means, upsampling, a concatenation of mixed inputs) and
casts the activations to fp32 and back around each of them: a share of every forward pass
(the ASPP pooling's 2048-channel input alone is cast and read twice; figures in
docs/PERFORMANCE.md, "Why the code is the way it is"). With the
weights and the input in bf16, every op runs in bf16 and accumulates in fp32 inside its
kernel, as oneDNN's convolutions do under autocast too.

One more op is swapped: ``nn.AdaptiveAvgPool2d(1)`` (ASPP pooling, LR-ASPP, MobileNetV3's
squeeze-excitation) calls ``mean``, which on a bf16 channels-last tensor first copies it to
fp32; the pooling kernel itself reads bf16 directly, an order of magnitude faster.
"""

from __future__ import annotations

import torch
from torch import nn

from app.predictors.modules import replace_modules


class GlobalAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(1)`` through the pooling kernel, not through ``mean``.

    ``adaptive_avg_pool2d`` dispatches a 1x1 output to ``mean``; the kernel gives the same
    average (up to summation order) without the fp32 copy of a bf16 input.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._adaptive_avg_pool2d(x, [1, 1])


def _is_global(pool: nn.AdaptiveAvgPool2d) -> bool:
    return pool.output_size in (1, (1, 1), [1, 1])


def cast_to_bf16(model: nn.Module) -> nn.Module:
    """``model`` with bf16 parameters and buffers and its global average pools swapped."""
    replace_modules(model, nn.AdaptiveAvgPool2d, lambda _: GlobalAvgPool2d(), where=_is_global)
    return model.to(torch.bfloat16)
