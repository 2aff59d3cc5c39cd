"""Shutdown, overload and bad model files against a real `segserve serve` process.

The model is a small untrained network; ``SEGSERVE_DEBUG_FAULTS=infer_batch:delay=...``
slows every batch down so that requests are surely in flight (or queued) when the test acts.
"""

from __future__ import annotations

import asyncio
import hashlib
import pickle
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
import torch
from torchvision.models import get_model

from bench.overload import raw_post
from tests.e2e.process import SEMANTIC, free_port, png, segserve, serve_until_ready

pytestmark = pytest.mark.e2e


async def post_all(base: str, count: int, body: bytes) -> list[tuple[httpx.Response, float]]:
    """``count`` concurrent POST /segment, each on its own connection, with its latency."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def one() -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            response = await client.post(
                "/segment", content=body, headers={"Content-Type": "image/png"}
            )
            return response, time.perf_counter() - started

        return list(await asyncio.gather(*(one() for _ in range(count))))


def test_sigterm_with_16_requests_in_flight_answers_all_and_exits_0(tmp_path: Path) -> None:
    base, proc = serve_until_ready(
        {"seg": SEMANTIC}, tmp_path, debug_faults="infer_batch:delay=0.5", shutdown_grace_s="60"
    )
    try:

        async def scenario() -> tuple[list[tuple[httpx.Response, float]], float, int]:
            requests = asyncio.create_task(post_all(base, 16, png(96, 64)))
            await asyncio.sleep(1.0)  # all 16 sent; 4 batches of 0.5 s or more: in flight
            signalled = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            # New work is refused: the port is closed to new connections, or gets a 503.
            try:
                async with httpx.AsyncClient(base_url=base, timeout=2) as client:
                    late = (await client.get("/readyz")).status_code
            except httpx.TransportError:
                late = 0
            return await requests, signalled, late

        started = time.perf_counter()
        answers, signalled, late = asyncio.run(scenario())
        assert [r.status_code for r, _ in answers] == [200] * 16
        assert late in (0, 503)
        # Some answers came after the signal: they were drained, not finished beforehand.
        assert max(started + s for _, s in answers) > signalled
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_shutdown_stops_within_the_grace_period(tmp_path: Path) -> None:
    # 12 requests, each batch takes over 1 s, the grace is 2 s: not all can finish.
    base, proc = serve_until_ready(
        {"seg": SEMANTIC}, tmp_path, debug_faults="infer_batch:delay=1", shutdown_grace_s="2"
    )
    try:

        async def scenario() -> tuple[float, list[tuple[httpx.Response, float]]]:
            requests = asyncio.create_task(post_all(base, 12, png(96, 64)))
            await asyncio.sleep(1.0)
            signalled = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
            return time.perf_counter() - signalled, await requests

        elapsed, answers = asyncio.run(scenario())
        # The grace, plus at most the batch running in the model's thread, plus exit costs.
        assert elapsed < 2 + 1 + 1.5, f"exit took {elapsed:.1f} s after SIGTERM"
        statuses = [r.status_code for r, _ in answers]
        # Batches that started finish; what never reached the model is told to retry.
        assert set(statuses) == {200, 503}, statuses
        for response, _ in answers:
            if response.status_code == 503:
                assert response.json()["error"]["code"] == "not_ready"
                assert "SEGSERVE_SHUTDOWN_GRACE_S" in response.json()["error"]["message"]
                assert "retry-after" in response.headers
    finally:
        if proc.poll() is None:
            proc.kill()


def test_at_three_times_capacity_a_real_server_rejects_with_fast_503s(tmp_path: Path) -> None:
    queue, batch = 8, 4
    capacity = queue + batch  # queued, and at most one batch in the model
    base, proc = serve_until_ready(
        {"seg": SEMANTIC}, tmp_path, max_queue_size=str(queue), debug_faults="infer_batch:delay=2"
    )
    try:
        body = png(32, 32)

        async def scenario() -> list[tuple[int, dict[str, str], float]]:
            # Occupy the model and fill the queue, then send the rest of 3 x capacity at once.
            admitted = asyncio.create_task(post_all(base, capacity, body))
            await asyncio.sleep(1.0)
            extra = [raw_post(base, "/segment", body, "image/png") for _ in range(2 * capacity)]
            rejected = await asyncio.gather(*extra)
            await admitted
            return list(rejected)

        rejected = asyncio.run(scenario())
        for status, headers, _ in rejected:
            assert status == 503 and int(headers["retry-after"]) >= 1
        latencies = sorted(seconds for *_, seconds in rejected)
        ms = [round(s * 1000) for s in latencies]
        print(f"rejections of {len(ms)} concurrent requests: {ms} ms")
        # The target is 50 ms (met on a quiet machine: see docs/api.md); the bound here leaves
        # room for a busy CI runner and still tells "refused at once" from "waited for the
        # model" (2 s).
        assert latencies[-1] < 0.25, f"rejections took {ms} ms"
    finally:
        proc.kill()
        proc.wait()


def tampered(weights: Path) -> str:
    torch.manual_seed(0)
    model = get_model(
        "lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=2
    )
    torch.save(model.state_dict(), weights / "mine.pth")
    digest = hashlib.sha256((weights / "mine.pth").read_bytes()).hexdigest()
    with (weights / "mine.pth").open("ab") as f:
        f.write(b"\0")
    return f'sha256 = "{digest}"\n'


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled code ran",))


def code_not_tensors(weights: Path) -> str:
    (weights / "mine.pth").write_bytes(pickle.dumps(_RunsCode(), protocol=2))
    return ""


@pytest.mark.parametrize(
    ("make_file", "status", "says"),
    [(tampered, 2, "SHA-256"), (code_not_tensors, 3, "not a loadable state_dict")],
)
def test_a_bad_model_file_stops_startup_naming_it(
    tmp_path: Path, make_file: object, status: int, says: str
) -> None:
    models, weights = tmp_path / "models", tmp_path / "weights"
    models.mkdir()
    weights.mkdir()
    pin = make_file(weights)  # type: ignore[operator]
    (models / "seg.toml").write_text(
        'task = "semantic"\narchitecture = "lraspp_mobilenet_v3_large"\n'
        f'checkpoint = "mine.pth"\ncategories = ["bg", "thing"]\n{pin}'
    )
    env = {"SEGSERVE_MODELS_DIR": str(models), "SEGSERVE_WEIGHTS_DIR": str(weights)}
    proc = segserve("serve", "--port", str(free_port()), env=env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == status, out
    assert str(weights / "mine.pth") in out and says in out
    assert "unpickled code ran" not in out


def batches_run(base: str) -> float:
    """How many batches the model has been sent, from the service's /metrics."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    match = re.search(r'^segserve_batch_size_count\{model="seg"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_a_client_gone_while_queued_costs_a_real_server_no_model_time(tmp_path: Path) -> None:
    base, proc = serve_until_ready(
        {"seg": SEMANTIC}, tmp_path, debug_faults="infer_batch:delay=1.5"
    )
    try:

        async def scenario() -> None:
            before = batches_run(base)
            body = png(64, 48)
            blocker = asyncio.create_task(raw_post(base, "/segment", body, "image/png"))
            await asyncio.sleep(0.5)  # the blocker is in the model
            # A second request, queued behind it; its client hangs up.
            host, port = base.removeprefix("http://").split(":")
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.close()
            status, _, _ = await blocker
            assert status == 200
            # Then one more, late enough that the abandoned one, had it stayed queued, would
            # have run in a batch of its own: this one runs alone, the abandoned one never.
            await asyncio.sleep(0.5)
            status, _, _ = await raw_post(base, "/segment", body, "image/png")
            assert status == 200
            assert batches_run(base) - before == 2

        asyncio.run(scenario())
    finally:
        proc.kill()
        proc.wait()
    assert "status=499" in (tmp_path / "segserve.log").read_text()
