"""The service against the raw model, one request at a time, alternating: no drift between them.

bench/run.py measures each server alone for minutes, so the machine's speed can drift between
the raw ceiling and the service by more than the gap being measured. Here one raw inference
(in this process: decode, the weights' transforms, forward, argmax) and one HTTP request to
a running service alternate, so a slow spell hits both alike. It measures the service's cost
at concurrency 1 (upload, decode, queue, PNG, HTTP, on top of its forward), not its
behaviour under load.

    SEGSERVE_MODELS_DIR=<dir with the model's TOML> SEGSERVE_PORT=18791 .venv/bin/segserve serve
    .venv/bin/python -m bench.interleaved --model-toml <that TOML> --url http://127.0.0.1:18791 \\
        [--precision bf16] [--rounds 8]

Start the service with the same precision (SEGSERVE_PRECISION) as ``--precision``. Raw runs
channels-last like the service (the stricter ceiling). Prints the medians and writes
``bench/results/interleaved-<model>-<precision>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx

from bench.baselines.pipeline import ReferencePipeline, decode
from bench.images import jpeg_bytes, photo_like
from bench.report import RESULTS_DIR, save_json
from bench.run import request_for


async def measure(
    pipeline: ReferencePipeline, url: str, image: bytes, rounds: int
) -> dict[str, list[float]]:
    """Seconds per raw inference and per service request, ``rounds`` of each, alternating."""
    send = request_for(pipeline.task, image, score_threshold=0.5)
    times: dict[str, list[float]] = {"raw": [], "service": []}
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        for i in range(rounds + 1):  # round 0 warms both up and is not counted
            started = time.perf_counter()
            pipeline.infer([decode(image)])
            raw_s = time.perf_counter() - started
            started = time.perf_counter()
            response = await send(client)
            service_s = time.perf_counter() - started
            response.raise_for_status()
            if i:
                times["raw"].append(raw_s)
                times["service"].append(service_s)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-toml", type=Path, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="the service's SEGSERVE_SEED")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    pipeline = ReferencePipeline(
        args.model_toml,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        channels_last=True,
    )
    image = jpeg_bytes(photo_like(640, 480, seed=0))
    times = asyncio.run(measure(pipeline, args.url, image, args.rounds))
    raw, service = (statistics.median(times[k]) for k in ("raw", "service"))
    model = args.model_toml.stem
    print(f"{model} {args.precision}, 640x480, {args.rounds} alternating rounds, medians:")
    print(f"  raw in-process {raw:.3f} s, service over HTTP {service:.3f} s")
    print(f"  service throughput / raw at concurrency 1: {raw / service:.2f}")
    summary = {"raw_s": raw, "service_s": service, "ratio": raw / service, "times_s": times}
    out = save_json(summary, RESULTS_DIR / f"interleaved-{model}-{args.precision}.json")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
