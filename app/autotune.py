"""Choose each model's batch-size cap by measuring it at warm-up.

Batching pays on a GPU (one kernel launch serves many images) and can cost on a small CPU,
where bigger activations fall out of cache. So the cap from the model's TOML is a ceiling:
at warm-up the model runs batches of 1, 2, 4 ... up to it and keeps the smallest size within
10% of the best throughput: a bigger batch must win by more than the run-to-run noise of a
shared machine (a 5% margin let noise pick a batch the quiet benchmark measures slower than
batch 1), and every request in a batch waits for all of it. Where batching pays, it wins by
far more than 10%, so the margin decides nothing there. Climbing stops once a size is
clearly slower than the best so far: beyond that point, throughput only falls further.

Each size counts its fastest timed run: on a shared machine, other work only ever slows a run
down, so the fastest is the best estimate of what the size can do. (Averaging let one slow
spell during batch 1 make a bigger batch look faster on a CPU where it is slower.) After the
climb, the timed runs go round the sizes in turn (1, 2, 4, 1, 2, 4, ...), so a slow spell of a
few seconds slows one run of several sizes, not every run of one: a spell over all of batch
1's runs once made batch 4 win on a CPU where it is slower.

docs/PERFORMANCE.md, "Batch-size autotune", has the measurements behind each rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

TOLERANCE = 0.10  # sizes within this fraction of the best count as equally fast
STOP_BELOW = 0.9  # stop climbing once a size falls under this fraction of the best
REPEATS = 3  # timed runs per size, after one untimed run (allocation, cuDNN tuning)
SHAPE = (480, 640)  # the (height, width) measured: a common camera size


class BatchTooLarge(Exception):
    """Raised by a ``run_batch`` whose size does not fit (device out of memory)."""


@dataclass(frozen=True)
class BatchTuning:
    """What the warm-up measured per batch size, and the cap it chose and why."""

    configured: int  # the TOML's max_batch_size
    chosen: int
    images_per_s: dict[int, float]
    reason: str

    def describe(self) -> dict[str, Any]:
        return {
            "configured_max_batch_size": self.configured,
            "chosen_max_batch_size": self.chosen,
            "images_per_s": {str(size): round(ips, 3) for size, ips in self.images_per_s.items()},
            "reason": self.reason,
        }


def candidate_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... below ``max_batch_size``, then ``max_batch_size`` itself."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


def measure(
    run_batch: Callable[[int], None],
    sizes: list[int],
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, float]:
    """Images per second for each size in ``sizes`` (climbing in order and stopping early,
    then in interleaved rounds; see module).

    A size that raises :class:`BatchTooLarge` ends the climb (the first size must fit)."""

    def timed(size: int) -> float:
        started = clock()
        run_batch(size)
        return clock() - started

    def ips(size: int) -> float:
        return size / max(fastest[size], 1e-9)

    fastest: dict[int, float] = {}
    for size in sizes:
        try:
            run_batch(size)  # untimed: first use of a size allocates and tunes
            fastest[size] = timed(size)
        except BatchTooLarge:
            if not fastest:
                raise
            break
        if ips(size) < STOP_BELOW * max(map(ips, fastest)):
            break
    for _ in range(REPEATS - 1):
        for size in fastest:
            fastest[size] = min(fastest[size], timed(size))
    return {size: ips(size) for size in fastest}


def choose(throughput: dict[int, float], configured: int) -> BatchTuning:
    """The smallest size within :data:`TOLERANCE` of the best, with the reason in words."""
    best_size = max(throughput, key=throughput.__getitem__)
    best = throughput[best_size]
    chosen = min(size for size, ips in throughput.items() if ips >= (1 - TOLERANCE) * best)
    if chosen == best_size:
        reason = f"batch {chosen} gave the most images/s ({best:.3g})"
    else:
        reason = (
            f"batch {chosen} is within {TOLERANCE:.0%} of the best (batch {best_size}, "
            f"{best:.3g} images/s) and waits less to fill"
        )
    return BatchTuning(configured, chosen, dict(throughput), reason)


def sample_image(seed: int = 0) -> np.ndarray:
    """A deterministic noisy image of :data:`SHAPE`: all zeros would make Mask R-CNN find
    nothing and look faster than it is on real photos."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(*SHAPE, 3), dtype=np.uint8)
