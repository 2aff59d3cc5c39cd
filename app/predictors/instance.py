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
* masks are pasted, thresholded and cropped one box at a time on the device
  (:mod:`app.predictors.masks`), never as N full-size float canvases, and only for the
  detections a request keeps; small boolean crops cross to the host.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from app.predictors.base import TorchPredictor
from app.predictors.masks import paste_and_crop
from app.predictors.roi_pool import parallelise_roi_pools
from app.results import Instance, InstanceResult


@dataclass(frozen=True)
class InstanceParams:
    """The per-request options of /instances, applied inside the model."""

    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    max_instances: int = 100
    classes: frozenset[int] | None = None  # class ids to keep, before the max_instances cut


MAX_INSTANCES = 1000  # the most a request may ask for


def _keep_at_least(threshold: float) -> float:
    """The float32 just below ``threshold``: torchvision keeps ``score > thresh``, docs/api.md
    keeps ``score >= threshold``."""
    return float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))


class InstancePredictor(TorchPredictor[InstanceResult]):
    """Mask R-CNN: list batching, thresholds pushed into the model, masks cropped on the device."""

    task = "instance"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Requests choose their own cut; the model's [options], when an operator set them,
        # bound every request (torchvision's own defaults, 0.05 and 100, do not).
        options = self.spec.options
        self.score_floor = float(options.get("box_score_thresh", 0.0))
        self.detections_cap = int(options.get("box_detections_per_img", MAX_INSTANCES))
        if self.device.type == "cpu":
            # torchvision's CPU RoIAlign is single-threaded (GPU kernels are not).
            parallelise_roi_pools(self.model)

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
        with self.forward_context():
            outputs = self._detect(inputs)
        return [
            self._result(out, p, image.shape[0], image.shape[1])
            for out, p, image in zip(outputs, params, images, strict=True)
        ]

    def _detect(self, inputs: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """GeneralizedRCNN.forward in eval mode, up to (not including) mask pasting: boxes in
        input pixels, masks still (N, 1, 28, 28) probabilities."""
        model = cast(MaskRCNN, self.model)
        original_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in inputs]
        batch, _ = model.transform(inputs)
        features = model.backbone(batch.tensors)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        proposals, _ = model.rpn(batch, features)
        detections, _ = model.roi_heads(features, proposals, batch.image_sizes)
        for found, resized, original in zip(
            detections, batch.image_sizes, original_sizes, strict=True
        ):
            # Autocast leaves boxes, scores and masks in bf16/fp16: back to fp32 for the cuts,
            # the pasting and the JSON.
            for key in ("boxes", "scores", "masks"):
                found[key] = found[key].float()
            found["boxes"] = resize_boxes(found["boxes"], resized, original)
        return detections

    def _result(
        self, out: dict[str, torch.Tensor], params: InstanceParams, height: int, width: int
    ) -> InstanceResult:
        # Outputs come sorted by score (batched_nms order); keep the request's own cut.
        selected = out["scores"] >= params.score_threshold
        if params.classes:
            wanted = torch.tensor(sorted(params.classes), device=selected.device)
            selected &= torch.isin(out["labels"], wanted)
        keep = selected.nonzero().flatten()[: params.max_instances]
        boxes_kept = out["boxes"][keep]
        crops = paste_and_crop(out["masks"][keep], boxes_kept, height, width, params.mask_threshold)
        scores = out["scores"][keep].cpu().tolist()
        labels = out["labels"][keep].cpu().tolist()
        boxes = boxes_kept.cpu().tolist()
        instances = [
            Instance(class_id=int(c), score=float(s), box=tuple(b), mask=m, origin=o)
            for c, s, b, (m, o) in zip(labels, scores, boxes, crops, strict=True)
        ]
        return InstanceResult(height=height, width=width, instances=instances)
