"""Latency percentiles and the summary of one load point."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TRANSPORT_ERROR = 0  # a Sample's status when no HTTP response came back


@dataclass(frozen=True)
class Sample:
    """One request: when it was sent, when its answer ended, and the HTTP status."""

    started: float
    ended: float
    status: int

    @property
    def latency(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between order statistics.

    The same definition as numpy's default ("linear"): with few samples, p99 lies between
    the two largest values rather than jumping to the maximum.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def error_counts(samples: Iterable[Sample]) -> dict[str, int]:
    """Failed requests by status ("transport" where no response came back)."""
    counts = Counter(
        "transport" if s.status == TRANSPORT_ERROR else str(s.status) for s in samples if not s.ok
    )
    return dict(sorted(counts.items()))


def summarise(
    samples: Sequence[Sample], window_s: float, images_per_request: int = 1
) -> dict[str, Any]:
    """Throughput over the measurement window and latency percentiles of the successes.

    Throughput counts successful requests only: a server that answers 503 fast is not fast.
    """
    if window_s <= 0:
        raise ValueError(f"window must be positive, got {window_s}")
    ok = [s.latency for s in samples if s.ok]
    latency: dict[str, float | None] = dict.fromkeys(("p50", "p90", "p99", "mean", "max"))
    if ok:
        latency.update(
            p50=percentile(ok, 50),
            p90=percentile(ok, 90),
            p99=percentile(ok, 99),
            mean=sum(ok) / len(ok),
            max=max(ok),
        )
    return {
        "requests": len(samples),
        "ok": len(ok),
        "window_s": window_s,
        "throughput_rps": len(ok) / window_s,
        "throughput_ips": len(ok) * images_per_request / window_s,
        "latency_s": latency,
        "errors": error_counts(samples),
    }
