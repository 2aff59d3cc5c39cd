"""torchvision's reference pipeline on the service's own model, shared by every baseline.

The model is built by segserve's ``build_model`` from the same model-repository TOML the
service reads (``weights = "none"`` and the same seed), so the raw model, the naive server,
LitServe and the service hold identical weights. Everything after that is what a torchvision
user writes: ``decode_image``, the weights' ``transforms()`` preset, the forward pass, then
bilinear upsampling and argmax (semantic) or Mask R-CNN's own postprocessing cut at the
request's thresholds (instance). Bodies are the service's kinds: a PNG class map, or JSON
instances with COCO RLE masks.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as coco_mask
from torchvision.io import ImageReadMode, decode_image
from torchvision.models import get_model_weights

from app.predictors.loading import build_model
from app.predictors.repository import load_spec
from app.predictors.weights import resolve_weights

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PNG_COMPRESS_LEVEL = 1  # the service's default (SEGSERVE_PNG_COMPRESS_LEVEL)


def decode(data: bytes) -> torch.Tensor:
    """Image file bytes as a (3, H, W) uint8 tensor, as ``torchvision.io.read_image`` gives."""
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)


def rle_of(mask: np.ndarray) -> dict[str, Any]:
    """A (H, W) bool mask as COCO compressed RLE in the API's JSON form."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


@contextlib.contextmanager
def precision_scope(precision: str, device: torch.device) -> Iterator[None]:
    """fp32 runs as is; bf16/fp16 run under autocast (issue 3's rule for reduced precision)."""
    dtype = PRECISIONS[precision]
    if dtype is torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


@dataclass(frozen=True)
class InstanceCut:
    """How a Mask R-CNN result is cut for a response (the service's /instances defaults)."""

    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    max_instances: int = 100


class ReferencePipeline:
    """One model, loaded as the service loads it, run the torchvision way."""

    def __init__(
        self,
        model_toml: Path,
        *,
        seed: int = 0,
        device: str = "cpu",
        precision: str = "fp32",
        cut: InstanceCut | None = None,
        weights_dir: Path | None = None,
        channels_last: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.spec = load_spec(model_toml)
        weights = resolve_weights(self.spec, weights_dir or model_toml.parent, allow_download=False)
        self.categories = weights.categories
        self.device = torch.device(device)
        self.precision = precision
        self.cut = cut or InstanceCut()
        self.model = build_model(self.spec, weights, seed=seed).to(self.device)
        # Optional NHWC layout: not what a tutorial writes, but a stricter ceiling for `raw`
        # when the service runs channels_last itself.
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.preprocess = get_model_weights(self.spec.architecture).DEFAULT.transforms()
        self.task = self.spec.task

    @torch.inference_mode()
    def infer(self, images: Sequence[torch.Tensor]) -> list[Any]:
        """One forward pass over ``images`` (same size): class maps or instance lists."""
        inputs = [self.preprocess(image.to(self.device)) for image in images]
        with precision_scope(self.precision, self.device):
            if self.task == "semantic":
                batch = torch.stack(inputs)
                if self.channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                logits = self.model(batch)["out"].float()
            else:
                outputs = self.model(inputs)
        if self.task == "semantic":
            height, width = images[0].shape[-2:]
            maps = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            return list(maps.argmax(1).to(torch.uint8).cpu().numpy())
        return [self._instances(out) for out in outputs]

    def _instances(self, out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        keep = (out["scores"] >= self.cut.score_threshold).nonzero().flatten()
        keep = keep[: self.cut.max_instances]
        masks = (out["masks"][keep, 0] > self.cut.mask_threshold).cpu().numpy()
        instances = []
        for row, index in enumerate(keep.tolist()):
            class_id = int(out["labels"][index])
            instances.append(
                {
                    "label": self.categories[class_id],
                    "class_id": class_id,
                    "score": float(out["scores"][index]),
                    "bbox": [float(v) for v in out["boxes"][index].tolist()],
                    "area": int(masks[row].sum()),
                    "rle": rle_of(masks[row]),
                }
            )
        return instances

    def encode(self, result: Any, height: int, width: int) -> tuple[bytes, str]:
        """A response body and its media type: PNG class map or JSON instances."""
        if self.task == "semantic":
            buffer = io.BytesIO()
            Image.fromarray(result).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
            return buffer.getvalue(), "image/png"
        body = {"model": self.spec.name, "width": width, "height": height, "instances": result}
        return json.dumps(body).encode(), "application/json"

    def handle(self, data: bytes) -> tuple[bytes, str]:
        """Decode, infer alone, encode: one request the naive way."""
        image = decode(data)
        result = self.infer([image])[0]
        return self.encode(result, int(image.shape[-2]), int(image.shape[-1]))


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every baseline server takes (bench.servers passes them)."""
    parser.add_argument("--model-toml", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--score-threshold", type=float, default=InstanceCut.score_threshold)
    parser.add_argument("--mask-threshold", type=float, default=InstanceCut.mask_threshold)
    parser.add_argument("--max-instances", type=int, default=InstanceCut.max_instances)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)


def pipeline_from_arguments(args: argparse.Namespace) -> ReferencePipeline:
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    return ReferencePipeline(
        args.model_toml,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        cut=InstanceCut(args.score_threshold, args.mask_threshold, args.max_instances),
    )
