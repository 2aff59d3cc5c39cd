"""Mask R-CNN: a list of images in, thresholded mask crops out.

The result equals torchvision's reference pipeline on the same weights
(``model([weights.transforms()(read_image(path))])``, keep ``score >= score_threshold``,
the first ``max_instances``, masks ``> mask_threshold``). Two things make it cheaper without
changing it:

* the lowest score threshold of the batch is pushed into the model (``roi_heads.score_thresh``)
  so masks are never computed for detections every request will drop. Dropping low scores
  before NMS keeps the same high-scoring boxes: a box is only ever suppressed by a better one.
  A model's ``box_score_thresh`` and ``box_detections_per_img``, when its ``[options]`` set
  them, stay a floor and a cap for every request;
* masks are thresholded and cropped to their tight bounding box on the device, so only
  small boolean crops cross to the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from app.predictors.base import Predictor
from app.results import Instance, InstanceResult


@dataclass(frozen=True)
class InstanceParams:
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    max_instances: int = 100
    classes: frozenset[int] | None = None  # class ids to keep, before the max_instances cut


MAX_INSTANCES = 1000  # the most a request may ask for


def _crop_masks(masks: torch.Tensor) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """(N, H, W) bool on the device -> per mask, its tight crop and (x, y) origin on the host."""
    if masks.shape[0] == 0:
        return []
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    height, width = masks.shape[1:]
    # First/last True along each axis; argmax of a bool finds the first True.
    y0 = rows.int().argmax(dim=1)
    y1 = height - rows.flip(1).int().argmax(dim=1)
    x0 = cols.int().argmax(dim=1)
    x1 = width - cols.flip(1).int().argmax(dim=1)
    bounds = torch.stack([y0, y1, x0, x1, rows.any(dim=1).int()], dim=1).cpu().tolist()
    crops = [
        masks[i, a:b, c:d].flatten() if nonempty else masks.new_zeros(0)
        for i, (a, b, c, d, nonempty) in enumerate(bounds)
    ]
    flat = torch.cat(crops).cpu().numpy()  # one transfer for all crops
    out, offset = [], 0
    for a, b, c, d, nonempty in bounds:
        if not nonempty:
            out.append((np.zeros((0, 0), dtype=bool), (0, 0)))
            continue
        n = (b - a) * (d - c)
        out.append((flat[offset : offset + n].reshape(b - a, d - c), (c, a)))
        offset += n
    return out


def _keep_at_least(threshold: float) -> float:
    """The float32 just below ``threshold``: torchvision keeps ``score > thresh``, API.md
    keeps ``score >= threshold``."""
    return float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))


class InstancePredictor(Predictor[InstanceResult]):
    task = "instance"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Requests choose their own cut; the model's [options], when an operator set them,
        # bound every request (torchvision's own defaults, 0.05 and 100, do not).
        options = self.spec.options
        self.score_floor = float(options.get("box_score_thresh", 0.0))
        self.detections_cap = int(options.get("box_detections_per_img", MAX_INSTANCES))

    def _model_threshold(self, requested: float) -> float:
        return self.score_floor if requested <= self.score_floor else _keep_at_least(requested)

    def _network_shape(self, height: int, width: int) -> tuple[int, int]:
        # GeneralizedRCNNTransform resizes, then pads the batch to a multiple of 32; images
        # padded to the same shape see the same network input as when run alone. Its own
        # code on meta tensors gives that shape exactly, at no cost.
        transform: GeneralizedRCNNTransform = self.model.transform
        resized, _ = transform.resize(torch.empty((3, height, width), device="meta"), None)
        padded = transform.batch_images([resized], size_divisible=transform.size_divisible)
        return int(padded.shape[-2]), int(padded.shape[-1])

    def default_params(self) -> InstanceParams:
        return InstanceParams()

    @torch.inference_mode()
    def predict_batch(
        self, images: Sequence[np.ndarray], params: Sequence[InstanceParams]
    ) -> list[InstanceResult]:
        roi_heads: RoIHeads = self.model.roi_heads
        roi_heads.score_thresh = min(self._model_threshold(p.score_threshold) for p in params)
        # A class filter is applied after the model's cut, so it needs the full list.
        wanted = max(MAX_INSTANCES if p.classes else p.max_instances for p in params)
        roi_heads.detections_per_img = min(self.detections_cap, wanted)
        inputs = [self.preprocess(self.to_tensor(image)) for image in images]
        outputs = self.model(inputs)
        return [
            self._result(out, p, image.shape[0], image.shape[1])
            for out, p, image in zip(outputs, params, images, strict=True)
        ]

    def _result(
        self, out: dict[str, torch.Tensor], params: InstanceParams, height: int, width: int
    ) -> InstanceResult:
        # Outputs come sorted by score (batched_nms order); keep the request's own cut.
        selected = out["scores"] >= params.score_threshold
        if params.classes:
            wanted = torch.tensor(sorted(params.classes), device=selected.device)
            selected &= torch.isin(out["labels"], wanted)
        keep = selected.nonzero().flatten()[: params.max_instances]
        masks = out["masks"][keep, 0] > params.mask_threshold
        crops = _crop_masks(masks)
        scores = out["scores"][keep].cpu().tolist()
        labels = out["labels"][keep].cpu().tolist()
        boxes = out["boxes"][keep].cpu().tolist()
        instances = [
            Instance(class_id=int(c), score=float(s), box=tuple(b), mask=m, origin=o)
            for c, s, b, (m, o) in zip(labels, scores, boxes, crops, strict=True)
        ]
        return InstanceResult(height=height, width=width, instances=instances)
