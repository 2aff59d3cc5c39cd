"""The raw model: torchvision's reference pipeline in-process, no HTTP (the ceiling).

Each image is decoded from the same JPEG bytes the servers receive, preprocessed with the
weights' preset, run through the model and postprocessed (argmax or Mask R-CNN's cut) at the
same precision; only response encoding, which a server must add, is left out. Batch 1 runs
sequentially; larger batches show whether batching pays on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from bench.baselines.pipeline import ReferencePipeline, decode


def time_batch(pipeline: ReferencePipeline, image: bytes, batch_size: int) -> float:
    """Seconds to decode ``batch_size`` copies of ``image`` and infer them in one batch."""
    started = time.perf_counter()
    pipeline.infer([decode(image) for _ in range(batch_size)])
    return time.perf_counter() - started


def measure(
    pipeline: ReferencePipeline,
    image: bytes,
    batch_sizes: Sequence[int],
    *,
    duration_s: float,
    min_batches: int = 2,
    warmup: bool = True,
) -> dict[str, Any]:
    """images/s per batch size (after one warm-up batch each, unless ``warmup`` is off: the
    pipeline already ran that size) and the best of them."""
    rows = []
    for batch_size in batch_sizes:
        if warmup:  # kernels pick their algorithm per shape on the first batch
            time_batch(pipeline, image, batch_size)
        times: list[float] = []
        while len(times) < min_batches or sum(times) < duration_s:
            times.append(time_batch(pipeline, image, batch_size))
        rows.append(
            {
                "batch_size": batch_size,
                "batches": len(times),
                "s_per_batch": sum(times) / len(times),
                "images_per_s": batch_size * len(times) / sum(times),
            }
        )
    best = max(rows, key=lambda row: row["images_per_s"])
    return {
        "batches": rows,
        "batch1_ips": next((r["images_per_s"] for r in rows if r["batch_size"] == 1), None),
        "best_batch_size": best["batch_size"],
        "best_ips": best["images_per_s"],
    }
