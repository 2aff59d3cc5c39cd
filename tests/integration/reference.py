"""torchvision's reference pipelines, computed without any segserve code, and the comparisons.

The reference for an image file is what a torchvision user writes::

    image = torchvision.io.decode_image(file_bytes, mode=RGB)      # (3, H, W) uint8
    batch = weights.transforms()(image).unsqueeze(0)               # semantic
    logits = model(batch)["out"]
    class_map = F.interpolate(logits, (H, W), mode="bilinear", align_corners=False).argmax(1)

    out = model([weights.transforms()(image)])[0]                  # Mask R-CNN
    keep scores >= score_threshold, the first max_instances, masks > mask_threshold

Exactness. A request served alone runs the very same tensor operations as the reference, so
it must match bit for bit. A request served *in a batch* runs the convolutions and matrix
products at another batch size, and CPU (oneDNN/MKL) kernels pick their blocking by shape:
sums are then rounded in another order (measured on a 2-core AVX-512 CPU with torch 2.14:
Mask R-CNN `layer4` features differ by up to ~1e-4, boxes by up to ~1e-3 px, scores by up to
~5e-6, mask probabilities by up to ~1e-3, depending on the weights). So batched
results are compared with a tolerance that admits only that: a class-map pixel may differ only
where the reference's top two logits are within rounding of each other; a mask pixel only
where the reference probability is within rounding of the threshold; two detections may swap
places only where the reference scores tie within rounding.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from pycocotools import mask as coco_mask
from torch import nn
from torchvision.io import ImageReadMode, decode_image
from torchvision.models import get_model_weights

# Tolerances for batched results (see the module docstring for what they stand for).
LOGIT_ATOL = 1e-3  # top-2 logit gap within which argmax may legitimately flip
SCORE_ATOL = 1e-4
BOX_ATOL = 0.05  # pixels
MASK_PROB_ATOL = 5e-3  # |probability - mask_threshold| within which a mask pixel may flip
MAX_FLIPPED_FRACTION = 0.01  # of a class map's pixels or of a mask's area


# ----------------------------------------------------------------------------------- images


def make_image(height: int, width: int, seed: int) -> np.ndarray:
    """A seeded (H, W, 3) uint8 RGB image: colour gradients, a few discs and boxes, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), dtype=np.float64)
    image[..., 0] = 255 * x / max(width - 1, 1)
    image[..., 1] = 255 * y / max(height - 1, 1)
    image[..., 2] = 128
    for _ in range(4):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.1, 0.35) * min(height, width)
        if rng.random() < 0.5:
            shape = (y - cy) ** 2 + (x - cx) ** 2 < r * r
        else:
            shape = (abs(y - cy) < r) & (abs(x - cx) < 0.7 * r)
        image[shape] = rng.integers(0, 256, 3)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_reference(data: bytes) -> torch.Tensor:
    """The file decoded by torchvision itself: (3, H, W) uint8, as read_image gives."""
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)


def decode_png_array(data: bytes) -> np.ndarray:
    """A PNG response's pixel values (the palette index for mode P)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return np.array(image)


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """A COCO RLE from the API ({"size": [h, w], "counts": str}) as an (h, w) bool mask."""
    encoded = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return coco_mask.decode(encoded).astype(bool)


# ------------------------------------------------------------------------------ the models


def calibrate(model: nn.Module, architecture: str, seed: int) -> None:
    """Give a random network the activation statistics a trained one has.

    Freshly initialised BatchNorms (mean 0, var 1) let activations blow up or vanish, which
    makes a random network predict one class everywhere (and run slowly on subnormals). One
    forward pass over two seeded images with batch statistics fixes the scale, so outputs
    depend on the image. Detection models stay in eval mode (their inference path) with only
    the BatchNorms switched to training. A semantic head's bias is then centred on those
    images' mean logits, so that no class wins everywhere.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    preprocess = get_model_weights(architecture).DEFAULT.transforms()
    images = [
        torch.from_numpy(make_image(39, 52, seed + i)).permute(2, 0, 1).contiguous()
        for i in range(2)
    ]
    if hasattr(model, "roi_heads"):
        inputs: Any = [preprocess(image) for image in images]
    else:
        # The preset's pipeline at half its 520 px size: similar statistics, 4x cheaper.
        mean = torch.tensor(preprocess.mean).view(3, 1, 1)
        std = torch.tensor(preprocess.std).view(3, 1, 1)
        inputs = torch.stack(
            [
                (TF.resize(image, [260], antialias=True).float() / 255 - mean) / std
                for image in images
            ]
        )
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # running stats = this batch's statistics
        norm.train()
    with torch.no_grad():
        model(inputs)
    for norm in norms:
        norm.momentum = 0.1
        norm.eval()
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Conv2d):
        with torch.no_grad():
            head[-1].bias -= model(inputs)["out"].mean(dim=(0, 2, 3))


# ---------------------------------------------------------------------- semantic reference


@dataclass(frozen=True)
class SemanticReference:
    class_map: np.ndarray  # (H, W) uint8
    logits: torch.Tensor  # (C, H, W) float, upsampled to the input size

    def top2_gap(self) -> np.ndarray:
        top2 = self.logits.topk(2, dim=0).values
        return (top2[0] - top2[1]).numpy()


def semantic_reference(
    model: nn.Module, architecture: str, data: bytes
) -> tuple[SemanticReference, tuple[int, int]]:
    """The reference class map of an image file, and the shape the network saw."""
    image = decode_reference(data)
    height, width = image.shape[-2:]
    preprocess = get_model_weights(architecture).DEFAULT.transforms()
    with torch.inference_mode():
        batch = preprocess(image).unsqueeze(0)
        logits = model(batch)["out"]
        upsampled = F.interpolate(
            logits, size=(height, width), mode="bilinear", align_corners=False
        )
        class_map = upsampled.argmax(1)[0].to(torch.uint8).numpy()
    reference = SemanticReference(class_map=class_map, logits=upsampled[0].clone())
    return reference, (int(batch.shape[-2]), int(batch.shape[-1]))


def assert_class_map_matches(got: np.ndarray, ref: SemanticReference, *, exact: bool) -> None:
    assert got.shape == ref.class_map.shape
    assert got.dtype == np.uint8
    differ = got != ref.class_map
    if exact or not differ.any():
        assert not differ.any(), f"{int(differ.sum())} of {differ.size} pixels differ"
        return
    gaps = ref.top2_gap()[differ]
    assert differ.mean() <= MAX_FLIPPED_FRACTION, f"{int(differ.sum())} pixels differ"
    assert gaps.max() <= LOGIT_ATOL, (
        f"{int(differ.sum())} pixels differ, one where the reference's top-2 logit gap is "
        f"{gaps.max():.3g} (> {LOGIT_ATOL}): not a rounding difference"
    )
    _report(f"{int(differ.sum())} class-map pixels (top-2 logit gaps <= {gaps.max():.2g})")


def _report(what: str) -> None:
    """Say which rounding differences a tolerant comparison let through (pytest shows it)."""
    warnings.warn(
        RoundingDifference(f"differs from the reference by rounding: {what}"), stacklevel=3
    )


class RoundingDifference(UserWarning):
    pass


# ---------------------------------------------------------------------- instance reference


@dataclass(frozen=True)
class InstanceReference:
    """torchvision's output for one image (sorted by score), before the request's cut."""

    labels: list[int]
    scores: list[float]
    boxes: list[list[float]]
    probs: np.ndarray  # (N, H, W) float32 mask probabilities, pasted into the image

    def cut(self, score_threshold: float, max_instances: int) -> list[int]:
        """Indices kept for a request: scores >= score_threshold, the first max_instances."""
        kept = [i for i, s in enumerate(self.scores) if s >= score_threshold]
        return kept[:max_instances]


def instance_reference(model: nn.Module, architecture: str, data: bytes) -> InstanceReference:
    image = decode_reference(data)
    preprocess = get_model_weights(architecture).DEFAULT.transforms()
    with torch.inference_mode():
        out = model([preprocess(image)])[0]
    return InstanceReference(
        labels=out["labels"].tolist(),
        scores=out["scores"].tolist(),
        boxes=out["boxes"].tolist(),
        probs=out["masks"][:, 0].numpy().copy(),
    )


def rcnn_network_shape(model: nn.Module, architecture: str, data: bytes) -> tuple[int, int]:
    """The padded shape Mask R-CNN's own transform gives this image when run alone."""
    preprocess = get_model_weights(architecture).DEFAULT.transforms()
    with torch.inference_mode():
        images, _ = model.transform([preprocess(decode_reference(data))])
    return (int(images.tensors.shape[-2]), int(images.tensors.shape[-1]))


def quiet_threshold(scores: list[float], low: int, high: int) -> float:
    """A score threshold keeping between ``low`` and ``high`` detections, mid-way in the
    widest gap between two consecutive scores there.

    Cutting far from every score keeps a result from depending on rounding. Only gaps between
    two returned scores are used: below the last one, the reference may have been cut by its
    detections-per-image limit, and what lies under the cut is unknown.
    """
    k = quiet_count(scores, low, high)
    return (scores[k - 1] + scores[k]) / 2


def quiet_count(scores: list[float], low: int, high: int) -> int:
    """A max_instances in [low, high] where the next score is furthest below the last kept."""
    assert len(scores) > high >= low >= 1, f"need more than {high} detections, got {len(scores)}"
    return max(range(low, high + 1), key=lambda k: scores[k - 1] - scores[k])


def assert_instances_match(
    got: list[dict[str, Any]],
    ref: InstanceReference,
    categories: list[str],
    *,
    score_threshold: float,
    mask_threshold: float,
    max_instances: int,
    exact: bool,
) -> None:
    """The JSON instances (``mask_encoding=rle`` or ``both``) against the reference's cut."""
    kept = ref.cut(score_threshold, max_instances)
    assert len(got) == len(kept), f"{len(got)} instances, the reference keeps {len(kept)}"
    unused = list(kept)
    score_diff = box_diff = 0.0
    swapped = flipped = 0
    for position, instance in enumerate(got):
        expected = kept[position]
        if exact:
            index = expected
        else:
            # Only detections whose reference scores tie within rounding may swap places.
            candidates = [
                i
                for i in unused
                if ref.labels[i] == instance["class_id"]
                and abs(ref.scores[i] - instance["score"]) <= SCORE_ATOL
                and np.allclose(ref.boxes[i], instance["bbox"], atol=BOX_ATOL, rtol=0)
            ]
            assert candidates, f"instance {position} ({instance}) matches no reference detection"
            index = min(
                candidates, key=lambda i: np.abs(np.subtract(ref.boxes[i], instance["bbox"])).max()
            )
            assert abs(ref.scores[index] - ref.scores[expected]) <= SCORE_ATOL
            swapped += index != expected
            score_diff = max(score_diff, abs(ref.scores[index] - instance["score"]))
            box_diff = max(
                box_diff, float(np.abs(np.subtract(ref.boxes[index], instance["bbox"])).max())
            )
        unused.remove(index)
        assert instance["class_id"] == ref.labels[index]
        assert instance["label"] == categories[ref.labels[index]]
        if exact:
            assert instance["score"] == ref.scores[index]
            assert instance["bbox"] == ref.boxes[index]
        mask = decode_rle(instance["rle"])
        expected_mask = ref.probs[index] > mask_threshold
        assert mask.shape == expected_mask.shape
        assert instance["area"] == int(mask.sum())
        differ = mask != expected_mask
        if exact or not differ.any():
            assert not differ.any(), f"instance {position}: {int(differ.sum())} pixels differ"
            continue
        assert differ.sum() <= max(1, MAX_FLIPPED_FRACTION * expected_mask.sum())
        off = np.abs(ref.probs[index][differ] - mask_threshold).max()
        assert off <= MASK_PROB_ATOL, (
            f"instance {position}: a mask pixel differs where the reference probability is "
            f"{off:.3g} from the threshold: not a rounding difference"
        )
        flipped += int(differ.sum())
    if score_diff or box_diff or swapped or flipped:
        _report(
            f"scores by <= {score_diff:.2g}, boxes by <= {box_diff:.2g} px, {swapped} "
            f"instances reordered among tied scores, {flipped} mask pixels near the threshold"
        )
