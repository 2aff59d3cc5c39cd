"""The encode stage: predictor results into response bodies (PNG, JSON, overlay).

The formats are specified in docs/api.md. Runs in the thread pool: polygon extraction and
PNG compression are CPU work.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from app.output.maps import class_map_to_png, instance_map, instance_map_to_png
from app.output.overlay import instance_overlay, semantic_overlay
from app.output.polygons import mask_to_rings
from app.output.rle import instance_rle
from app.results import InstanceResult, SemanticResult

OutputFormat = Literal["png", "json", "overlay"]
MaskEncoding = Literal["polygons", "rle", "both"]
PNG = "image/png"
JSON = "application/json"


@dataclass(frozen=True)
class EncodeOptions:
    """What the request asked of its output, beyond the format."""

    model: str
    categories: list[str]
    keep: Collection[int] | None  # class ids to keep (None: all); instances filter in the model
    tolerance: float
    min_area: float
    compress_level: int


def _json(payload: Any) -> bytes:
    # orjson writes the polygons' numpy rings directly: for masks with many rings, converting
    # them to Python lists and through json.dumps cost more than tracing them.
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def semantic_json(result: SemanticResult, opts: EncodeOptions) -> dict[str, Any]:
    class_map = result.class_map
    counts = np.bincount(class_map.ravel(), minlength=len(opts.categories))
    segments = []
    # Class 0 is the background by torchvision's convention (and the repository's for checkpoints).
    for class_id in np.flatnonzero(counts[1:]) + 1:
        if opts.keep is not None and class_id not in opts.keep:
            continue
        polygons = mask_to_rings(class_map == class_id, opts.tolerance, opts.min_area)
        segments.append(
            {
                "label": opts.categories[class_id],
                "class_id": int(class_id),
                "area": int(counts[class_id]),
                "polygons": polygons,
            }
        )
    height, width = class_map.shape
    return {"model": opts.model, "width": width, "height": height, "segments": segments}


def encode_semantic(
    result: SemanticResult, image: np.ndarray, fmt: OutputFormat, opts: EncodeOptions
) -> tuple[bytes, str]:
    if fmt == "png":
        return class_map_to_png(result.class_map, opts.compress_level), PNG
    if fmt == "overlay":
        return semantic_overlay(image, result.class_map, compress_level=opts.compress_level), PNG
    return _json(semantic_json(result, opts)), JSON


def instance_records(
    result: InstanceResult, opts: EncodeOptions, mask_encoding: MaskEncoding | None
) -> list[dict[str, Any]]:
    """The JSON instance list; ``mask_encoding=None`` leaves masks out (the PNG text chunk)."""
    records = []
    for inst in result.instances:
        record: dict[str, Any] = {
            "label": opts.categories[inst.class_id]
            if inst.class_id < len(opts.categories)
            else str(inst.class_id),
            "class_id": inst.class_id,
            "score": inst.score,
            "bbox": list(inst.box),
            "area": inst.area,
        }
        if mask_encoding in ("polygons", "both"):
            record["polygons"] = mask_to_rings(
                inst.mask, opts.tolerance, opts.min_area, offset=inst.origin
            )
        if mask_encoding in ("rle", "both"):
            record["rle"] = instance_rle(inst, result.height, result.width)
        records.append(record)
    return records


def encode_instances(
    result: InstanceResult,
    image: np.ndarray,
    fmt: OutputFormat,
    opts: EncodeOptions,
    mask_encoding: MaskEncoding,
) -> tuple[bytes, str]:
    if fmt == "png":
        text = _json(instance_records(result, opts, None)).decode()
        id_map = instance_map(result)
        return instance_map_to_png(id_map, text, opts.compress_level), PNG
    if fmt == "overlay":
        overlay = instance_overlay(
            image, result, opts.categories, compress_level=opts.compress_level
        )
        return overlay, PNG
    payload = {
        "model": opts.model,
        "width": result.width,
        "height": result.height,
        "instances": instance_records(result, opts, mask_encoding),
    }
    return _json(payload), JSON
