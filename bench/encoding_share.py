"""Encoding's share of a request's time at 1920x1080, per output format.

Issue 3 asks that PNG compression, polygon extraction and JSON serialisation stay under 5%
of end-to-end latency for a 1920x1080 image. This runs the service's own stages in process,
on the service's own code (decode, predictor, encoders), so the figures have no HTTP noise:

    .venv/bin/python -m bench.encoding_share [--precision bf16] [--repeats 3]

It prints one row per (model, format) with the median of each stage and encode's share of
decode + infer + encode, and writes ``bench/results/encoding_share.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from app.config import Settings
from app.imaging import ImageLimits, decode_image
from app.output.encode import EncodeOptions, encode_instances, encode_semantic
from app.predictors import InstanceParams, load_predictor
from app.predictors.repository import ModelSpec
from app.results import InstanceResult
from bench.images import jpeg_bytes, photo_like
from bench.report import RESULTS_DIR, save_json

MODELS = {
    "deeplabv3_resnet50": ("semantic", ["png", "json", "overlay"]),
    "maskrcnn_resnet50_fpn_v2": ("instance", ["json", "png", "overlay"]),
}


def _median_s(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def smoothed(result: InstanceResult) -> InstanceResult:
    """The same instances (boxes, crops) with each mask an ellipse filling its crop.

    An untrained Mask R-CNN returns speckled masks with thousands of rings each, the worst
    case for polygons; trained models give smooth blobs. With no trained weights here, this
    stands in for them: same count and sizes, a few rings each. Labelled as such in the output.
    """
    instances = []
    for inst in result.instances:
        h, w = inst.mask.shape
        mask = np.zeros((h, w), dtype=np.uint8)
        if h and w:
            cv2.ellipse(mask, (((w - 1) / 2, (h - 1) / 2), (w, h), 0), 1, -1)
        instances.append(dataclasses.replace(inst, mask=mask.astype(bool)))
    return InstanceResult(result.height, result.width, instances)


def measure(architecture: str, precision: str, repeats: int) -> list[dict[str, Any]]:
    task, formats = MODELS[architecture]
    settings = Settings(_env_file=None, device="auto", precision=precision)  # type: ignore[call-arg]
    spec = ModelSpec(name=architecture, task=task, architecture=architecture, weights="none")
    predictor = load_predictor(spec, settings)
    data = jpeg_bytes(photo_like(1920, 1080, seed=7))
    limits = ImageLimits(settings.max_image_pixels, settings.max_image_side)
    decode_s, image = _median_s(lambda: decode_image(data, limits), repeats)
    params: Any = InstanceParams() if task == "instance" else None
    predictor.predict_batch([image], [params])  # warm-up at this size
    infer_s, (result,) = _median_s(lambda: predictor.predict_batch([image], [params]), repeats)
    opts = EncodeOptions(
        model=architecture,
        categories=predictor.categories,
        keep=None,
        tolerance=1.0,
        min_area=0.0,
        compress_level=settings.png_compress_level,
    )
    cases: list[tuple[str, str, Any]] = [(fmt, fmt, result) for fmt in formats]
    if task == "instance":
        cases.append(("json, smooth masks", "json", smoothed(result)))
    rows = []
    for label, fmt, case in cases:
        if task == "semantic":
            encode_s, (body, _) = _median_s(
                lambda fmt=fmt, case=case: encode_semantic(case, image, fmt, opts), repeats
            )
        else:
            encode_s, (body, _) = _median_s(
                lambda fmt=fmt, case=case: encode_instances(case, image, fmt, opts, "polygons"),
                repeats,
            )
        total = decode_s + infer_s + encode_s
        rows.append(
            {
                "model": architecture,
                "precision": precision,
                "format": label,
                "decode_ms": 1000 * decode_s,
                "infer_ms": 1000 * infer_s,
                "encode_ms": 1000 * encode_s,
                "encode_share": encode_s / total,
                "body_bytes": len(body),
                "instances": len(result.instances) if task == "instance" else None,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [r for m in args.models for r in measure(m, args.precision, args.repeats)]
    print("| model | precision | format | decode ms | infer ms | encode ms | encode share |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['precision']} | {r['format']} | {r['decode_ms']:.0f} | "
            f"{r['infer_ms']:.0f} | {r['encode_ms']:.1f} | {100 * r['encode_share']:.2f}% |"
        )
    out = save_json(rows, RESULTS_DIR / f"encoding_share_{args.precision}.json")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
