"""Batch-norm folding: every norm of the shipped architectures folds, and values hold."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models import resnet
from torchvision.ops.misc import FrozenBatchNorm2d

from app.predictors.fusion import fold_batchnorm

NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _randomise_norms(model: nn.Module, seed: int) -> None:
    """Running statistics and affine terms far from the identity, so folding is visible."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, NORMS)):
            for name, low, high in [
                ("running_mean", -0.2, 0.2),
                ("running_var", 0.5, 2.0),
                ("weight", 0.5, 1.5),
                ("bias", -0.2, 0.2),
            ]:
                tensor = getattr(norm, name)
                tensor.copy_(torch.empty_like(tensor).uniform_(low, high, generator=generator))


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, NORMS) for m in model.modules())


def _build(architecture: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs: dict[str, object] = {"weights": None, "weights_backbone": None}
    if architecture.startswith("maskrcnn"):
        kwargs |= {"min_size": 96, "max_size": 128, "box_score_thresh": 0.0}
    else:
        kwargs["aux_loss"] = False
    model = tv_models.get_model(architecture, **kwargs).eval()
    _randomise_norms(model, seed=1)
    return model


@pytest.mark.parametrize(
    "architecture",
    [
        "deeplabv3_resnet50",
        "deeplabv3_mobilenet_v3_large",
        "fcn_resnet50",
        "lraspp_mobilenet_v3_large",
    ],
)
def test_every_norm_of_a_semantic_model_folds_and_logits_hold(architecture: str) -> None:
    model = _build(architecture)
    folded = copy.deepcopy(model)
    count = fold_batchnorm(folded)
    assert count == _norms(model) > 0
    assert _norms(folded) == 0
    x = torch.randn(1, 3, 72, 96, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want, got = model(x)["out"], folded(x)["out"]
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-3 * want.abs().max().item())


@pytest.mark.parametrize("architecture", ["maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn"])
def test_every_norm_of_mask_rcnn_folds_and_detections_hold(architecture: str) -> None:
    model = _build(architecture)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == _norms(model) > 0
    assert _norms(folded) == 0
    x = [torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(3))]
    with torch.inference_mode():
        (want,), (got,) = model(x), folded(x)
    assert len(want["scores"]) > 0
    # Same detections in the same order: rounding may move a box by a hair, not reorder NMS.
    assert torch.equal(got["labels"][:20], want["labels"][:20])
    assert torch.allclose(got["boxes"][:20], want["boxes"][:20], atol=0.05)


def test_frozen_batch_norms_fold_like_batch_norms() -> None:
    # The v1 Mask R-CNN backbone with pretrained weights runs FrozenBatchNorm2d.
    model = resnet.resnet50(norm_layer=FrozenBatchNorm2d).eval()
    _randomise_norms(model, seed=4)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == _norms(model) == 53
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        want, got = model(x), folded(x)
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-3 * want.abs().max().item())


class _NormFirst(nn.Module):
    """A conv and a norm as neighbouring children, but the norm runs before the conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


def test_pairs_not_known_to_run_in_order_are_left_alone() -> None:
    model = _NormFirst().eval()
    assert fold_batchnorm(model) == 0
    assert isinstance(model.bn, nn.BatchNorm2d)


def test_a_norm_without_running_statistics_is_left_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    assert fold_batchnorm(model) == 0


def test_training_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
