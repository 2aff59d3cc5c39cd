"""A fault-injection seam: named points in the request path that tests can make fail.

Production code calls :func:`point` at each stage boundary; unarmed (always, in production)
a point is a dictionary lookup and nothing else. A test arms a point with :func:`injected`
to raise an error (or pause) there, for every caller or only for those whose *subject* (the
thing the stage is working on: the request's bytes, its image, the batch) it picks out, so a
test can break one request among many and check that only that one fails.

Points (where each is called):

- ``decode``: before a request's bytes are decoded (subject: the bytes);
- ``preprocess``: per image, in the inference thread, before its batch runs (subject: the
  image array);
- ``infer_batch``: in the inference thread, before the model runs a batch (subject: the list
  of images);
- ``encode``: before a result is encoded (subject: the model's result).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

Point = Literal["decode", "preprocess", "infer_batch", "encode"]
POINTS: tuple[Point, ...] = ("decode", "preprocess", "infer_batch", "encode")


@dataclass
class Fault:
    """What an armed point does: pause ``delay_s``, then raise ``error`` (if any)."""

    error: Callable[[], BaseException] | None = None
    delay_s: float = 0.0
    match: Callable[[Any], bool] | None = None  # None: every subject
    times: int | None = None  # fire at most this often; None: every time
    fired: int = 0


# Points fire on the event loop and in the inference thread alike: guard the counters.
_lock = threading.Lock()
_armed: dict[str, Fault] = {}


def point(name: Point, subject: Any = None) -> None:
    """Pass through stage ``name`` working on ``subject``: a no-op unless a fault is armed."""
    fault = _armed.get(name)
    if fault is None:
        return
    with _lock:
        if fault.match is not None and not fault.match(subject):
            return
        if fault.times is not None and fault.fired >= fault.times:
            return
        fault.fired += 1
    if fault.delay_s:
        time.sleep(fault.delay_s)
    if fault.error is not None:
        raise fault.error()


def arm(name: Point, fault: Fault) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}; points: {', '.join(POINTS)}")
    with _lock:
        _armed[name] = fault


def disarm(name: Point) -> None:
    with _lock:
        _armed.pop(name, None)


@contextmanager
def injected(
    name: Point,
    error: Callable[[], BaseException] | None = None,
    *,
    delay_s: float = 0.0,
    match: Callable[[Any], bool] | None = None,
    times: int | None = None,
) -> Iterator[Fault]:
    """Arm ``name`` for the ``with`` block; yields the fault, whose ``fired`` counts hits."""
    fault = Fault(error=error, delay_s=delay_s, match=match, times=times)
    arm(name, fault)
    try:
        yield fault
    finally:
        disarm(name)


class InjectedFault(RuntimeError):
    """What a point armed by the debug setting raises."""


def parse_setting(text: str) -> dict[Point, Fault]:
    """Read ``SEGSERVE_DEBUG_FAULTS``, e.g. ``infer_batch:delay=0.5,encode:error``."""
    faults: dict[Point, Fault] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, action = (p.strip() for p in item.partition(":"))
        if name not in POINTS:
            raise ValueError(f"fault {item!r}: unknown point {name!r}; points: {', '.join(POINTS)}")
        faults[name] = _parse_action(action, item)
    return faults


def arm_from_setting(text: str) -> list[str]:
    """Arm the points ``SEGSERVE_DEBUG_FAULTS`` names (chaos tests of a running server).

    Returns the armed point names, for the startup log; an empty setting arms nothing.
    """
    parsed = parse_setting(text)
    for name, fault in parsed.items():
        arm(name, fault)
    return list(parsed)


def _parse_action(action: str, item: str) -> Fault:
    if action == "error":
        message = f"fault injected by SEGSERVE_DEBUG_FAULTS: {item}"
        return Fault(error=lambda: InjectedFault(message))
    if action.startswith("delay="):
        try:
            seconds = float(action.removeprefix("delay="))
        except ValueError:
            seconds = math.nan
        if seconds >= 0:  # NaN fails this too
            return Fault(delay_s=seconds)
    raise ValueError(f"fault {item!r}: the action is `error` or `delay=<seconds>`; got {action!r}")
