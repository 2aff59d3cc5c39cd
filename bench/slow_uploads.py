"""Requests answered while slow clients trickle their uploads in, against none trickling.

K raw sockets send a request's headers and then a few body bytes a second; meanwhile normal
requests are timed, and the same requests are timed again with no trickle. With one decode
slot and a queue of one place, a trickled body that held either would stall the others; the
figure is the ratio of their median latencies (target: close to 1), and every trickle must
end with 408 once SEGSERVE_BODY_READ_TIMEOUT_S has passed.

    python -m bench.slow_uploads [--trickles 8] [--requests 10] [--read-timeout 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import httpx

from bench.images import jpeg_bytes, photo_like
from bench.report import RESULTS_DIR, save_json
from bench.run import machine
from bench.servers import ServerCommand, untrained_service


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--trickles", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--read-timeout", type=float, default=4.0)
    parser.add_argument("--name", default="slow-uploads")
    return parser.parse_args(argv)


async def _trickle(port: int, body: bytes) -> int:
    """Send the headers, then the body a few bytes a second; the status the service answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /segment HTTP/1.1\r\nHost: bench\r\nContent-Type: image/jpeg\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    await writer.drain()
    answer = asyncio.ensure_future(reader.readline())  # read while sending: the 408 comes early
    try:
        for k in range(0, len(body), 4):
            if answer.done():
                break
            writer.write(body[k : k + 4])
            await writer.drain()
            await asyncio.sleep(0.5)  # 8 bytes a second
    except ConnectionError:
        pass  # the service closed the connection after its answer
    try:
        status_line = await answer
    except ConnectionError:
        status_line = b""
    writer.close()
    return int(status_line.split()[1]) if status_line else 0


async def _timed_requests(base_url: str, image: bytes, count: int) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = await client.post("/segment", files={"image": ("i.jpg", image)})
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
    return latencies


async def _measure(command: ServerCommand, args: argparse.Namespace) -> dict[str, Any]:
    image = jpeg_bytes(photo_like(320, 240))
    await _timed_requests(command.base_url, image, 2)  # warm
    quiet = await _timed_requests(command.base_url, image, args.requests)
    trickles = [asyncio.ensure_future(_trickle(command.port, image)) for _ in range(args.trickles)]
    await asyncio.sleep(0.5)  # every trickle has sent its headers and is sending its body
    started = time.perf_counter()
    during = await _timed_requests(command.base_url, image, args.requests)
    statuses = await asyncio.gather(*trickles)
    return {
        "trickles": args.trickles,
        "read_timeout_s": args.read_timeout,
        "quiet_latency_s": quiet,
        "latency_during_trickles_s": during,
        "median_ratio_during_over_quiet": statistics.median(during) / statistics.median(quiet),
        "trickle_statuses": statuses,
        "trickles_ended_after_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    with untrained_service(
        args.model,
        # One decode slot and one queue place: a trickle holding either would block.
        max_concurrent_decodes="1",
        max_queue_size="1",
        body_read_timeout_s=str(args.read_timeout),
    ) as command:
        figures = asyncio.run(_measure(command, args))
    result = {"model": args.model, **figures, "machine": machine()}
    path = save_json(result, RESULTS_DIR / f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    all_408 = all(status == 408 for status in figures["trickle_statuses"])
    print(
        f"median latency of {args.requests} requests: "
        f"{statistics.median(figures['quiet_latency_s']):.3f} s alone, "
        f"{statistics.median(figures['latency_during_trickles_s']):.3f} s during "
        f"{args.trickles} trickled uploads (ratio "
        f"{figures['median_ratio_during_over_quiet']:.2f}); trickles answered "
        f"{sorted(set(figures['trickle_statuses']))}; written to {path}"
    )
    return 0 if all_408 else 1


if __name__ == "__main__":
    sys.exit(main())
