"""Before and after each speed change, in one process: the predictor as the service runs it.

    .venv/bin/python -m bench.speedups [--model deeplabv3_resnet50] [--rounds 5]

Variants (fp32 NCHW, batch norms unfolded, is "before"): each change added in turn. Semantic
models: fp32 and bf16 (autocast first, then the service's bf16 weights); the last of each
precision is the service's default. Mask R-CNN (``--model maskrcnn_resnet50_fpn_v2``): fp32,
the last variant adding RoIAlign over the intra-op threads (the service's default). The
variants run in interleaved rounds (A B C, A B C, ...) and each reports its median, so a slow
spell of this shared machine hits every variant alike instead of one. Each variant's result
is compared with fp32 NCHW's (class maps: share of equal pixels; instances: labels in order
and the largest box difference). Writes ``bench/results/speedups-<model>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any
from unittest.mock import patch

import numpy as np

from app.config import Settings
from app.predictors import Predictor, SemanticPredictor, load_predictor
from app.predictors import instance as instance_module
from app.predictors.repository import ModelSpec
from app.results import SemanticResult
from bench.images import photo_like
from bench.report import RESULTS_DIR, save_json
from bench.servers import task_of

# name: (precision, channels_last, fold_batchnorm, bf16 weights instead of autocast,
#        Mask R-CNN's RoIAlign over the intra-op threads)
Variant = tuple[str, bool, bool, bool, bool]
SEMANTIC_VARIANTS: dict[str, Variant] = {
    "fp32 NCHW (before)": ("fp32", False, False, False, True),
    "fp32 channels_last": ("fp32", True, False, False, True),
    "fp32 channels_last + folded BN": ("fp32", True, True, False, True),
    "bf16 autocast NCHW": ("bf16", False, False, False, True),
    "bf16 autocast channels_last": ("bf16", True, False, False, True),
    "bf16 autocast channels_last + folded BN": ("bf16", True, True, False, True),
    "bf16 weights channels_last + folded BN": ("bf16", True, True, True, True),
}
INSTANCE_VARIANTS: dict[str, Variant] = {
    "fp32 NCHW (before)": ("fp32", False, False, False, False),
    "fp32 channels_last": ("fp32", True, False, False, False),
    "fp32 channels_last + folded BN": ("fp32", True, True, False, False),
    "fp32 channels_last + folded BN + threaded RoIAlign": ("fp32", True, True, False, True),
}


def _no_parallel_roi_pools(model: Any) -> int:
    return 0


def build(spec: ModelSpec, variant: Variant) -> Predictor[Any]:
    precision, channels_last, fold, bf16_weights, threaded_roi_align = variant
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        device="cpu",
        precision=precision,  # type: ignore[arg-type]
        channels_last=channels_last,
        fold_batchnorm=fold,
    )
    # The service always casts a semantic model to bf16 on CPU and always threads Mask R-CNN's
    # RoIAlign there; "before" is autocast and the single-threaded kernel.
    pools = instance_module.parallelise_roi_pools if threaded_roi_align else _no_parallel_roi_pools
    with (
        patch.object(SemanticPredictor, "bf16_weights_on_cpu", bf16_weights),
        patch.object(instance_module, "parallelise_roi_pools", pools),
    ):
        return load_predictor(spec, settings)


def agreement(result: Any, reference: Any) -> tuple[float, str]:
    """How close a variant's result is to fp32 NCHW's: a number and its description."""
    if isinstance(result, SemanticResult):
        equal = float(np.mean(result.class_map == reference.class_map))
        return equal, f"{100 * equal:.3f}% of class-map pixels equal"
    got, want = result.instances, reference.instances
    if [i.class_id for i in got] != [i.class_id for i in want]:
        return 0.0, f"{len(got)} instances, labels differ from the reference's {len(want)}"
    shift = max(
        (float(np.max(np.abs(np.subtract(a.box, b.box)))) for a, b in zip(got, want, strict=True)),
        default=0.0,
    )
    return 1.0, f"same {len(got)} labels in order, boxes within {shift:.2g} px"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="deeplabv3_resnet50")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    task = task_of(args.model)
    spec = ModelSpec(name=args.model, task=task, architecture=args.model, weights="none")
    variants = SEMANTIC_VARIANTS if task == "semantic" else INSTANCE_VARIANTS
    predictors = {name: build(spec, variant) for name, variant in variants.items()}
    image = photo_like(width, height, seed=0)
    params = next(iter(predictors.values())).default_params()
    results = {name: p.predict_batch([image], [params])[0] for name, p in predictors.items()}
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(args.rounds):
        for name, predictor in predictors.items():
            started = time.perf_counter()
            predictor.predict_batch([image], [params])
            times[name].append(time.perf_counter() - started)
    before = statistics.median(times["fp32 NCHW (before)"])
    reference = results["fp32 NCHW (before)"]
    rows: list[dict[str, Any]] = []
    print(f"{args.model}, {width}x{height}, {args.rounds} interleaved rounds")
    print("| variant | median s/image | speed-up vs fp32 NCHW | result against fp32 NCHW |")
    print("|---|---:|---:|---|")
    for name in predictors:
        median = statistics.median(times[name])
        equal, how = agreement(results[name], reference)
        row = {"variant": name, "median_s": median, "times_s": times[name], "equal": equal}
        rows.append({**row, "agreement": how})
        print(f"| {name} | {median:.3f} | {before / median:.2f}x | {how} |")
    out = save_json(rows, RESULTS_DIR / f"speedups-{args.model}.json")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
