"""A generic dynamic batcher: a bounded queue of futures with one consumer task.

It knows nothing about torch. Callers submit an item with a *group key*; a batch only holds
items of one key (for the models here: images the network sees at the same shape), so an
image's result does not depend on its neighbours, up to float rounding: CPU/GPU kernels may
sum in a different order for another batch size (docs/PERFORMANCE.md gives the spread).

Single-event-loop invariant: ``submit``, ``stop`` and the consumer task run on the same
asyncio loop, and only they touch ``_pending`` and the futures, so no locks are needed. The
batch function itself runs in a dedicated one-thread executor, never on the loop.

Every future is resolved on every path: with a result, with the batch function's error, with
DeadlineExceeded, by its caller's cancellation, or, when the consumer ends (stop, crash,
cancellation), with an error for whatever it still held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from app.errors import DeadlineExceeded, InternalError, NotReady, QueueFull, ServiceError

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Completed(Generic[ResultT]):
    """An item's result, with how long it queued and ran, and its batch's size."""

    result: ResultT
    queue_s: float  # from submit to the start of its batch
    infer_s: float  # the batch's run time
    batch_size: int


@dataclass(eq=False)
class _Entry(Generic[ItemT, ResultT]):
    """A queued item: its group key, deadline and the future its caller awaits."""

    item: ItemT
    key: Hashable
    deadline: float  # loop.time() by which the result is needed
    future: asyncio.Future[Completed[ResultT]]
    submitted: float = field(default_factory=time.perf_counter)


class Batcher(Generic[ItemT, ResultT]):
    """A bounded queue of futures with one consumer that runs batches of one key."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[ItemT]], list[ResultT]],
        *,
        name: str,
        max_batch_size: int,
        max_wait_s: float,
        max_queue_size: int,
        retry_after_s: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue_size = max_queue_size
        self.retry_after_s = retry_after_s
        self._pending: deque[_Entry[ItemT, ResultT]] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        self._task: asyncio.Task[None] | None = None
        self._running: list[_Entry[ItemT, ResultT]] = []  # the batch in the worker thread
        self._accepting = False
        self._stopping = False
        # Told the size of every batch sent to the model (metrics); runs on the loop.
        self.on_batch: Callable[[int], None] | None = None
        self.longest_batch_s = 0.0  # how long a batch may take: shutdown plans with it
        self._finish_by: float | None = None  # loop time; set by drain_by at shutdown

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._accepting = True
        self._task = asyncio.get_running_loop().create_task(
            self._consume(), name=f"batcher-{self.name}"
        )

    async def stop(self) -> None:
        """Refuse new work, let queued and running work finish, then stop the consumer.

        The consumer itself drains: it runs what is queued without waiting for company and
        returns once nothing is queued or running, so no admitted caller loses its result
        (cancelling it instead would drop the batch in the worker thread on the floor).
        Calling it again, or on a batcher never started, is harmless.
        """
        self._accepting = False
        self._stopping = True
        self._arrived.set()
        if self._task is not None:
            # wait(), not await: neither the consumer's end nor our own cancellation should
            # cancel or re-raise from the other.
            await asyncio.wait([self._task])
        # Normally the thread is idle by now; if the consumer was cancelled mid-batch it is
        # not, so wait for it off the event loop.
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def drain_by(self, deadline: float) -> None:
        """Shutdown: refuse new work, and run queued work only while it can finish in time.

        A batch starts only if it can end by ``deadline`` (loop time), judging by the
        longest batch seen; at ``deadline`` whatever is still queued is shed (503). So what
        the server's grace period cuts off at its end is at most a batch that overran.
        """
        self._accepting = False
        self._finish_by = deadline
        self._arrived.set()  # a consumer waiting for company stops waiting
        asyncio.get_running_loop().call_at(deadline, self.shed)

    def shed(self) -> None:
        """Refuse new work and answer every queued item 503 now (the running batch finishes).

        For the end of a shutdown's grace period: a clean "retry elsewhere" beats being cut
        off mid-request when the server gives up waiting.
        """
        self._accepting = False
        for entry in self._pending:
            if not entry.future.done():
                entry.future.set_exception(
                    NotReady(
                        f"model {self.name!r} is shutting down and this request did not reach "
                        "it within the shutdown grace period (SEGSERVE_SHUTDOWN_GRACE_S)",
                        retry_after_s=self.retry_after_s,
                    )
                )
        self._pending.clear()

    async def run_in_worker(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the inference thread (warm-up: per-thread device state gets built)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def admit(self, count: int = 1) -> None:
        """Raise NotReady or QueueFull (with ``retry_after_s``) unless ``count`` new items
        would fit (a many-images request is admitted as a whole).

        Request handlers call it before reading and decoding a body, so that an overloaded
        service refuses at once and spends nothing on work it cannot take; ``submit`` checks
        again, since the queue may fill meanwhile.
        """
        self._check_accepting()
        if len(self._pending) + count > self.max_queue_size:
            # Callers that timed out or went away keep their slot until the consumer next
            # looks, which may be a whole batch away: free those before refusing anyone.
            self._drop_dead(asyncio.get_running_loop().time())
        if len(self._pending) + count > self.max_queue_size:
            raise QueueFull(
                f"model {self.name!r} has {len(self._pending)} requests queued, the limit is "
                f"{self.max_queue_size}"
                + (f", and this request brings {count} images" if count > 1 else "")
                + "; retry later",
                retry_after_s=self.retry_after_s,
            )

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise NotReady(
                f"model {self.name!r} is not accepting requests (starting or shutting down)",
                retry_after_s=self.retry_after_s,
            )

    async def submit(
        self, item: ItemT, *, key: Hashable, timeout_s: float, admitted: bool = False
    ) -> Completed[ResultT]:
        """Queue ``item`` and wait for its result; 503 when full, 504 past the timeout.

        ``admitted``: part of a request already admitted as a whole (a tiled request's
        windows, fed a few at a time): the queue's size cap was checked for the request, so
        only a batcher that stopped accepting refuses it.
        """
        if admitted:
            self._check_accepting()
        else:
            self.admit()
        if timeout_s <= 0:
            # Spent before queueing (a slow upload or decode): it must not take a slot.
            raise DeadlineExceeded("the deadline passed before the request was queued")
        loop = asyncio.get_running_loop()
        entry = _Entry(item, key, loop.time() + timeout_s, loop.create_future())
        self._pending.append(entry)
        self._arrived.set()
        try:
            return await asyncio.wait_for(asyncio.shield(entry.future), timeout_s)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            raise DeadlineExceeded(
                f"no result within the request timeout of {timeout_s:g} s"
            ) from None
        finally:
            # Timed out or the caller went away: the consumer skips a done future, so the
            # item costs no model time if it has not started yet.
            entry.future.cancel()

    def _take_batch(self) -> list[_Entry[ItemT, ResultT]]:
        """Remove and return up to max_batch_size live entries sharing the oldest one's key."""
        now = asyncio.get_running_loop().time()
        self._drop_dead(now)
        if not self._pending:
            return []
        key = self._pending[0].key
        batch: list[_Entry[ItemT, ResultT]] = []
        rest: deque[_Entry[ItemT, ResultT]] = deque()
        for entry in self._pending:
            if entry.key == key and len(batch) < self.max_batch_size:
                batch.append(entry)
            else:
                rest.append(entry)
        self._pending = rest
        return batch

    def _drop_dead(self, now: float) -> None:
        live: deque[_Entry[ItemT, ResultT]] = deque()
        for entry in self._pending:
            if entry.future.done():
                continue
            if now >= entry.deadline:
                entry.future.set_exception(DeadlineExceeded("the deadline passed while queued"))
                continue
            live.append(entry)
        self._pending = live

    def _draining(self) -> bool:
        return self._stopping or self._finish_by is not None

    def _ready_count(self, key: Hashable) -> int:
        return sum(1 for e in self._pending if e.key == key and not e.future.done())

    async def _consume(self) -> None:
        """Run batches until stopped; whatever ends this task, leave no caller waiting."""
        crashed = False
        try:
            await self._serve()
        except Exception:
            crashed = True
            log.exception("the batcher of %s stopped on an unexpected error", self.name)
        finally:
            # Normally empty by now; after a crash or a cancellation, fail what is left.
            self._accepting = False
            for entry in [*self._running, *self._pending]:
                if not entry.future.done():
                    entry.future.set_exception(
                        InternalError("inference failed")
                        if crashed
                        else NotReady(
                            f"model {self.name!r} stopped",
                            retry_after_s=self.retry_after_s,
                        )
                    )
            self._running = []
            self._pending.clear()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_dead(loop.time())
            if not self._pending:
                if self._stopping:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if self._finish_by is not None and (
                loop.time() + self.longest_batch_s > self._finish_by
            ):
                self.shed()  # no time left for another batch before the shutdown deadline
                continue
            # Fill: wait for company for the oldest item's group, up to max_wait (not when
            # stopping or draining: then what is queued runs at once).
            key = self._pending[0].key
            fill_until = loop.time() + self.max_wait_s
            while not self._draining() and self._ready_count(key) < self.max_batch_size:
                remaining = fill_until - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
            batch = self._take_batch()
            if batch:
                self._running = batch
                await self._execute(batch)
                self._running = []

    async def _execute(self, batch: list[_Entry[ItemT, ResultT]]) -> None:
        loop = asyncio.get_running_loop()
        if self.on_batch is not None:
            self.on_batch(len(batch))
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, self._run_batch, [e.item for e in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} gave {len(results)} results")
        except Exception as exc:
            if len(batch) > 1:
                # One bad item (or memory for a big batch) should not fail its neighbours.
                log.warning(
                    "batch of %d on %s failed (%r); retrying one by one", len(batch), self.name, exc
                )
                for entry in batch:
                    if not entry.future.done():
                        await self._execute([entry])
                return
            self._fail(batch[0], exc)
            return
        infer_s = time.perf_counter() - started
        self.longest_batch_s = max(self.longest_batch_s, infer_s)
        for entry, result in zip(batch, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(
                    Completed(result, started - entry.submitted, infer_s, len(batch))
                )

    def _fail(self, entry: _Entry[ItemT, ResultT], exc: Exception) -> None:
        if entry.future.done():
            return
        if isinstance(exc, ServiceError):
            entry.future.set_exception(exc)
        else:
            log.error("inference failed on %s", self.name, exc_info=exc)
            entry.future.set_exception(InternalError("inference failed"))
