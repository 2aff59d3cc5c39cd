"""Forwards with and without SEGSERVE_KEEP_FREED_MEMORY's malloc options (app/memory.py).

The options are process-wide and stay set, so each variant runs in a process of its own:
the predictor as the service builds it, forwards in a thread other than the main one (as the
service's batcher runs them), page faults counted by the kernel for the whole process
(torch's intra-op threads touch most of the pages; the process does nothing else). Variants
alternate over rounds so that drift hits both alike:

    .venv/bin/python -m bench.freed_memory [--model deeplabv3_resnet50] [--rounds 3]

Prints, per variant, page faults a forward and the median forward (medians over rounds), and
writes ``bench/results/freed_memory-<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from bench.report import RESULTS_DIR, save_json

VARIANTS = ("glibc default", "keep freed memory")


def measure(model: str, keep: bool, forwards: int, size: tuple[int, int]) -> dict[str, float]:
    """In this process: set the options (or not), then time ``forwards`` forwards."""
    from app.memory import keep_freed_memory

    kept = keep_freed_memory() if keep else False  # first, as `segserve serve` does
    from app.config import Settings
    from app.predictors import load_predictor
    from app.predictors.repository import ModelSpec
    from bench.images import photo_like
    from bench.servers import task_of

    settings = Settings(_env_file=None, device="auto")  # type: ignore[call-arg]
    spec = ModelSpec(name=model, task=task_of(model), architecture=model, weights="none")
    predictor = load_predictor(spec, settings)
    image = photo_like(*size, seed=7)
    params = [predictor.default_params()]
    out: dict[str, float] = {}

    def run() -> None:
        for _ in range(2):  # warm-up: first-call setup, and the heap grows to its size
            predictor.predict_batch([image], params)
        times = []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(forwards):
            started = time.perf_counter()
            predictor.predict_batch([image], params)
            times.append(time.perf_counter() - started)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        out.update(
            kept=float(kept),
            faults_per_forward=faults / forwards,
            median_s=statistics.median(times),
            min_s=min(times),
        )

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="deeplabv3_resnet50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--forwards", type=int, default=8, help="timed forwards per process")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if args.child:  # one variant, in its own process: print the figures
        keep = args.child == VARIANTS[1]
        print(json.dumps(measure(args.model, keep, args.forwards, (width, height))))
        return
    rounds: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            child = [sys.executable, "-m", "bench.freed_memory", "--child", variant]
            child += ["--model", args.model, "--forwards", str(args.forwards), "--size", args.size]
            done = subprocess.run(child, capture_output=True, text=True, check=True)
            rounds[variant].append(json.loads(done.stdout.splitlines()[-1]))
    summary: dict[str, Any] = {"model": args.model, "size": args.size, "rounds": rounds}
    print(f"{args.model} at {args.size}, {args.rounds} rounds of {args.forwards} forwards:")
    for variant, runs in rounds.items():
        faults = statistics.median(r["faults_per_forward"] for r in runs)
        median = statistics.median(r["median_s"] for r in runs)
        summary[variant] = {"faults_per_forward": faults, "median_s": median}
        print(f"  {variant}: {faults:,.0f} page faults a forward, median forward {median:.3f} s")
    base, kept = (summary[v]["median_s"] for v in VARIANTS)
    summary["speedup"] = base / kept
    print(f"  speed-up: {base / kept:.2f}x")
    print(f"wrote {save_json(summary, RESULTS_DIR / f'freed_memory-{args.model}.json')}")


if __name__ == "__main__":
    main()
