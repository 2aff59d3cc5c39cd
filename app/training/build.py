"""The network ``segserve finetune`` trains: a torchvision architecture, its starting
parameters, and heads replaced for the user's classes.

Starting points (``--start``):

- ``pretrained``: the architecture's published weights (its enum's ``DEFAULT``), found in the
  weights directory exactly as the service finds them (torch.hub's file name, hash-checked);
- ``backbone``: the ImageNet classifier weights of its backbone only;
- ``scratch``: seeded random parameters.

torchvision's builders fetch missing files through torch.hub by themselves. Here the builder
is given its weights explicitly, and only after the file has been found (and verified) in the
weights directory, with torch.hub pointed at that file: nothing is ever downloaded silently.
The builders refuse ``num_classes`` together with weights, so a pretrained network is built
with its own classes and its class-producing layers are then replaced (torchvision's
fine-tuning tutorial does the same).
"""

from __future__ import annotations

import contextlib
import inspect
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models import WeightsEnum
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

from app.errors import ConfigError
from app.predictors.weights import locate_torchvision_weights, weights_file_name

Start = Literal["pretrained", "backbone", "scratch"]
STARTS: tuple[Start, ...] = ("pretrained", "backbone", "scratch")

# The ImageNet weights each backbone family starts from with `--start backbone` (the
# builders' own `weights_backbone` defaults; maskrcnn_resnet50_fpn_v2 has none, and
# torchvision's reference recipe for it passes ResNet50's IMAGENET1K_V1).
_BACKBONE_WEIGHTS = {
    "mobilenet_v3_large": tv_models.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    "resnet50": tv_models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": tv_models.ResNet101_Weights.IMAGENET1K_V1,
}


def backbone_weights(architecture: str) -> WeightsEnum:
    """The ImageNet weights of ``architecture``'s backbone."""
    for family, member in _BACKBONE_WEIGHTS.items():
        if family in architecture:
            return member
    raise ConfigError(f"no ImageNet backbone weights known for {architecture}")  # pragma: no cover


def starting_weights(architecture: str, start: Start) -> WeightsEnum | None:
    """The torchvision weights ``start`` needs (None: from scratch)."""
    if start == "pretrained":
        return tv_models.get_model_weights(architecture).DEFAULT
    if start == "backbone":
        return backbone_weights(architecture)
    return None


@contextlib.contextmanager
def _hub_serving(files: dict[str, Path]) -> Iterator[None]:
    """torch.hub, for the duration, finds exactly ``files`` in its cache and nothing else.

    torchvision loads weights with ``load_state_dict_from_url``, which reads
    ``<hub dir>/checkpoints/<file name>`` when present (and checks its hash prefix).
    """
    previous = torch.hub.get_dir()
    with tempfile.TemporaryDirectory(prefix="segserve-hub-") as hub:
        checkpoints = Path(hub, "checkpoints")
        checkpoints.mkdir()
        for name, path in files.items():
            (checkpoints / name).symlink_to(path.resolve())
        torch.hub.set_dir(hub)
        try:
            yield
        finally:
            torch.hub.set_dir(previous)


def _starting_file(
    architecture: str, start: Start, member: WeightsEnum, weights_dir: Path, allow_download: bool
) -> Path:
    """The verified weights file of a start; missing (offline), an error saying how to get it."""
    try:
        return locate_torchvision_weights(
            member, weights_dir, allow_download=allow_download, name=architecture
        )
    except ConfigError as exc:
        if not (weights_dir / weights_file_name(member)).is_file():
            what = "published weights" if start == "pretrained" else "ImageNet backbone weights"
            raise ConfigError(
                f"--start {start}: {architecture}'s {what}, "
                f"{weights_dir / weights_file_name(member)}, are missing and cannot be "
                f"downloaded here. Run `segserve weights fetch --finetune {architecture} "
                f"--start {start}` where the network allows and copy the file into "
                f"{weights_dir} (or download {member.url} there), or train without them: "
                "--start scratch"
            ) from None
        raise ConfigError(f"--start {start}: {exc}") from None


def _replace_heads(model: nn.Module, architecture: str, num_classes: int) -> None:
    """New class-producing layers for ``num_classes`` (background included)."""
    if architecture.startswith("maskrcnn"):
        heads: Any = model.roi_heads
        box_in = heads.box_predictor.cls_score.in_features
        heads.box_predictor = FastRCNNPredictor(box_in, num_classes)
        mask_in = heads.mask_predictor.conv5_mask.in_channels
        heads.mask_predictor = MaskRCNNPredictor(mask_in, mask_in, num_classes)
        return
    classifier: Any = model.classifier
    if architecture.startswith("lraspp"):
        classifier.low_classifier = _fresh_conv(classifier.low_classifier, num_classes)
        classifier.high_classifier = _fresh_conv(classifier.high_classifier, num_classes)
        return
    # DeepLabHead and FCNHead both end in a 1x1 convolution to the classes; so does the
    # auxiliary FCNHead.
    classifier[-1] = _fresh_conv(classifier[-1], num_classes)
    aux: Any = getattr(model, "aux_classifier", None)
    if aux is not None:
        aux[-1] = _fresh_conv(aux[-1], num_classes)


def _fresh_conv(conv: nn.Conv2d, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(conv.in_channels, out_channels, kernel_size=1)


def build_trainable(
    architecture: str,
    num_classes: int,
    *,
    start: Start,
    weights_dir: Path,
    allow_download: bool,
    seed: int,
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """``architecture`` for ``num_classes`` classes (background included), in train mode.

    Semantic networks that have one get an auxiliary head (trained with the reference
    recipe's weight 0.5 and dropped for serving). ``options`` are builder keyword arguments
    (e.g. Mask R-CNN's ``trainable_backbone_layers``, ``min_size``).
    """
    builder = tv_models.get_model_builder(architecture)
    member = starting_weights(architecture, start)
    kwargs: dict[str, Any] = dict(options or {})
    if "aux_loss" in _builder_parameters(architecture):
        kwargs["aux_loss"] = True
    files: dict[str, Path] = {}
    if member is not None:
        files[weights_file_name(member)] = _starting_file(
            architecture, start, member, weights_dir, allow_download
        )
    if start == "pretrained":
        kwargs.update(weights=member, weights_backbone=None)
    else:
        kwargs.update(weights=None, weights_backbone=member, num_classes=num_classes)
    if start == "scratch":
        kwargs.pop("trainable_backbone_layers", None)  # every layer trains from scratch
    try:
        with _hub_serving(files), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder(progress=False, **kwargs)
            if start == "pretrained":
                _replace_heads(model, architecture, num_classes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build {architecture} with {kwargs}: {exc}") from None
    return model.train()


def _builder_parameters(architecture: str) -> set[str]:
    return set(inspect.signature(tv_models.get_model_builder(architecture)).parameters)
