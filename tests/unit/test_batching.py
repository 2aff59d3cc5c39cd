"""Unit tests for the generic dynamic batcher in :mod:`app.batching`.

Timing is gated, not slept: the fake batch function blocks on a :class:`threading.Condition`
the test opens when it wants a batch to finish, and the test polls observable state (batches
seen by the fake, ``queue_depth``) instead of guessing how long the loop needs. Every await
is wrapped in ``asyncio.wait_for`` so that a future left unresolved fails a test rather than
hanging it. Real time is used only where it is the behaviour under test (max_wait, deadlines).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

import pytest

from app.batching import Batcher, Completed
from app.errors import (
    DeadlineExceeded,
    InternalError,
    InvalidParameter,
    NotReady,
    QueueFull,
    ServiceError,
    status_of,
)

T = TypeVar("T")

GUARD_S = 5.0  # generous bound on every await: a hang fails the test instead of the suite
POISON = -1


class FakeModel:
    """A ``run_batch`` stand-in that records every batch and can be held at a gate.

    It runs in the batcher's worker thread. While held, each batch waits until the test
    releases the gate for good (:meth:`release`) or lets single batches through (:meth:`step`).
    """

    def __init__(self, fn: Callable[[Sequence[Any]], Any] | None = None) -> None:
        self.fn = fn or (lambda items: [item * 10 for item in items])
        self.batches: list[list[Any]] = []
        self.threads: list[str] = []
        self._cond = threading.Condition()
        self._open = True  # open unless a test holds it
        self._permits = 0

    def hold(self) -> None:
        """Make the next batches wait until :meth:`release` or :meth:`step`."""
        with self._cond:
            self._open = False

    def release(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def step(self, batches: int = 1) -> None:
        """Let exactly ``batches`` more batches finish while held."""
        with self._cond:
            self._permits += batches
            self._cond.notify_all()

    def __call__(self, items: Sequence[Any]) -> Any:
        with self._cond:
            self.batches.append(list(items))
            self.threads.append(threading.current_thread().name)
            if not self._cond.wait_for(lambda: self._open or self._permits > 0, GUARD_S):
                raise RuntimeError("test never released the gate")
            if not self._open:
                self._permits -= 1
        return self.fn(items)

    @property
    def seen(self) -> list[Any]:
        with self._cond:
            return [item for batch in self.batches for item in batch]


async def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Poll ``predicate`` on the loop (yielding each time) until it holds, or fail."""
    deadline = time.monotonic() + GUARD_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def guard(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, GUARD_S)


def spawn(
    batcher: Batcher[Any, Any], item: Any, *, key: Hashable = "k", timeout_s: float = GUARD_S
) -> asyncio.Task[Completed[Any]]:
    """Submit from a task of its own, as a request handler would."""

    async def submit() -> Completed[Any]:
        return await guard(batcher.submit(item, key=key, timeout_s=timeout_s))

    return asyncio.ensure_future(submit())


MakeBatcher = Callable[..., Batcher[Any, Any]]


@pytest.fixture
async def make_batcher() -> AsyncIterator[MakeBatcher]:
    """Build and start batchers; at teardown open every gate and stop them (idempotently)."""
    made: list[tuple[Batcher[Any, Any], FakeModel]] = []

    def make(model: FakeModel, *, start: bool = True, **options: Any) -> Batcher[Any, Any]:
        settings: dict[str, Any] = {
            "name": "fake",
            "max_batch_size": 4,
            "max_wait_s": 0.001,
            "max_queue_size": 64,
            "retry_after_s": 3,
        }
        settings.update(options)
        batcher: Batcher[Any, Any] = Batcher(model, **settings)
        if start:
            batcher.start()
        made.append((batcher, model))
        return batcher

    yield make
    for batcher, model in made:
        model.release()
        await guard(batcher.stop())


async def start_blocker(batcher: Batcher[Any, Any], model: FakeModel, item: Any = 0) -> Any:
    """Occupy the consumer with a held one-item batch; returns the blocker's task."""
    model.hold()
    task = spawn(batcher, item, key=("blocker",))
    await until(lambda: len(model.batches) == 1, "the blocking batch to start")
    assert batcher.queue_depth == 0
    return task


# 1. Collection while a batch runs ----------------------------------------------------------


async def test_items_arriving_during_a_batch_form_the_next_batches_up_to_the_cap(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=4, max_wait_s=0.001)
    blocker = await start_blocker(batcher, model, item=0)

    tasks = [spawn(batcher, i) for i in range(1, 6)]
    await until(lambda: batcher.queue_depth == 5, "five queued items")
    assert model.batches == [[0]]  # nothing ran while the consumer was busy

    model.release()
    done = await guard(asyncio.gather(*tasks))

    assert model.batches == [[0], [1, 2, 3, 4], [5]]
    assert [c.result for c in done] == [10, 20, 30, 40, 50]
    assert [c.batch_size for c in done] == [4, 4, 4, 4, 1]
    assert (await guard(blocker)).result == 0
    assert batcher.queue_depth == 0


async def test_results_follow_their_callers_not_their_position(
    make_batcher: MakeBatcher,
) -> None:
    # Distinct, order-sensitive results: a shuffle of results among callers would show.
    model = FakeModel(lambda items: [f"out-{item}" for item in items])
    batcher = make_batcher(model, max_batch_size=8, max_wait_s=10.0)
    items = [7, 3, 9, 1, 4, 8, 2, 6]
    done = await guard(asyncio.gather(*(spawn(batcher, i) for i in items)))
    assert model.batches == [items]
    assert [c.result for c in done] == [f"out-{i}" for i in items]


async def test_batches_run_in_the_worker_thread_not_on_the_loop(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model, name="semantic")
    await guard(spawn(batcher, 1))
    assert model.threads
    assert all(t.startswith("infer-semantic") for t in model.threads)
    assert threading.current_thread().name not in model.threads


# 2. max_wait -------------------------------------------------------------------------------


async def test_a_lone_item_runs_after_max_wait_without_company(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    max_wait = 0.02
    batcher = make_batcher(model, max_batch_size=4, max_wait_s=max_wait)
    started = time.perf_counter()
    completed = await guard(batcher.submit(7, key="k", timeout_s=GUARD_S))
    elapsed = time.perf_counter() - started

    assert completed.result == 70
    assert completed.batch_size == 1
    assert model.batches == [[7]]
    # It did wait for company (about max_wait), but not for long.
    assert elapsed >= max_wait * 0.9
    assert elapsed < 2.0


async def test_a_full_batch_runs_at_once_without_waiting_out_max_wait(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=4, max_wait_s=10.0)
    started = time.perf_counter()
    done = await guard(asyncio.gather(*(spawn(batcher, i) for i in range(4))))
    assert time.perf_counter() - started < 2.0  # far below the 10 s wait
    assert model.batches == [[0, 1, 2, 3]]
    assert {c.batch_size for c in done} == {4}


async def test_the_first_item_waits_for_company_and_goes_when_the_batch_fills(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=3, max_wait_s=10.0)
    first = spawn(batcher, 1)
    # Give the consumer ample turns of the loop: with 10 s of max_wait it must keep waiting.
    for _ in range(20):
        await asyncio.sleep(0.001)
    assert model.batches == []
    assert not first.done()

    started = time.perf_counter()
    rest = [spawn(batcher, 2), spawn(batcher, 3)]
    done = await guard(asyncio.gather(first, *rest))
    assert time.perf_counter() - started < 2.0
    assert model.batches == [[1, 2, 3]]
    assert [c.result for c in done] == [10, 20, 30]


# 3. Group keys -----------------------------------------------------------------------------


async def test_items_of_different_keys_never_share_a_batch_and_the_oldest_group_goes_first(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel(lambda items: [f"{key}{n}" for key, n in items])
    batcher = make_batcher(model, max_batch_size=4, max_wait_s=0.001)
    blocker = await start_blocker(batcher, model, item=("x", 0))

    order = [("b", 1), ("a", 1), ("b", 2), ("a", 2), ("b", 3), ("c", 1), ("a", 3)]
    tasks = [spawn(batcher, item, key=item[0]) for item in order]
    await until(lambda: batcher.queue_depth == len(order), "all items queued")
    model.release()
    done = await guard(asyncio.gather(*tasks))

    assert model.batches[1:] == [
        [("b", 1), ("b", 2), ("b", 3)],  # b's item is the oldest
        [("a", 1), ("a", 2), ("a", 3)],
        [("c", 1)],
    ]
    assert [c.result for c in done] == [f"{k}{n}" for k, n in order]
    assert [c.batch_size for c in done] == [3, 3, 3, 3, 3, 1, 3]
    await guard(blocker)


async def test_an_older_partial_group_goes_before_a_younger_full_one(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel(lambda items: [n for _, n in items])
    batcher = make_batcher(model, max_batch_size=2, max_wait_s=0.001)
    blocker = await start_blocker(batcher, model, item=("x", 0))

    order = [("old", 1), ("new", 1), ("new", 2), ("new", 3), ("old", 2), ("new", 4)]
    tasks = [spawn(batcher, item, key=item[0]) for item in order]
    await until(lambda: batcher.queue_depth == len(order), "all items queued")
    model.release()
    await guard(asyncio.gather(*tasks))

    assert model.batches[1:] == [
        [("old", 1), ("old", 2)],
        [("new", 1), ("new", 2)],
        [("new", 3), ("new", 4)],
    ]
    await guard(blocker)


async def test_equal_keys_batch_together_even_if_not_identical_objects(
    make_batcher: MakeBatcher,
) -> None:
    # Shape keys are built per request, e.g. (height, width): equality, not identity, groups.
    model = FakeModel(lambda items: list(items))
    batcher = make_batcher(model, max_batch_size=3, max_wait_s=10.0)
    keys = [(480, 640), tuple([480, 640]), (int("480"), 640)]
    await guard(asyncio.gather(*(spawn(batcher, i, key=k) for i, k in enumerate(keys))))
    assert model.batches == [[0, 1, 2]]


# 4. Bounded queue --------------------------------------------------------------------------


async def test_a_full_queue_refuses_at_once_with_retry_after(make_batcher: MakeBatcher) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_queue_size=3, retry_after_s=7)
    blocker = await start_blocker(batcher, model)

    queued = [spawn(batcher, i) for i in range(1, 4)]
    await until(lambda: batcher.queue_depth == 3, "three queued items")

    started = time.perf_counter()
    with pytest.raises(QueueFull) as refused:
        await guard(batcher.submit(4, key="k", timeout_s=GUARD_S))
    assert time.perf_counter() - started < 0.5  # refused, not queued until a timeout
    assert refused.value.retry_after_s == 7
    assert status_of(refused.value) == 503
    assert "3" in refused.value.message  # names the limit
    assert batcher.queue_depth == 3  # the refused item took no slot

    model.release()
    assert [c.result for c in await guard(asyncio.gather(*queued))] == [10, 20, 30]
    await guard(blocker)
    assert 4 not in [item for b in model.batches for item in b]  # refused item was never run
    # Room again once the queue drained.
    assert (await guard(batcher.submit(5, key="k", timeout_s=GUARD_S))).result == 50


async def test_admit_refuses_exactly_when_submit_would(make_batcher: MakeBatcher) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_queue_size=2, retry_after_s=4)
    blocker = await start_blocker(batcher, model)
    batcher.admit()  # room: no error
    queued = [spawn(batcher, i) for i in (1, 2)]
    await until(lambda: batcher.queue_depth == 2, "two queued items")
    with pytest.raises(QueueFull) as refused:
        batcher.admit()
    assert refused.value.retry_after_s == 4
    queued[0].cancel()  # a caller that went away frees its slot for admission too
    with pytest.raises(asyncio.CancelledError):
        await queued[0]
    batcher.admit()
    model.release()
    assert (await guard(queued[1])).result == 20
    await guard(blocker)
    await batcher.stop()
    with pytest.raises(NotReady):
        batcher.admit()


async def test_callers_that_went_away_do_not_hold_queue_slots(make_batcher: MakeBatcher) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_queue_size=2)
    blocker = await start_blocker(batcher, model)

    gone = spawn(batcher, 1)
    stays = spawn(batcher, 2)
    await until(lambda: batcher.queue_depth == 2, "two queued items")
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone

    late = spawn(batcher, 3)  # the cancelled caller's slot is free again
    model.release()
    assert (await guard(stays)).result == 20
    assert (await guard(late)).result == 30
    await guard(blocker)
    assert 1 not in model.seen


# 5. Deadlines ------------------------------------------------------------------------------


async def test_an_item_expiring_in_the_queue_raises_and_is_never_run(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model)
    blocker = await start_blocker(batcher, model)

    survivor = spawn(batcher, 2, timeout_s=GUARD_S)
    with pytest.raises(DeadlineExceeded) as expired:
        await guard(batcher.submit(1, key="k", timeout_s=0.05))
    assert status_of(expired.value) == 504

    model.release()
    assert (await guard(survivor)).result == 20
    await guard(blocker)
    assert (await guard(batcher.submit(3, key="k", timeout_s=GUARD_S))).result == 30
    assert 1 not in model.seen
    assert model.batches == [[0], [2], [3]]


async def test_an_item_with_no_time_left_is_refused_without_taking_a_slot(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_queue_size=1)
    blocker = await start_blocker(batcher, model)
    for spent in (0.0, -0.5):
        with pytest.raises(DeadlineExceeded, match="before the request was queued"):
            await guard(batcher.submit(1, key="k", timeout_s=spent))
    assert batcher.queue_depth == 0
    model.release()
    await guard(blocker)
    assert model.seen == [0]


async def test_the_consumer_drops_items_already_past_their_deadline(
    make_batcher: MakeBatcher,
) -> None:
    # A zero timeout is already past when the consumer looks: the caller gets a 504 and
    # the model never sees the item, whichever side notices first.
    model = FakeModel()
    batcher = make_batcher(model)
    blocker = await start_blocker(batcher, model)
    expired = [spawn(batcher, i, timeout_s=0.0) for i in range(1, 4)]
    fine = spawn(batcher, 9)
    model.release()
    for task in expired:
        with pytest.raises(DeadlineExceeded):
            await guard(task)
    assert (await guard(fine)).result == 90
    await guard(blocker)
    assert model.batches == [[0], [9]]


async def test_an_item_expiring_while_its_batch_runs_raises_to_its_caller(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    model.hold()
    batcher = make_batcher(model, max_batch_size=2, max_wait_s=10.0)
    hasty = spawn(batcher, 1, timeout_s=1.0)  # long enough to join the batch on a busy box
    patient = spawn(batcher, 2, timeout_s=GUARD_S)
    await until(lambda: len(model.batches) == 1, "the batch to start")
    assert model.batches == [[1, 2]]  # both were handed to the model

    with pytest.raises(DeadlineExceeded):
        await guard(hasty)
    assert not patient.done()

    model.release()
    completed = await guard(patient)
    assert completed.result == 20
    assert completed.batch_size == 2
    # The late result for the expired item did not upset the consumer.
    done = await guard(asyncio.gather(spawn(batcher, 3), spawn(batcher, 4)))
    assert [c.result for c in done] == [30, 40]


# 6. Cancellation ---------------------------------------------------------------------------


async def test_a_caller_cancelled_while_queued_costs_no_model_time(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=4)
    blocker = await start_blocker(batcher, model)

    tasks = {i: spawn(batcher, i) for i in (1, 2, 3)}
    await until(lambda: batcher.queue_depth == 3, "three queued items")
    tasks[2].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[2]

    model.release()
    first, third = await guard(asyncio.gather(tasks[1], tasks[3]))
    await guard(blocker)
    assert (first.result, third.result) == (10, 30)
    assert model.batches == [[0], [1, 3]]
    assert first.batch_size == third.batch_size == 2


async def test_a_caller_cancelled_while_its_batch_runs_leaves_the_others_their_results(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    model.hold()
    batcher = make_batcher(model, max_batch_size=3, max_wait_s=10.0)
    tasks = [spawn(batcher, i) for i in (1, 2, 3)]
    await until(lambda: len(model.batches) == 1, "the batch to start")
    tasks[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]

    model.release()
    one, three = await guard(asyncio.gather(tasks[0], tasks[2]))
    assert (one.result, three.result) == (10, 30)
    assert model.batches == [[1, 2, 3]]
    done = await guard(asyncio.gather(*(spawn(batcher, i) for i in (4, 5, 6))))
    assert [c.result for c in done] == [40, 50, 60]


# 7. Failures -------------------------------------------------------------------------------


def poisoned(error: Exception) -> Callable[[Sequence[int]], list[int]]:
    def run(items: Sequence[int]) -> list[int]:
        if POISON in items:
            raise error
        return [item * 10 for item in items]

    return run


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(ValueError("secret boom"), InternalError, id="generic-exception"),
        pytest.param(InvalidParameter("bad image"), InvalidParameter, id="service-error"),
    ],
)
async def test_a_failed_batch_is_retried_one_by_one_so_only_the_poison_item_fails(
    make_batcher: MakeBatcher,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    expected: type[ServiceError],
) -> None:
    model = FakeModel(poisoned(error))
    batcher = make_batcher(model, max_batch_size=3, max_wait_s=10.0)
    caplog.set_level(logging.WARNING, logger="app.batching")

    tasks = [spawn(batcher, i) for i in (1, POISON, 3)]
    outcomes = await guard(asyncio.gather(*tasks, return_exceptions=True))

    assert model.batches == [[1, POISON, 3], [1], [POISON], [3]]
    good_one, bad, good_three = outcomes
    assert isinstance(good_one, Completed)
    assert isinstance(good_three, Completed)
    assert (good_one.result, good_three.result) == (10, 30)
    assert good_one.batch_size == good_three.batch_size == 1  # the retry's size
    assert type(bad) is expected
    if isinstance(error, ServiceError):
        assert bad is error  # the domain error itself reaches the caller
    else:
        assert "secret boom" not in str(bad)  # no exception text leaks to clients
        assert any(r.exc_info and r.exc_info[1] is error for r in caplog.records)

    # The batcher keeps working afterwards, batching as before.
    done = await guard(asyncio.gather(*(spawn(batcher, i) for i in (4, 5, 6))))
    assert [c.result for c in done] == [40, 50, 60]
    assert model.batches[-1] == [4, 5, 6]


async def test_a_single_failing_item_gets_an_error_without_a_retry(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel(poisoned(RuntimeError("boom")))
    batcher = make_batcher(model)
    with pytest.raises(InternalError):
        await guard(batcher.submit(POISON, key="k", timeout_s=GUARD_S))
    assert model.batches == [[POISON]]


async def test_items_expired_during_a_failed_batch_are_not_retried(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel(poisoned(RuntimeError("boom")))
    model.hold()
    batcher = make_batcher(model, max_batch_size=3, max_wait_s=10.0)
    hasty = spawn(batcher, 1, timeout_s=1.0)  # long enough to join the batch on a busy box
    others = [spawn(batcher, POISON), spawn(batcher, 3)]
    await until(lambda: len(model.batches) == 1, "the batch to start")
    with pytest.raises(DeadlineExceeded):
        await guard(hasty)
    model.release()
    bad, good = await guard(asyncio.gather(*others, return_exceptions=True))
    assert isinstance(bad, InternalError)
    assert isinstance(good, Completed)
    assert good.result == 30
    assert model.batches == [[1, POISON, 3], [POISON], [3]]


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(lambda items: [], id="none"),
        pytest.param(lambda items: [i * 10 for i in items][:-1], id="too-few"),
        pytest.param(lambda items: [i * 10 for i in items] + [0], id="too-many"),
        pytest.param(lambda items: None, id="not-a-list"),
    ],
)
async def test_a_wrong_number_of_results_is_an_error_not_a_hang(
    make_batcher: MakeBatcher, wrong: Callable[[Sequence[int]], Any]
) -> None:
    model = FakeModel(wrong)
    batcher = make_batcher(model, max_batch_size=3, max_wait_s=10.0)
    outcomes = await guard(
        asyncio.gather(*(spawn(batcher, i) for i in (1, 2, 3)), return_exceptions=True)
    )
    assert all(isinstance(o, InternalError) for o in outcomes), outcomes
    assert model.batches == [[1, 2, 3], [1], [2], [3]]


async def test_results_short_only_for_whole_batches_are_recovered_by_the_retry(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel(lambda items: [items[0] * 10])  # right only for a batch of one
    batcher = make_batcher(model, max_batch_size=3, max_wait_s=10.0)
    done = await guard(asyncio.gather(*(spawn(batcher, i) for i in (1, 2, 3))))
    assert [c.result for c in done] == [10, 20, 30]
    assert [c.batch_size for c in done] == [1, 1, 1]


# 8. Every future resolves on every path ----------------------------------------------------


async def test_mixed_traffic_resolves_every_caller(make_batcher: MakeBatcher) -> None:
    """Keys, caps, expiries, cancellations and failures together: nobody is left waiting."""
    rng = random.Random(1234)
    model = FakeModel(poisoned(RuntimeError("boom")))
    max_batch = 5
    batcher = make_batcher(model, max_batch_size=max_batch, max_wait_s=0.002, max_queue_size=500)

    expected: dict[int, str] = {}
    tasks: dict[int, asyncio.Task[Completed[Any]]] = {}
    for i in range(300):
        item = POISON if i % 37 == 0 else i
        roll = rng.random()
        timeout = 0.0 if roll < 0.1 else GUARD_S
        tasks[i] = spawn(batcher, item, key=rng.choice("abc"), timeout_s=timeout)
        expected[i] = "poison" if item == POISON else "expired" if timeout == 0.0 else "ok"
        if rng.random() < 0.3:
            await asyncio.sleep(0)  # let the consumer interleave
    cancelled = set(rng.sample(sorted(tasks), 30))
    for i in cancelled:
        tasks[i].cancel()

    await guard(asyncio.wait(tasks.values()))
    for i, task in tasks.items():
        assert task.done()
        if task.cancelled():
            assert i in cancelled
            continue
        error = task.exception()
        if expected[i] == "ok":
            assert error is None, (i, error)
            assert task.result().result == i * 10
        elif expected[i] == "poison":
            assert isinstance(error, InternalError | DeadlineExceeded), (i, error)
        else:
            assert isinstance(error, DeadlineExceeded), (i, error)
    assert all(len(b) <= max_batch for b in model.batches)
    succeeded = [i for i, t in tasks.items() if not t.cancelled() and t.exception() is None]
    for i in succeeded:
        assert i in model.seen
    assert batcher.queue_depth == 0


async def test_a_crashed_consumer_fails_its_callers_and_refuses_new_work(
    make_batcher: MakeBatcher,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A bug in the batcher itself (simulated in a private step) must not leave callers hanging.
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=2, max_wait_s=10.0)

    def broken() -> list[Any]:
        raise RuntimeError("bug")

    monkeypatch.setattr(batcher, "_take_batch", broken)
    outcomes = await guard(
        asyncio.gather(spawn(batcher, 1), spawn(batcher, 2), return_exceptions=True)
    )
    assert all(isinstance(o, InternalError) for o in outcomes), outcomes
    assert any("stopped on an unexpected error" in r.getMessage() for r in caplog.records)
    with pytest.raises(NotReady):
        await guard(batcher.submit(3, key="k", timeout_s=GUARD_S))
    await guard(batcher.stop())
    assert model.batches == []


async def test_a_cancelled_consumer_fails_its_running_and_queued_callers(
    make_batcher: MakeBatcher,
) -> None:
    # E.g. the loop shutting down under it: nobody may be left waiting for a result.
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=2, max_wait_s=10.0)
    model.hold()
    running = [spawn(batcher, 1), spawn(batcher, 2)]
    await until(lambda: len(model.batches) == 1, "the batch to start")
    queued = spawn(batcher, 3)
    await until(lambda: batcher.queue_depth == 1, "an item queued")

    consumer = batcher._task
    assert consumer is not None
    consumer.cancel()
    outcomes = await guard(asyncio.gather(*running, queued, return_exceptions=True))
    assert all(isinstance(o, NotReady) for o in outcomes), outcomes
    model.release()
    await guard(batcher.stop())  # still returns, and does not raise the consumer's cancel


# 9. start / stop ---------------------------------------------------------------------------


async def test_submit_before_start_is_refused_as_not_ready(make_batcher: MakeBatcher) -> None:
    model = FakeModel()
    batcher = make_batcher(model, start=False, retry_after_s=2)
    with pytest.raises(NotReady) as refused:
        await guard(batcher.submit(1, key="k", timeout_s=GUARD_S))
    assert refused.value.retry_after_s == 2
    assert status_of(refused.value) == 503
    assert model.batches == []


async def test_stop_drains_queued_and_running_work_before_returning(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=4, max_wait_s=0.001)
    blocker = await start_blocker(batcher, model)
    queued = [spawn(batcher, i) for i in range(1, 6)]
    await until(lambda: batcher.queue_depth == 5, "five queued items")

    stopping = asyncio.ensure_future(batcher.stop())
    await asyncio.sleep(0)  # stop() has begun: no new work from here on
    with pytest.raises(NotReady):
        await guard(batcher.submit(99, key="k", timeout_s=GUARD_S))

    # Let the blocker and the batch of four through; hold the last batch in the model with
    # the queue already empty: stop() must still wait for it.
    model.step(2)
    await until(lambda: len(model.batches) == 3, "the last batch to start")
    assert batcher.queue_depth == 0
    for _ in range(10):
        await asyncio.sleep(0.005)
        assert not stopping.done()
    assert not queued[-1].done()

    model.release()
    await guard(stopping)
    batches_at_stop = len(model.batches)
    # Everything admitted was resolved before stop() returned: the callers only need their
    # wake-up turns of the loop, not more model work or their timeouts.
    _, waiting = await asyncio.wait([blocker, *queued], timeout=1.0)
    assert not waiting
    assert len(model.batches) == batches_at_stop
    assert [t.result().result for t in queued] == [10, 20, 30, 40, 50]
    assert model.batches == [[0], [1, 2, 3, 4], [5]]
    assert 99 not in model.seen


async def test_drain_runs_only_batches_that_can_finish_and_sheds_the_rest(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=1, retry_after_s=2)
    model.hold()
    first = spawn(batcher, 1)
    await until(lambda: len(model.batches) == 1, "the first batch to start")
    model.step()  # let it through: the batcher now knows a batch takes ~0 s
    assert (await guard(first)).result == 10
    batcher.longest_batch_s = 0.3  # as if batches took 0.3 s
    blocker = spawn(batcher, 2)
    await until(lambda: len(model.batches) == 2, "the second batch to start")
    queued = [spawn(batcher, i) for i in (3, 4)]
    await until(lambda: batcher.queue_depth == 2, "two queued items")
    loop = asyncio.get_running_loop()
    batcher.drain_by(loop.time() + 0.5)
    with pytest.raises(NotReady):  # new work is refused at once
        await guard(batcher.submit(5, key="k", timeout_s=GUARD_S))
    await asyncio.sleep(0.25)  # 0.25 s left: not enough for another 0.3 s batch
    model.release()
    assert (await guard(blocker)).result == 20  # the running batch finishes
    for call in queued:
        with pytest.raises(NotReady, match="SEGSERVE_SHUTDOWN_GRACE_S") as shed:
            await guard(call)
        assert shed.value.retry_after_s == 2
    assert model.seen == [1, 2]


async def test_drain_runs_queued_work_that_fits_and_sheds_what_waits_past_the_deadline(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=1)
    blocker = await start_blocker(batcher, model)
    queued = [spawn(batcher, i) for i in (1, 2)]
    await until(lambda: batcher.queue_depth == 2, "two queued items")
    batcher.drain_by(asyncio.get_running_loop().time() + 0.3)
    model.step(1)  # the blocker finishes in time; item 1 fits and starts, then overruns
    await guard(blocker)
    await until(lambda: len(model.batches) == 2, "item 1 to start")
    # At the deadline item 2, still queued behind the overrunning batch, is shed.
    with pytest.raises(NotReady):
        await guard(queued[1])
    assert batcher.queue_depth == 0
    model.release()
    assert (await guard(queued[0])).result == 10
    assert model.seen == [0, 1]


async def test_stop_does_not_wait_out_max_wait(make_batcher: MakeBatcher) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=4, max_wait_s=10.0)
    lone = spawn(batcher, 1)
    await until(lambda: batcher.queue_depth == 1, "the item queued")
    started = time.perf_counter()
    await guard(batcher.stop())
    assert time.perf_counter() - started < 2.0
    assert (await guard(lone)).result == 10


async def test_submit_after_stop_is_refused_and_stop_is_idempotent(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model)
    assert (await guard(batcher.submit(1, key="k", timeout_s=GUARD_S))).result == 10
    await guard(batcher.stop())
    with pytest.raises(NotReady):
        await guard(batcher.submit(2, key="k", timeout_s=GUARD_S))
    await guard(batcher.stop())
    assert model.batches == [[1]]


async def test_stop_of_a_never_started_batcher_returns(make_batcher: MakeBatcher) -> None:
    batcher = make_batcher(FakeModel(), start=False)
    await guard(batcher.stop())


# 10. Completed -----------------------------------------------------------------------------


async def test_on_batch_hears_the_size_of_every_batch_sent_to_the_model(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel(lambda items: [1 // (item - 3) for item in items])  # item 3 fails
    batcher = make_batcher(model)
    sizes: list[int] = []
    batcher.on_batch = sizes.append
    blocker = await start_blocker(batcher, model)
    calls = [spawn(batcher, i) for i in (1, 2, 3)]
    await until(lambda: batcher.queue_depth == 3, "three queued items")
    model.release()
    await guard(blocker)
    await guard(asyncio.gather(*calls, return_exceptions=True))
    assert sizes == [len(b) for b in model.batches] == [1, 3, 1, 1, 1]  # the retry counts


async def test_completed_reports_batch_size_and_times(make_batcher: MakeBatcher) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=3, max_wait_s=0.001)
    blocker = await start_blocker(batcher, model)
    queued = [spawn(batcher, i) for i in (1, 2, 3)]
    await until(lambda: batcher.queue_depth == 3, "three queued items")
    held_s = 0.05
    await asyncio.sleep(held_s)  # the time under test: how long the first batch is held
    model.release()

    first = await guard(blocker)
    done = await guard(asyncio.gather(*queued))
    tolerance = 0.005
    assert first.batch_size == 1
    assert first.infer_s >= held_s - tolerance  # the held batch's run time
    assert first.queue_s >= 0
    for completed in done:
        assert completed.batch_size == 3
        assert completed.queue_s >= held_s - tolerance  # waited behind the held batch
        assert completed.infer_s >= 0
    assert len({c.infer_s for c in done}) == 1  # one batch, one run time


async def test_completed_fields_are_non_negative_for_an_immediate_batch(
    make_batcher: MakeBatcher,
) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=2, max_wait_s=10.0)
    done = await guard(asyncio.gather(spawn(batcher, 1), spawn(batcher, 2)))
    for completed in done:
        assert completed.batch_size == 2
        assert completed.queue_s >= 0
        assert completed.infer_s >= 0
        assert completed.queue_s < 2.0
        assert completed.infer_s < 2.0
