"""Each server's ratio point bracketed by raw blocks: throughput ratios with the drift cancelled.

On a shared 2-core machine the same forward pass drifts by +-15% from one minute to the next,
and the suite measures raw and each server minutes apart, so one run's ratio can land on
either side of a target. Here, at the ratio's concurrency (8), the server's closed-loop point
alternates with short raw blocks in this process (the server sits idle meanwhile):

    raw, server, raw, server, raw      (rounds = 2)

Each server block is divided by the mean of the raw blocks on either side of it (a straight
line through the drift), and a server's figure is the geometric mean of its rounds. Two
servers compare through their figures against the same raw: ``service / naive`` is
``(service / raw) / (naive / raw)``, each measured next to its own raw blocks.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bench import raw as raw_bench
from bench.baselines.pipeline import ReferencePipeline

RAW_BLOCK_SHARE = 0.5  # a raw block lasts this share of a raw measurement's duration


class RawMeasure(Protocol):
    label: str

    def images_per_s(self) -> float: ...


@dataclass(frozen=True)
class RawBlock:
    """A raw pipeline at its best batch size, measured for a few seconds at a time."""

    label: str  # "raw" or "raw@bf16"
    pipeline: ReferencePipeline
    image: bytes
    batch_size: int
    duration_s: float

    def images_per_s(self) -> float:
        measured = raw_bench.measure(
            self.pipeline,
            self.image,
            [self.batch_size],
            duration_s=self.duration_s,
            min_batches=max(2, math.ceil(3 / self.batch_size)),
            warmup=False,
        )
        return float(measured["best_ips"])


@dataclass(frozen=True)
class PairedPlan:
    concurrency: int
    rounds: int
    blocks: Sequence[RawMeasure]


def _raw(blocks: Sequence[RawMeasure]) -> dict[str, float]:
    return {block.label: block.images_per_s() for block in blocks}


def summarise(rounds: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per raw label, the geometric mean over rounds of server / mean(raw before, raw after)."""
    labels = rounds[0]["raw_before"].keys() if rounds else []
    over: dict[str, float] = {}
    for label in labels:
        logs = []
        for r in rounds:
            raw = (r["raw_before"][label] + r["raw_after"][label]) / 2
            if raw <= 0 or r["server_ips"] <= 0:
                break
            logs.append(math.log(r["server_ips"] / raw))
        else:
            over[label] = math.exp(sum(logs) / len(logs))
    return over


async def paired_rounds(
    point: Callable[[], Awaitable[dict[str, Any]]],
    plan: PairedPlan,
    say: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``plan.rounds`` server points between raw blocks; returns the points and a summary."""
    points: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    # With two raws (the compared precision's run), the order alternates (A B, B A, A B, ...)
    # so that each raw's blocks sit symmetrically around every server block.
    before = _raw(plan.blocks)
    for index in range(plan.rounds):
        measured = await point()
        after = _raw(plan.blocks if index % 2 else list(reversed(plan.blocks)))
        points.append(measured)
        server_ips = float(measured["throughput_ips"])
        rounds.append({"raw_before": before, "server_ips": server_ips, "raw_after": after})
        raws = ", ".join(f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in before)
        say(f"  paired c={plan.concurrency}: {server_ips:.3f} img/s between {raws}")
        before = after
    summary = {"concurrency": plan.concurrency, "rounds": rounds, "over": summarise(rounds)}
    return points, summary
