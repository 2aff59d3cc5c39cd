"""Paired rounds: each server block against the raw blocks on either side of it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bench.paired import PairedPlan, paired_rounds, summarise


@dataclass
class ScriptedRaw:
    """A raw block whose images/s follow a script (the machine's drift)."""

    label: str
    figures: Iterator[float]
    order: list[str] = field(default_factory=list)  # what ran, shared with the server's point

    def images_per_s(self) -> float:
        self.order.append(self.label)
        return next(self.figures)


def test_a_linear_drift_cancels_out() -> None:
    # The machine slows down steadily; the server is always exactly 0.9x raw at that moment.
    order: list[str] = []
    raw = ScriptedRaw("raw", iter([1.0, 0.8, 0.6]), order)
    server_figures = iter([0.9 * 0.9, 0.9 * 0.7])

    async def point() -> dict[str, Any]:
        order.append("server")
        return {"throughput_ips": next(server_figures)}

    points, summary = asyncio.run(paired_rounds(point, PairedPlan(8, 2, [raw]), say=lambda _: None))
    assert order == ["raw", "server", "raw", "server", "raw"]
    assert len(points) == 2 and summary["concurrency"] == 8
    assert summary["over"]["raw"] == pytest.approx(0.9)
    # Against a raw figure measured only once, at the start, it would read 0.72 and 0.56.


def test_every_raw_label_gets_its_own_figure() -> None:
    rounds = [
        {
            "raw_before": {"raw": 1.0, "raw@bf16": 2.0},
            "server_ips": 2.0,
            "raw_after": {"raw": 1.0, "raw@bf16": 2.0},
        },
        {
            "raw_before": {"raw": 1.0, "raw@bf16": 2.0},
            "server_ips": 1.0,
            "raw_after": {"raw": 1.0, "raw@bf16": 2.0},
        },
    ]
    over = summarise(rounds)
    assert over["raw"] == pytest.approx(math.sqrt(2.0 * 1.0))  # geometric mean of 2 and 1
    assert over["raw@bf16"] == pytest.approx(math.sqrt(1.0 * 0.5))


def test_a_round_with_no_answers_leaves_no_figure() -> None:
    rounds = [{"raw_before": {"raw": 1.0}, "server_ips": 0.0, "raw_after": {"raw": 1.0}}]
    assert summarise(rounds) == {}


def test_two_raws_alternate_so_each_sits_around_the_server_block() -> None:
    order: list[str] = []
    fp32 = ScriptedRaw("raw", iter([1.0] * 3), order)
    bf16 = ScriptedRaw("raw@bf16", iter([2.0] * 3), order)

    async def point() -> dict[str, Any]:
        order.append("server")
        return {"throughput_ips": 2.0}

    _, summary = asyncio.run(
        paired_rounds(point, PairedPlan(8, 2, [fp32, bf16]), say=lambda _: None)
    )
    blocks = ["raw", "raw@bf16", "server", "raw@bf16", "raw", "server", "raw", "raw@bf16"]
    assert order == blocks
    assert summary["over"] == {"raw": pytest.approx(2.0), "raw@bf16": pytest.approx(1.0)}


def test_no_raw_blocks_no_pairing() -> None:
    from bench.run import STANDARD_POINTS, paired_plan

    assert paired_plan([], b"jpeg", [1, 8], rounds=2, settings=STANDARD_POINTS) is None
