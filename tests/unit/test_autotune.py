"""Warm-up batch-size autotune: measurement on a fake clock, the choice, the registry."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from app import autotune
from app.config import Settings
from app.predictors.repository import ModelSpec
from app.serving import ModelRegistry
from tests.fakes import SEM_CATEGORIES, FakeSemantic, fake_registry


class FakeClock:
    """A clock that only moves when a fake batch 'runs'."""

    def __init__(self, seconds_per_batch: Callable[[int], float]) -> None:
        self.now = 0.0
        self.cost = seconds_per_batch
        self.runs: list[int] = []

    def __call__(self) -> float:
        return self.now

    def run(self, size: int) -> None:
        self.runs.append(size)
        self.now += self.cost(size)


def test_candidate_sizes_are_powers_of_two_then_the_cap() -> None:
    assert autotune.candidate_sizes(1) == [1]
    assert autotune.candidate_sizes(8) == [1, 2, 4, 8]
    assert autotune.candidate_sizes(6) == [1, 2, 4, 6]


def test_measure_counts_images_per_second_of_timed_runs() -> None:
    clock = FakeClock(lambda size: 0.1 + 0.05 * size)  # fixed cost + per image: batching pays
    throughput = autotune.measure(clock.run, [1, 2, 4], clock=clock)
    assert throughput == pytest.approx({1: 1 / 0.15, 2: 2 / 0.2, 4: 4 / 0.3})
    # The climb: one untimed and one timed run per size; then the sizes in turn.
    assert clock.runs == [1, 1, 2, 2, 4, 4] + [1, 2, 4] * (autotune.REPEATS - 1)


def test_a_slow_spell_does_not_decide_the_size() -> None:
    # Batch 2 truly costs 1.5x batch 1 per image; a slow spell triples two of batch 1's runs.
    slow_runs = iter([False, True, False, True])  # batch 1: untimed, then 3 timed runs

    def cost(size: int) -> float:
        if size == 1:
            return 0.3 if next(slow_runs) else 0.1
        return 0.3 * size / 2 * 1.5

    clock = FakeClock(cost)
    throughput = autotune.measure(clock.run, [1, 2], clock=clock)
    assert throughput[1] == pytest.approx(10.0)  # its fastest run, not the mean (~6)
    assert autotune.choose(throughput, configured=2).chosen == 1


def test_a_spell_over_all_of_one_sizes_first_runs_does_not_decide_it() -> None:
    # Batch 2 truly costs 1.5x batch 1 per image; everything started in the first 1.2 s (the
    # climb's batch-1 runs, and as many as fit back to back) runs 3x slower.
    clock = FakeClock(lambda size: 0.1 * size * (1.5 if size > 1 else 1))
    slow_until = 1.2
    cost = clock.cost
    clock.cost = lambda size: cost(size) * (3 if clock.now < slow_until else 1)
    throughput = autotune.measure(clock.run, [1, 2], clock=clock)
    assert throughput == pytest.approx({1: 10.0, 2: 2 / 0.3})
    assert autotune.choose(throughput, configured=2).chosen == 1


def test_measure_stops_climbing_once_clearly_slower() -> None:
    clock = FakeClock(lambda size: 1.0 * size**1.5)  # bigger batches cost more per image
    throughput = autotune.measure(clock.run, [1, 2, 4, 8], clock=clock)
    assert list(throughput) == [1, 2]  # batch 2 is 0.71x batch 1: no need to try 4 and 8


def test_a_batch_too_large_ends_the_climb_but_not_the_first() -> None:
    def run(size: int) -> None:
        if size > 2:
            raise autotune.BatchTooLarge(f"batch {size}")
        clock.run(size)

    clock = FakeClock(lambda size: 0.1)
    assert list(autotune.measure(run, [1, 2, 4, 8], clock=clock)) == [1, 2]
    with pytest.raises(autotune.BatchTooLarge):
        autotune.measure(run, [4], clock=clock)


def test_choose_keeps_the_smallest_size_within_tolerance() -> None:
    tuned = autotune.choose({1: 10.0, 2: 18.5, 4: 20.0}, configured=4)
    assert tuned.chosen == 2  # 18.5 is within 10% of 20
    assert "within 10% of the best (batch 4" in tuned.reason
    assert autotune.choose({1: 10.0, 2: 11.0}, configured=2).chosen == 1  # noise, not a win
    assert autotune.choose({1: 10.0, 2: 11.2}, configured=2).chosen == 2
    assert autotune.choose({1: 10.0, 2: 8.0}, configured=8).chosen == 1
    described = autotune.choose({1: 10.0, 2: 30.0}, configured=2).describe()
    assert described["chosen_max_batch_size"] == 2
    assert described["images_per_s"] == {"1": 10.0, "2": 30.0}


class PerBatchCost(FakeSemantic):
    """Every batch costs the same wall time whatever its size: bigger is better.

    The cost is long enough that the fake's own per-image work, slow on a loaded CI
    machine, cannot hide the win.
    """

    def predict_batch(self, images: Sequence[Any], params: Sequence[Any]) -> list[Any]:
        time.sleep(0.1)
        return super().predict_batch(images, params)


def _spec(max_batch_size: int) -> ModelSpec:
    return ModelSpec(
        name="s",
        task="semantic",
        architecture="lraspp_mobilenet_v3_large",
        weights="none",
        batching={"max_batch_size": max_batch_size},  # type: ignore[arg-type]
    )


def _registry(predictor: FakeSemantic, **settings: Any) -> ModelRegistry:
    fields: dict[str, Any] = {"device": "cpu", "max_queue_size": 4} | settings
    return fake_registry(Settings(_env_file=None, **fields), predictor)


async def test_warmup_tunes_the_cap_and_models_reports_it() -> None:
    spec = _spec(max_batch_size=4)
    registry = _registry(PerBatchCost(spec, SEM_CATEGORIES))
    await registry.warmup()
    model = registry.models["s"]
    assert model.batcher.max_batch_size == 4  # 4 images per 100 ms beats 1 per 100 ms
    tuning = model.describe()["batching"]["autotune"]
    assert tuning["configured_max_batch_size"] == 4
    assert tuning["chosen_max_batch_size"] == 4
    assert set(tuning["images_per_s"]) == {"1", "2", "4"}
    assert tuning["images_per_s"]["4"] > 2 * tuning["images_per_s"]["1"]
    await registry.stop()


async def test_autotune_off_keeps_the_configured_cap() -> None:
    spec = _spec(max_batch_size=4)
    predictor = PerBatchCost(spec, SEM_CATEGORIES)
    registry = _registry(predictor, batch_autotune=False)
    await registry.warmup()
    assert registry.models["s"].batcher.max_batch_size == 4
    assert registry.models["s"].describe()["batching"]["autotune"] is None
    assert predictor.batches == []  # nothing measured
    await registry.stop()
