"""Soak a running segserve: many requests, 10% of them invalid; RSS growth and status counts.

    .venv/bin/python -m bench.soak --url http://127.0.0.1:8000            # 5,000 requests
    .venv/bin/python -m bench.soak --requests 300 --concurrency 4 --pid 1234

Valid requests rotate over a few photo-like images, sizes, the three request forms and the
output formats; invalid ones rotate over kinds the API answers with a 4xx (not an image,
a truncated PNG, an empty body, a GIF, an unknown model, a bad query value). The server's
resident memory (VmRSS from /proc/<pid>/status: the pid given, else the process listening on
the URL's port) is sampled throughout; its growth is counted from the end of the warm-up, so
one-time costs (allocator pools, caches, lazily built kernels) are not taken for a leak.

Writes bench/results/soak-<timestamp>.json and exits 1 when any answer was a 5xx, when an
invalid request was answered 2xx, or when RSS grew past --max-growth-mb.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from PIL import Image

from bench.images import photo_like
from bench.report import RESULTS_DIR, save_json


@dataclass(frozen=True)
class Call:
    kind: str  # "valid:<form>" or "invalid:<why>"
    path: str
    content: bytes
    headers: dict[str, str]
    files: dict[str, tuple[str, bytes, str]] | None = None


def _jpeg(width: int, height: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo_like(width, height, seed)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _png(width: int, height: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo_like(width, height, seed)).save(buffer, "PNG")
    return buffer.getvalue()


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (8, 8)).save(buffer, "GIF")
    return buffer.getvalue()


def valid_calls(endpoint: str) -> list[Call]:
    images = [_jpeg(320, 240, 1), _png(200, 150, 2), _jpeg(160, 256, 3)]
    fmts = ["png", "json"] if endpoint == "/segment" else ["json", "png"]
    calls = []
    for i, image in enumerate(images):
        fmt = fmts[i % len(fmts)]
        path = f"{endpoint}?format={fmt}"
        calls += [
            Call("valid:raw", path, image, {"Content-Type": "image/jpeg"}),
            Call("valid:multipart", path, b"", {}, {"image": ("i.jpg", image, "image/jpeg")}),
            Call(
                "valid:base64",
                path,
                json.dumps({"image": base64.b64encode(image).decode()}).encode(),
                {"Content-Type": "application/json"},
            ),
        ]
    return calls


def invalid_calls(endpoint: str) -> list[Call]:
    png = _png(64, 48, 4)
    raw = {"Content-Type": "image/png"}
    return [
        Call("invalid:not-an-image", endpoint, b"definitely not an image" * 10, raw),
        Call("invalid:truncated", endpoint, png[: len(png) // 2], raw),
        Call("invalid:empty", endpoint, b"", raw),
        Call("invalid:gif", endpoint, _gif(), {"Content-Type": "image/gif"}),
        Call("invalid:unknown-model", f"{endpoint}?model=no-such-model", png, raw),
        Call("invalid:bad-query", f"{endpoint}?tolerance=-1", png, raw),
        Call("invalid:bad-json", endpoint, b'{"image": 12', {"Content-Type": "application/json"}),
    ]


def plan(count: int, invalid_share: float, endpoint: str) -> list[Call]:
    """``count`` calls, every ``round(1 / invalid_share)``-th one invalid, in a fixed order."""
    good, bad = valid_calls(endpoint), invalid_calls(endpoint)
    every = max(1, round(1 / invalid_share)) if invalid_share > 0 else 0
    calls = []
    for i in range(count):
        if every and i % every == every - 1:
            calls.append(bad[(i // every) % len(bad)])
        else:
            calls.append(good[i % len(good)])
    return calls


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
    return int(match.group(1)) * 1024


def listening_pid(port: int) -> int:
    """The pid of the process with a socket listening on ``port`` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:  # gone, or not ours to read
            continue
    raise RuntimeError(f"no process of ours listens on port {port}; pass --pid")


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)  # "<kind> <status>"
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # transport errors

    def record(self, call: Call, status: int, seconds: float) -> None:
        self.statuses[f"{call.kind} {status}"] += 1
        self.latencies.append(seconds)


async def send(client: httpx.AsyncClient, call: Call, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        response = await client.post(
            call.path, content=call.content or None, headers=call.headers, files=call.files
        )
    except httpx.HTTPError as exc:
        tally.failures[f"{call.kind} {type(exc).__name__}"] += 1
        return
    tally.record(call, response.status_code, time.perf_counter() - started)


async def run(calls: list[Call], concurrency: int, url: str, headers: dict[str, str]) -> Tally:
    tally = Tally()
    queue: asyncio.Queue[Call] = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, timeout=300, limits=limits, headers=headers
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                await send(client, queue.get_nowait(), tally)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


async def sample_rss(pid: int, every_s: float, samples: list[tuple[float, int]]) -> None:
    started = time.perf_counter()
    while True:
        samples.append((time.perf_counter() - started, rss_bytes(pid)))
        await asyncio.sleep(every_s)


def summarize(tally: Tally) -> dict[str, Any]:
    by_status: Counter[str] = Counter()
    for key, n in tally.statuses.items():
        by_status[key.rsplit(" ", 1)[1]] += n
    ordered = sorted(tally.latencies)
    return {
        "by_status": dict(sorted(by_status.items())),
        "by_kind_and_status": dict(sorted(tally.statuses.items())),
        "transport_errors": dict(tally.failures),
        "latency_ms": {
            "p50": round(ordered[len(ordered) // 2] * 1000, 1) if ordered else None,
            "p99": round(ordered[int(len(ordered) * 0.99)] * 1000, 1) if ordered else None,
            "max": round(ordered[-1] * 1000, 1) if ordered else None,
        },
    }


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    pid = args.pid or listening_pid(urlparse(args.url).port or 80)
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    calls = plan(args.requests, args.invalid_share, args.endpoint)
    warmup = calls[: args.warmup]
    main = calls[args.warmup :]
    started = time.perf_counter()
    warm = await run(warmup, args.concurrency, args.url, headers)
    baseline = rss_bytes(pid)
    samples: list[tuple[float, int]] = []
    sampler = asyncio.create_task(sample_rss(pid, args.sample_s, samples))
    tally = await run(main, args.concurrency, args.url, headers)
    sampler.cancel()
    final = rss_bytes(pid)
    mb = 1024 * 1024
    return {
        "url": args.url,
        "endpoint": args.endpoint,
        "pid": pid,
        "requests": args.requests,
        "warmup_requests": len(warmup),
        "concurrency": args.concurrency,
        "invalid_share": args.invalid_share,
        "seconds": round(time.perf_counter() - started, 1),
        "rss_mb": {
            "after_warmup": round(baseline / mb, 1),
            "final": round(final / mb, 1),
            "max": round(max([final, *(r for _, r in samples)]) / mb, 1),
            "growth_after_warmup": round((final - baseline) / mb, 1),
            "samples": [(round(t, 1), round(r / mb, 1)) for t, r in samples[:: args.keep_every]],
        },
        "warmup": summarize(warm),
        "measured": summarize(tally),
    }


def verdict(report: dict[str, Any], max_growth_mb: float) -> list[str]:
    problems = []
    for phase in ("warmup", "measured"):
        for key, n in report[phase]["by_kind_and_status"].items():
            kind, status = key.rsplit(" ", 1)
            if status.startswith("5"):
                problems.append(f"{phase}: {n} x {status} for {kind}")
            if kind.startswith("invalid:") and status.startswith("2"):
                problems.append(f"{phase}: {n} invalid requests ({kind}) answered {status}")
        if report[phase]["transport_errors"]:
            problems.append(f"{phase}: transport errors {report[phase]['transport_errors']}")
    growth = report["rss_mb"]["growth_after_warmup"]
    if growth > max_growth_mb:
        problems.append(f"RSS grew {growth} MB after warm-up (limit {max_growth_mb} MB)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running service")
    parser.add_argument("--requests", type=int, default=5000, help="total, warm-up included")
    parser.add_argument("--warmup", type=int, default=200, help="requests before the baseline")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--invalid-share", type=float, default=0.10)
    parser.add_argument("--endpoint", choices=["/segment", "/instances"], default="/segment")
    parser.add_argument("--pid", type=int, help="server pid (default: who listens on the port)")
    parser.add_argument("--api-key", help="sent as X-API-Key when the service needs one")
    parser.add_argument("--sample-s", type=float, default=0.5, help="RSS sampling period")
    parser.add_argument("--keep-every", type=int, default=4, help="store every n-th sample")
    parser.add_argument("--max-growth-mb", type=float, default=50.0)
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/)")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.requests:
        parser.error("--warmup must be at least 0 and less than --requests")
    report = asyncio.run(soak(args))
    problems = verdict(report, args.max_growth_mb)
    report["problems"] = problems
    out = save_json(report, args.out or RESULTS_DIR / f"soak-{time.strftime('%Y%m%dT%H%M%S')}.json")
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mb"}, indent=2))
    rss = {k: v for k, v in report["rss_mb"].items() if k != "samples"}
    print(f"RSS (MB): {rss}\nwritten to {out}")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
