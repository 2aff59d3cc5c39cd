"""Throughput of N images in one request against the same N images as N concurrent requests.

Both go to the same service process, in alternating rounds (singles, then one many-images
request, then singles again, ...), so the drift of a shared machine hits both alike; the
ratio of the round medians is the figure (target: many / singles >= 0.95 at N = 8). Every
answer is checked: the many-images entries must equal the single answers.

    python -m bench.many_images [--model deeplabv3_mobilenet_v3_large] [--images 8]
        [--rounds 7] [--size 640x480] [--format json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import time
from typing import Any

import httpx

from bench.images import jpeg_bytes, photo_like
from bench.report import RESULTS_DIR, save_json
from bench.run import machine
from bench.servers import task_of, untrained_service


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3_mobilenet_v3_large")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of each image")
    parser.add_argument("--format", default="json", choices=["json", "png"])
    parser.add_argument("--name", default="many-images")
    return parser.parse_args(argv)


async def _singles(
    client: httpx.AsyncClient, path: str, images: list[bytes], params: dict[str, str]
) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(client.post(path, params=params, files={"image": ("i.jpg", image)}) for image in images)
    )
    wall = time.perf_counter() - started
    for response in responses:
        response.raise_for_status()
    return wall, responses


async def _many(
    client: httpx.AsyncClient, path: str, images: list[bytes], params: dict[str, str]
) -> tuple[float, dict[str, Any]]:
    files = [("image", (f"{k}.jpg", image)) for k, image in enumerate(images)]
    started = time.perf_counter()
    response = await client.post(path, params=params, files=files)
    wall = time.perf_counter() - started
    response.raise_for_status()
    return wall, response.json()


def _same_answers(singles: list[Any], many: dict[str, Any], fmt: str) -> bool:
    entries = many["results"]
    if fmt == "json":
        return [r.json() for r in singles] == entries
    return [r.content for r in singles] == [base64.b64decode(e["data"]) for e in entries]


async def _measure(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    width, height = (int(v) for v in args.size.split("x"))
    images = [jpeg_bytes(photo_like(width, height, seed=k)) for k in range(args.images)]
    path = "/segment" if task_of(args.model) == "semantic" else "/instances"
    params = {"format": args.format}
    if path == "/instances" and args.format == "json":
        params["mask_encoding"] = "rle"
    singles_s, many_s = [], []
    agree = True
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await _singles(client, path, images, params)  # warm: first requests pay for lazy setup
        for round_ in range(args.rounds):
            wall_singles, singles = await _singles(client, path, images, params)
            wall_many, many = await _many(client, path, images, params)
            agree = agree and _same_answers(singles, many, args.format)
            singles_s.append(wall_singles)
            many_s.append(wall_many)
            print(
                f"round {round_ + 1}/{args.rounds}: {args.images} singles {wall_singles:.2f} s, "
                f"one request of {args.images} {wall_many:.2f} s",
                flush=True,
            )
    ratios = [s / m for s, m in zip(singles_s, many_s, strict=True)]
    return {
        "images_per_request": args.images,
        "image_size": args.size,
        "format": args.format,
        "singles_s": singles_s,
        "many_s": many_s,
        "singles_images_per_s": args.images / statistics.median(singles_s),
        "many_images_per_s": args.images / statistics.median(many_s),
        "ratio_many_over_singles_median_of_rounds": statistics.median(ratios),
        "answers_equal": agree,
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    with untrained_service(args.model) as command:
        figures = asyncio.run(_measure(command.base_url, args))
    result = {"model": args.model, **figures, "machine": machine()}
    path = save_json(result, RESULTS_DIR / f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    print(
        f"{args.model}: {figures['singles_images_per_s']:.2f} images/s as {args.images} "
        f"concurrent requests, {figures['many_images_per_s']:.2f} as one request; "
        f"ratio (median of rounds) {figures['ratio_many_over_singles_median_of_rounds']:.3f}; "
        f"answers equal: {figures['answers_equal']}; written to {path}"
    )
    return 0 if figures["answers_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
