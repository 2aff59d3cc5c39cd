"""One inference stream against two at once, in one process: would concurrent batches pay?

The service runs one batch at a time per model, with every CPU in torch's intra-op pool. A
server that overlaps requests (the naive FastAPI baseline runs a forward per request in its
thread pool) trades that for inter-request parallelism. This measures both on the predictor
as the service builds it, in interleaved rounds so that drift hits every variant alike:

- 1 stream, all threads: the service's way;
- 2 streams, all threads each: two forwards at once, oversubscribed;
- 2 streams, half the threads each: the cores split between two forwards.

    .venv/bin/python -m bench.streams [--model deeplabv3_resnet50] [--rounds 3] [--images 4]

Prints images/s per variant (medians over rounds) and writes
``bench/results/streams-<model>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

import torch

from app.config import Settings
from app.predictors import load_predictor
from app.predictors.repository import ModelSpec
from bench.images import photo_like
from bench.report import RESULTS_DIR, save_json
from bench.servers import task_of


def images_per_s(run_one: Any, streams: int, threads: int, images: int) -> float:
    """``images`` inferences split over ``streams`` threads, each with ``threads`` intra-op."""

    def stream(count: int) -> None:
        torch.set_num_threads(threads)  # per calling thread: each stream gets its own pool
        for _ in range(count):
            run_one()

    share = [images // streams + (i < images % streams) for i in range(streams)]
    workers = [threading.Thread(target=stream, args=(n,)) for n in share]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="deeplabv3_resnet50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=4, help="inferences per variant and round")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    task = task_of(args.model)
    spec = ModelSpec(name=args.model, task=task, architecture=args.model, weights="none")
    predictor = load_predictor(spec, Settings(_env_file=None, device="cpu"))  # type: ignore[call-arg]
    image, params = photo_like(width, height, seed=0), predictor.default_params()

    def run_one() -> None:
        predictor.predict_batch([image], [params])

    run_one()
    cores = torch.get_num_threads()
    variants = {
        f"1 stream x {cores} threads (the service)": (1, cores),
        f"2 streams x {cores} threads": (2, cores),
        f"2 streams x {max(cores // 2, 1)} threads": (2, max(cores // 2, 1)),
    }
    figures: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (streams, threads) in variants.items():
            figures[name].append(images_per_s(run_one, streams, threads, args.images))
    torch.set_num_threads(cores)
    print(f"{args.model}, {width}x{height}, {args.images} images a variant, {args.rounds} rounds")
    print("| variant | images/s (median) | rounds |")
    print("|---|---:|---|")
    rows = []
    for name, values in figures.items():
        median = statistics.median(values)
        rows.append({"variant": name, "median_ips": median, "ips": values})
        print(f"| {name} | {median:.3f} | {', '.join(f'{v:.3f}' for v in values)} |")
    out = save_json(rows, RESULTS_DIR / f"streams-{args.model}.json")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
