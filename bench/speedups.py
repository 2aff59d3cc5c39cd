"""Before and after each speed change, in one process: the predictor as the service runs it.

    .venv/bin/python -m bench.speedups [--model deeplabv3_resnet50] [--rounds 5]

Variants (fp32 NCHW, batch norms unfolded, is "before"): each change added in turn, in fp32
and bf16 (autocast first, then the service's bf16 weights); the last of each precision is the
service's default. The variants run in
interleaved rounds (A B C, A B C, ...) and each reports its median, so a slow spell of this
shared machine hits every variant alike instead of one. Each variant's
class maps are compared with fp32 NCHW's (share of equal pixels). Writes
``bench/results/speedups-<model>.json``.
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
from app.predictors.repository import ModelSpec
from bench.images import photo_like
from bench.report import RESULTS_DIR, save_json

VARIANTS = {  # name: (precision, channels_last, fold_batchnorm, bf16 weights instead of autocast)
    "fp32 NCHW (before)": ("fp32", False, False, False),
    "fp32 channels_last": ("fp32", True, False, False),
    "fp32 channels_last + folded BN": ("fp32", True, True, False),
    "bf16 autocast NCHW": ("bf16", False, False, False),
    "bf16 autocast channels_last": ("bf16", True, False, False),
    "bf16 autocast channels_last + folded BN": ("bf16", True, True, False),
    "bf16 weights channels_last + folded BN": ("bf16", True, True, True),
}


def build(spec: ModelSpec, variant: tuple[str, bool, bool, bool]) -> Predictor[Any]:
    precision, channels_last, fold, bf16_weights = variant
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        device="cpu",
        precision=precision,  # type: ignore[arg-type]
        channels_last=channels_last,
        fold_batchnorm=fold,
    )
    # The service always casts a semantic model to bf16 on CPU; "before" is autocast.
    with patch.object(SemanticPredictor, "bf16_weights_on_cpu", bf16_weights):
        return load_predictor(spec, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="deeplabv3_resnet50")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    spec = ModelSpec(name=args.model, task="semantic", architecture=args.model, weights="none")
    predictors = {name: build(spec, variant) for name, variant in VARIANTS.items()}
    image = photo_like(width, height, seed=0)
    maps = {name: p.predict_batch([image], [None])[0].class_map for name, p in predictors.items()}
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(args.rounds):
        for name, predictor in predictors.items():
            started = time.perf_counter()
            predictor.predict_batch([image], [None])
            times[name].append(time.perf_counter() - started)
    before = statistics.median(times["fp32 NCHW (before)"])
    reference = maps["fp32 NCHW (before)"]
    rows: list[dict[str, Any]] = []
    print(f"{args.model}, {width}x{height}, {args.rounds} interleaved rounds")
    print("| variant | median s/image | speed-up vs fp32 NCHW | class-map pixels equal to fp32 |")
    print("|---|---:|---:|---:|")
    for name in predictors:
        median = statistics.median(times[name])
        equal = float(np.mean(maps[name] == reference))
        rows.append({"variant": name, "median_s": median, "times_s": times[name], "equal": equal})
        print(f"| {name} | {median:.3f} | {before / median:.2f}x | {100 * equal:.3f}% |")
    out = save_json(rows, RESULTS_DIR / f"speedups-{args.model}.json")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
