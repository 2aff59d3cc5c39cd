"""The soak script's plan, process lookup and verdict (the soak itself runs against a server)."""

from __future__ import annotations

import os
import socket
from collections import Counter

import pytest

from bench.soak import Tally, listening_pid, plan, rss_bytes, summarize, verdict


def test_the_plan_has_the_asked_share_of_invalid_requests_of_every_kind() -> None:
    calls = plan(1000, 0.10, "/segment")
    kinds = Counter(c.kind.split(":")[0] for c in calls)
    assert kinds == {"valid": 900, "invalid": 100}
    assert len({c.kind for c in calls if c.kind.startswith("invalid")}) == 7
    assert {c.kind for c in calls if c.kind.startswith("valid")} == {
        "valid:raw",
        "valid:multipart",
        "valid:base64",
    }
    assert all(c.kind.startswith("valid") for c in plan(50, 0.0, "/instances"))


def test_the_server_is_found_by_its_listening_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert listening_pid(listener.getsockname()[1]) == os.getpid()
    assert rss_bytes(os.getpid()) > 10 * 1024 * 1024


def test_a_free_port_is_an_error_that_says_to_pass_the_pid() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening
    with pytest.raises(RuntimeError, match="--pid"):
        listening_pid(port)


def report(statuses: dict[str, int], growth: float) -> dict[str, object]:
    tally = Tally(statuses=Counter(statuses), latencies=[0.1] * sum(statuses.values()))
    return {
        "warmup": summarize(Tally()),
        "measured": summarize(tally),
        "rss_mb": {"growth_after_warmup": growth},
    }


def test_the_verdict_flags_5xx_accepted_invalid_input_and_growth() -> None:
    clean = report({"valid:raw 200": 90, "invalid:gif 415": 10}, growth=3.0)
    assert verdict(clean, 50) == []
    bad = report({"valid:raw 500": 1, "invalid:empty 200": 2}, growth=80.0)
    problems = verdict(bad, 50)
    assert len(problems) == 3
    assert any("500" in p for p in problems) and any("invalid" in p for p in problems)
    assert any("RSS grew 80.0 MB" in p for p in problems)
