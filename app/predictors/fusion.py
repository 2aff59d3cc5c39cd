"""Fold inference-mode batch norms into the convolutions before them.

In eval mode a BatchNorm is a fixed per-channel affine map, so ``bn(conv(x))`` equals one
convolution with rescaled weights and a bias: the same values up to float rounding, and one
pass over each activation tensor fewer (bench/speedups.py measures the gain; figures in
docs/PERFORMANCE.md). This is what inference compilers (TensorRT, ONNX Runtime, inductor's
freezing) do first.

Only pairs known to run back to back are folded: consecutive children of an ``nn.Sequential``
or of torchvision's ``IntermediateLayerGetter`` (both run their children in order), and the
``convN``/``bnN`` pairs of torchvision's ResNet and its blocks. Any other module is left as it is.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops.misc import FrozenBatchNorm2d

_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)
_IN_ORDER = (nn.Sequential, IntermediateLayerGetter)
# Their forward runs bnN right after convN (ResNet itself: its stem's conv1 and bn1).
_RESNET_MODULES = (BasicBlock, Bottleneck, ResNet)


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    """Names of (conv, norm) children that ``module`` runs back to back."""
    children = module._modules
    if isinstance(module, _IN_ORDER):
        names = list(children)
        return list(itertools.pairwise(names))
    if isinstance(module, _RESNET_MODULES):
        return [(f"conv{i}", f"bn{i}") for i in (1, 2, 3) if f"conv{i}" in children]
    return []


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every known conv -> batch-norm pair of ``model`` in place; returns how many.

    ``model`` must be in eval mode: a training-mode BatchNorm normalises by batch statistics,
    which no fixed weights can reproduce.
    """
    if model.training:
        raise ValueError("batch norms fold only in eval mode")
    folded = 0
    for module in list(model.modules()):
        for conv_name, norm_name in _pairs(module):
            conv, norm = module._modules[conv_name], module._modules[norm_name]
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, _NORMS)):
                continue
            if norm.running_mean is None or norm.running_mean.numel() != conv.out_channels:
                continue  # no running statistics (track_running_stats=False), or a mismatch
            # torch's own fold; it reads only running_mean/var, eps, weight and bias, which
            # FrozenBatchNorm2d has too (as buffers).
            module._modules[conv_name] = fuse_conv_bn_eval(conv, norm)
            module._modules[norm_name] = nn.Identity()
            folded += 1
    return folded
