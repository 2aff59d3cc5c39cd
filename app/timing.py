"""Per-request stage timings, sent back in ``Server-Timing``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    """Per-request stage timings, sent back in `Server-Timing`."""

    def __init__(self) -> None:
        self.started = time.perf_counter()  # when the request's handling began
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def remaining(self, budget_s: float) -> float:
        """What is left of ``budget_s`` seconds counted from the start of the request."""
        return budget_s - (time.perf_counter() - self.started)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, time.perf_counter() - started)

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def count(self, name: str, value: int) -> None:
        """A count that describes the request (``windows``: what a tiled one became)."""
        self.counts[name] = value

    def header(self) -> str:
        stages = [f"{name};dur={s * 1000:.2f}" for name, s in self.seconds.items()]
        counts = [f'{name};desc="{value}"' for name, value in self.counts.items()]
        return ", ".join(stages + counts)
