"""What the Python client adds to a request's latency, against plain httpx on the same request.

One service process; requests alternate between ``segserve_client.Client.segment`` (which
also decodes the answer into a numpy class map) and a plain ``httpx.Client.post`` of the same
bytes with the same query (which only reads the body). The figure is the ratio of the median
latencies, minus one (target: under 2%). On a shared machine that ratio is noisy, so the
client's own work is also timed without a server: both callers against an in-process
transport replaying the service's answer.

    python -m bench.client_overhead [--requests 40] [--size 320x240] [--format png]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import httpx
from segserve_client import Client

from bench.images import jpeg_bytes, photo_like
from bench.report import RESULTS_DIR, save_json
from bench.run import machine
from bench.servers import untrained_service


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    parser.add_argument("--format", default="png", choices=["png", "json"])
    parser.add_argument("--name", default="client-overhead")
    return parser.parse_args(argv)


def _measure(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    width, height = (int(v) for v in args.size.split("x"))
    image = jpeg_bytes(photo_like(width, height))
    params = {"format": args.format}
    plain_s: list[float] = []
    client_s: list[float] = []
    with httpx.Client(base_url=base_url, timeout=120) as plain, Client(base_url) as client:

        def by_client() -> float:
            started = time.perf_counter()
            result = client.segment(image, format=args.format)
            _ = result.class_map  # decoded, as a caller would use it
            return time.perf_counter() - started

        def by_httpx() -> float:
            started = time.perf_counter()
            response = plain.post("/segment", params=params, files={"image": ("i.jpg", image)})
            response.raise_for_status()
            _ = response.content
            return time.perf_counter() - started

        for _ in range(3):  # warm both connections and the model
            by_client(), by_httpx()
        for k in range(args.requests):
            # Alternate which goes first, so neither always follows the other.
            first, second = (by_client, by_httpx) if k % 2 == 0 else (by_httpx, by_client)
            a, b = first(), second()
            (client_s if first is by_client else plain_s).append(a)
            (plain_s if first is by_client else client_s).append(b)
    return {
        "requests_each": args.requests,
        "image_size": args.size,
        "format": args.format,
        "plain_httpx_s": plain_s,
        "client_s": client_s,
        "median_plain_s": statistics.median(plain_s),
        "median_client_s": statistics.median(client_s),
        "overhead": statistics.median(client_s) / statistics.median(plain_s) - 1,
    }


def _without_server(base_url: str, args: argparse.Namespace) -> dict[str, float]:
    """One real answer from the service, then both callers timed against a transport that
    replays it."""
    width, height = (int(v) for v in args.size.split("x"))
    image = jpeg_bytes(photo_like(width, height))
    response = httpx.post(
        base_url + "/segment",
        params={"format": args.format},
        files={"image": ("i.jpg", image)},
        timeout=120,
    )
    response.raise_for_status()
    return _client_work_ms(image, args.format, response.content, response.headers["content-type"])


def _client_work_ms(image: bytes, fmt: str, body: bytes, media_type: str) -> dict[str, float]:
    """The client's own time a request, without a server: both send the same request to an
    in-process transport that answers ``body`` at once (no network, no model, no noise)."""

    def answer(request: httpx.Request) -> httpx.Response:
        request.read()
        return httpx.Response(200, content=body, headers={"content-type": media_type})

    transport = httpx.MockTransport(answer)
    client = Client("http://bench", transport=transport)
    plain = httpx.Client(base_url="http://bench", transport=transport)
    calls = {
        "client": lambda: client.segment(image, format=fmt).class_map,
        "plain_httpx": lambda: (
            plain.post(
                "/segment", params={"format": fmt}, files={"image": ("i.jpg", image)}
            ).content
        ),
    }
    times = {}
    for name, call in calls.items():
        for _ in range(20):
            call()
        started = time.perf_counter()
        for _ in range(200):
            call()
        times[f"{name}_ms"] = (time.perf_counter() - started) / 200 * 1000
    client.close()
    plain.close()
    return times


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    with untrained_service(args.model) as command:
        figures = _measure(command.base_url, args)
        figures["without_server"] = _without_server(command.base_url, args)
    result = {"model": args.model, **figures, "machine": machine()}
    path = save_json(result, RESULTS_DIR / f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    print(
        f"median latency over {args.requests} requests each: plain httpx "
        f"{figures['median_plain_s'] * 1000:.1f} ms, client {figures['median_client_s'] * 1000:.1f}"
        f" ms (decoding included): overhead {figures['overhead'] * 100:+.2f}%; without a "
        f"server, the client's own work {figures['without_server']['client_ms']:.2f} ms a "
        f"request against plain httpx's {figures['without_server']['plain_httpx_ms']:.2f} ms; "
        f"written to {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
