"""The standard benchmark suite (``make bench``): segserve against the raw model and its peers.

For each model, in one run, on the same JPEG and the same seeded untrained weights:

- ``raw``: torchvision's reference pipeline in-process, no HTTP (the ceiling), at batch 1 and
  larger batches;
- ``service``: ``segserve serve`` in a subprocess over HTTP;
- ``naive``: a tutorial-style FastAPI server (one forward per request in the thread pool);
- ``litserve``: LitServe with its dynamic batching on;

then, with ``--compare-precision`` (bf16 for deeplabv3_resnet50 by default), ``service`` and
``raw`` again at that precision. Each server runs alone: start, one checked request, a
closed-loop concurrency sweep, an open-loop point at a fixed rate, stop. Results go to
``bench/results/<name>/`` (results.json, results.md, <model>.png).

    python -m bench.run                              # the standard suite (~1 h on 2 cores)
    python -m bench.run --quick --models deeplabv3_mobilenet_v3_large --image-size 320x240
    python -m bench.run --models deeplabv3_resnet50 --servers service,raw --concurrency 1,8
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import gc
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

from app.memory import keep_freed_memory
from bench import raw as raw_bench
from bench.agreement import agreement
from bench.baselines.pipeline import PRECISIONS, InstanceCut, ReferencePipeline, decode
from bench.images import jpeg_bytes, photo_like
from bench.loadgen import Send, closed_loop, multipart_request, open_loop
from bench.paired import RAW_BLOCK_SHARE, PairedPlan, RawBlock, paired_rounds
from bench.ratios import TARGET_CONCURRENCY, compute_ratios
from bench.report import RESULTS_DIR, model_table, ratio_table, write_results
from bench.servers import (
    REPO_ROOT,
    RunningServer,
    ServerCommand,
    ServerStartError,
    free_port,
    shipped_batching,
    task_of,
    write_model_toml,
)

SERVERS = ("raw", "service", "naive", "litserve")


@dataclass(frozen=True)
class ModelPlan:
    """A model's defaults in the standard suite, chosen so the suite ends in ~1 h on 2 cores.

    A deeplabv3_resnet50 forward takes ~1.7 s there and Mask R-CNN's ~5 s: a closed-loop point
    at concurrency c spends about c forwards filling the pipeline and c draining it, so Mask
    R-CNN gets fewer levels and fewer answers per point. The run at the compared precision
    needs only concurrency 8 for its target (and 1 for latency alone).
    """

    concurrency: tuple[int, ...]
    compare_precision: str | None = None
    compare_concurrency: tuple[int, ...] = (1, 8)
    min_requests: int | None = None  # None: the suite's default


STANDARD_PLANS = {
    "deeplabv3_resnet50": ModelPlan((1, 2, 4, 8, 16), compare_precision="bf16"),
    "deeplabv3_mobilenet_v3_large": ModelPlan((1, 2, 4, 8, 16)),
    "maskrcnn_resnet50_fpn_v2": ModelPlan((1, 4, 8), min_requests=4),
}


@dataclass(frozen=True)
class PointSettings:
    duration_s: float
    min_requests: int
    warmup_s: float
    raw_duration_s: float
    open_load: float  # offered rate as a fraction of raw's best throughput; 0 = no open loop
    poisson: bool


STANDARD_POINTS = PointSettings(12.0, 8, 3.0, 10.0, 0.7, True)
QUICK_POINTS = PointSettings(3.0, 3, 0.5, 2.0, 0.7, True)
QUICK_CONCURRENCY = (1, 4)


def _int_list(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"want positive integers like 1,2,4; got {text!r}")
    return values


def _name_list(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(v.strip() for v in text.split(",") if v.strip())
        if bad := [n for n in names if n not in allowed]:
            raise argparse.ArgumentTypeError(
                f"unknown: {', '.join(bad)}; choose from {', '.join(allowed)}"
            )
        return names

    return parse


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"want WIDTHxHEIGHT like 640x480; got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"image sides must be positive; got {text!r}")
    return width, height


def env_pair(text: str) -> tuple[str, str]:
    """An argparse type for ``--env KEY=VALUE``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"want KEY=VALUE; got {text!r}")
    return key, value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        type=_name_list(list(STANDARD_PLANS) + _other_models()),
        default=tuple(STANDARD_PLANS),
        help="comma-separated (default: all three)",
    )
    parser.add_argument(
        "--servers",
        type=_name_list(SERVERS),
        default=SERVERS,
        help="comma-separated subset of raw,service,naive,litserve",
    )
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        help="closed-loop levels, e.g. 1,2,4,8,16 (default: per model)",
    )
    parser.add_argument("--duration", type=float, help="seconds measured per load point")
    parser.add_argument("--min-requests", type=int, help="answers a point measures at least")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per load point")
    parser.add_argument(
        "--open-load",
        type=float,
        help="open-loop rate as a fraction of raw's best images/s (0: none)",
    )
    parser.add_argument("--open-rate", type=float, help="open-loop rate in requests/s (fixed)")
    parser.add_argument(
        "--fixed-interval",
        action="store_true",
        help="open loop at fixed intervals instead of Poisson arrivals",
    )
    parser.add_argument("--image-size", type=_size, default=(640, 480), help="WIDTHxHEIGHT")
    parser.add_argument("--image-seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="fp32",
        help="precision of every server (SEGSERVE_PRECISION for the service)",
    )
    parser.add_argument(
        "--compare-precision",
        choices=[*sorted(PRECISIONS), "none"],
        help="also run service and raw at this precision "
        "(default: bf16 for deeplabv3_resnet50 only)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--seed", type=int, default=0, help="SEGSERVE_SEED for the weights")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch threads per server (SEGSERVE_TORCH_THREADS); 0: default",
    )
    parser.add_argument(
        "--litserve-fast-queue",
        action="store_true",
        help="LitServe's ZeroMQ queue (its option for >100 requests/s) instead of its default",
    )
    parser.add_argument(
        "--raw-channels-last",
        action="store_true",
        help="run raw in NHWC memory format (a stricter ceiling when the service uses it)",
    )
    parser.add_argument(
        "--raw-keep-freed-memory",
        action="store_true",
        help="give raw (this process) the service's SEGSERVE_KEEP_FREED_MEMORY malloc "
        "options (a stricter ceiling)",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=InstanceCut.score_threshold,
        help="instance requests' score_threshold",
    )
    parser.add_argument(
        "--env",
        type=env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the service",
    )
    parser.add_argument(
        "--paired-rounds",
        type=int,
        help="rounds of each server's concurrency-8 point between raw blocks, for ratios "
        "with the drift cancelled (bench/paired.py; default 2, --quick 0; 0: off)",
    )
    parser.add_argument("--name", help="results folder under bench/results (default: time)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: concurrency 1,4, seconds-long points"
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=600.0,
        help="seconds a server may take to become ready",
    )
    return parser.parse_args(argv)


def _other_models() -> list[str]:
    from app.predictors.repository import builders_for

    return builders_for("semantic") + builders_for("instance")


# ------------------------------------------------------------------------------- settings


def point_settings(args: argparse.Namespace) -> PointSettings:
    base = QUICK_POINTS if args.quick else STANDARD_POINTS
    return PointSettings(
        duration_s=base.duration_s if args.duration is None else args.duration,
        min_requests=base.min_requests if args.min_requests is None else args.min_requests,
        warmup_s=base.warmup_s if args.warmup is None else args.warmup,
        raw_duration_s=base.raw_duration_s if args.duration is None else args.duration,
        open_load=base.open_load if args.open_load is None else args.open_load,
        poisson=not args.fixed_interval,
    )


def plan_for(model: str, args: argparse.Namespace) -> ModelPlan:
    """The model's standard plan with the command line's choices applied."""
    default = STANDARD_PLANS.get(model, ModelPlan((1, 2, 4, 8, 16)))
    concurrency = default.concurrency
    compare_concurrency = default.compare_concurrency
    if args.concurrency or args.quick:
        concurrency = compare_concurrency = args.concurrency or QUICK_CONCURRENCY
    compared = default.compare_precision
    if args.compare_precision is not None:
        compared = None if args.compare_precision == "none" else args.compare_precision
    if compared == args.precision:
        compared = None
    min_requests = None if args.quick or args.min_requests else default.min_requests
    return ModelPlan(tuple(concurrency), compared, tuple(compare_concurrency), min_requests)


def raw_batch_sizes(task: str, quick: bool) -> tuple[int, ...]:
    if quick:
        return (1, 2)
    return (1, 2, 4) if task == "semantic" else (1, 2)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        "",
    )
    quota = _read("/sys/fs/cgroup/cpu.max").strip()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu_model or platform.processor(),
        "cores usable": len(os.sched_getaffinity(0)),
        "cgroup cpu.max": quota or "n/a",
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads (bench process)": torch.get_num_threads(),
        "load average at start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


# -------------------------------------------------------------------------------- servers


def request_for(task: str, image: bytes, score_threshold: float) -> Send:
    """The same request for every server: PNG class map, or JSON instances with RLE masks."""
    if task == "semantic":
        return multipart_request("/segment", image, params={"format": "png"})
    params = {"format": "json", "mask_encoding": "rle", "score_threshold": str(score_threshold)}
    return multipart_request("/instances", image, params=params)


def server_command(
    kind: str, toml: Path, precision: str, args: argparse.Namespace, max_concurrency: int
) -> ServerCommand:
    port = free_port()
    python = sys.executable
    if kind == "service":
        env = {
            "SEGSERVE_MODELS_DIR": str(toml.parent),
            "SEGSERVE_WEIGHTS_DIR": str(toml.parent),
            "SEGSERVE_ALLOW_DOWNLOAD": "false",
            "SEGSERVE_HOST": "127.0.0.1",
            "SEGSERVE_PORT": str(port),
            "SEGSERVE_SEED": str(args.seed),
            "SEGSERVE_DEVICE": args.device,
            "SEGSERVE_PRECISION": precision,
            "SEGSERVE_LOG_LEVEL": "warning",
            "SEGSERVE_API_KEY": "",
            # Never shed load in a benchmark: every point keeps max_concurrency in flight.
            "SEGSERVE_MAX_QUEUE_SIZE": str(max(64, 2 * max_concurrency)),
        }
        if args.torch_threads:
            env["SEGSERVE_TORCH_THREADS"] = str(args.torch_threads)
        env.update(dict(args.env))
        # The installed console script, as an operator starts it (`python -m app` without one).
        script = Path(python).with_name("segserve")
        argv = [str(script), "serve"] if script.is_file() else [python, "-m", "app", "serve"]
        return ServerCommand(kind, argv, port, "/readyz", env)
    common = [
        "--model-toml",
        str(toml),
        "--seed",
        str(args.seed),
        "--device",
        args.device,
        "--precision",
        precision,
        "--torch-threads",
        str(args.torch_threads),
        "--score-threshold",
        str(args.score_threshold),
        "--port",
        str(port),
    ]
    if kind == "naive":
        argv = [python, "-m", "bench.baselines.naive_server", *common]
        return ServerCommand(kind, argv, port, "/healthz")
    batching = shipped_batching(toml.stem)
    argv = [
        python,
        "-m",
        "bench.baselines.litserve_server",
        *common,
        # The service's own batching limits, so both batch alike.
        "--max-batch-size",
        str(int(batching.get("max_batch_size", 8))),
        "--batch-timeout",
        str(float(batching.get("max_wait_ms", 5.0)) / 1000),
        *(["--fast-queue"] if args.litserve_fast_queue else []),
    ]
    return ServerCommand(kind, argv, port, "/health")


class CheckFailed(RuntimeError):
    """A server's first answer was not a success: it is not measured."""


async def _model_info(client: httpx.AsyncClient, model: str) -> dict[str, Any] | None:
    """What the service's /models says about the model (precision, batching, ...)."""
    try:
        response = await client.get("/models")
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    entries = body.get("models", body) if isinstance(body, dict) else body
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == model:
            return entry
    return None


def _say(kind: str, load: str, point: dict[str, Any]) -> None:
    p99 = point["latency_s"]["p99"]
    p99_text = "-" if p99 is None else f"{p99:.2f} s"
    print(
        f"  {kind} {load}: {point['throughput_ips']:.3f} img/s, p99 {p99_text}, "
        f"errors {point['errors'] or 0}",
        flush=True,
    )


async def exercise_server(
    base_url: str,
    kind: str,
    model: str,
    send: Send,
    reference: Any,
    task: str,
    concurrency: Sequence[int],
    settings: PointSettings,
    open_rate: float | None,
    paired: PairedPlan | None = None,
) -> dict[str, Any]:
    """One checked request, the closed-loop sweep (its ``paired`` point between raw blocks),
    then the open-loop point."""
    limits = httpx.Limits(max_connections=max(concurrency) + 64, max_keepalive_connections=None)
    timeout = httpx.Timeout(900.0, connect=30.0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        first = await send(client)
        if first.status_code != 200:
            raise CheckFailed(f"{kind}: the check request got {first.status_code}: {first.text}")
        result: dict[str, Any] = {"agreement": agreement(task, first.content, reference)}
        if kind == "service":
            result["model_info"] = await _model_info(client, model)
        result["closed"] = []
        for level in concurrency:

            def measure_point(level: int = level) -> Awaitable[dict[str, Any]]:
                return closed_loop(
                    client,
                    send,
                    concurrency=level,
                    duration_s=settings.duration_s,
                    min_requests=settings.min_requests,
                    warmup_s=settings.warmup_s,
                )

            if paired is not None and level == paired.concurrency:
                points, result["paired"] = await paired_rounds(measure_point, paired)
                # The sweep's point; every round's throughput is in result["paired"].
                point = points[0]
            else:
                point = await measure_point()
            result["closed"].append(point)
            _say(kind, f"c={level}", point)
        result["open"] = []
        if open_rate:
            point = await open_loop(
                client,
                send,
                rate=open_rate,
                duration_s=settings.duration_s,
                warmup_s=settings.warmup_s,
                min_requests=settings.min_requests,
                poisson=settings.poisson,
            )
            result["open"].append(point)
            _say(kind, f"open {open_rate:.3f}/s", point)
    return result


# ---------------------------------------------------------------------------------- suite


def run_raw(
    toml: Path,
    image: bytes,
    precision: str,
    args: argparse.Namespace,
    settings: PointSettings,
    *,
    measure: bool = True,
) -> tuple[dict[str, Any] | None, Any, ReferencePipeline]:
    """Raw throughput at ``precision`` (if ``measure``), its result for ``image``, and the
    pipeline (for the paired raw blocks)."""
    pipeline = ReferencePipeline(
        toml,
        seed=args.seed,
        device=args.device,
        precision=precision,
        cut=InstanceCut(score_threshold=args.score_threshold),
        channels_last=args.raw_channels_last,
    )
    reference = pipeline.infer([decode(image)])[0]
    measured = None
    if measure:
        sizes = raw_batch_sizes(pipeline.task, args.quick)
        measured = {
            "precision": precision,
            "channels_last": args.raw_channels_last,
            "keeps_freed_memory": args.raw_keep_freed_memory,
            **raw_bench.measure(pipeline, image, sizes, duration_s=settings.raw_duration_s),
        }
    return measured, reference, pipeline


def paired_plan(
    blocks: Sequence[tuple[str, dict[str, Any] | None, ReferencePipeline]],
    image: bytes,
    levels: Sequence[int],
    rounds: int,
    settings: PointSettings,
) -> PairedPlan | None:
    """Raw blocks (label, raw's measurement, its pipeline) around the point nearest c=8."""
    level = max((c for c in levels if c <= TARGET_CONCURRENCY), default=None)
    if not blocks or rounds < 1 or level is None:
        return None  # no raw to pair with (raw not run), or pairing switched off
    if any(measured is None for _, measured, _ in blocks):
        return None
    raw_blocks = [
        RawBlock(
            label,
            pipeline,
            image,
            batch_size=measured["best_batch_size"],
            duration_s=RAW_BLOCK_SHARE * settings.raw_duration_s,
        )
        for label, measured, pipeline in blocks
        if measured is not None
    ]
    return PairedPlan(level, rounds, raw_blocks)


def run_model(
    model: str,
    args: argparse.Namespace,
    settings: PointSettings,
    results: dict[str, Any],
    out_dir: Path,
    scratch: Path,
) -> None:
    plan = plan_for(model, args)
    if plan.min_requests is not None:
        settings = dataclasses.replace(settings, min_requests=plan.min_requests)
    task = task_of(model)
    width, height = args.image_size
    image = jpeg_bytes(photo_like(width, height, args.image_seed))
    toml = write_model_toml(scratch / model, model)
    send = request_for(task, image, args.score_threshold)
    entry: dict[str, Any] = {
        "task": task,
        "image": {"width": width, "height": height, "jpeg_bytes": len(image)},
        "concurrency": list(plan.concurrency),
        "precision": args.precision,
        "compare_precision": plan.compare_precision,
        "servers": {},
        "ratios": [],
    }
    results["models"][model] = entry
    servers = entry["servers"]
    print(f"== {model} ({task}), {width}x{height} JPEG of {len(image)} bytes", flush=True)

    # The fp32 raw result is what every server's first answer is compared with.
    with_raw = "raw" in args.servers
    raw, reference, pipeline = run_raw(
        toml, image, "fp32", args, settings, measure=with_raw and args.precision == "fp32"
    )
    if with_raw and args.precision != "fp32":
        raw, _, pipeline = run_raw(toml, image, args.precision, args, settings)
    # Raw at the compared precision is measured now too: the paired blocks need its batch size.
    compared_raw = None
    if plan.compare_precision and with_raw:
        compared_label = f"raw@{plan.compare_precision}"
        compared_raw = run_raw(toml, image, plan.compare_precision, args, settings)
        servers[compared_label] = compared_raw[0]
    if raw is not None:
        servers["raw"] = raw
        print(f"  raw: best {raw['best_ips']:.3f} img/s at batch {raw['best_batch_size']}")
    write_results(results, out_dir)
    rounds = args.paired_rounds if args.paired_rounds is not None else 0 if args.quick else 2

    open_rate = args.open_rate
    if open_rate is None and settings.open_load > 0 and raw is not None:
        open_rate = settings.open_load * raw["best_ips"]
    runs = [
        (kind, args.precision) for kind in ("service", "naive", "litserve") if kind in args.servers
    ]
    if plan.compare_precision and "service" in args.servers:
        runs.append(("service", plan.compare_precision))
    for kind, precision in runs:
        compared_run = precision != args.precision
        label = f"{kind}@{precision}" if compared_run else kind
        levels = plan.compare_concurrency if compared_run else plan.concurrency
        blocks = [("raw", raw, pipeline)] if with_raw else []
        if compared_run and compared_raw is not None:
            blocks.append((f"raw@{precision}", compared_raw[0], compared_raw[2]))
        paired = paired_plan(blocks, image, levels, rounds, settings)
        command = server_command(kind, toml, precision, args, max(levels))
        log = out_dir / f"server-{model}-{label}.log"
        print(f"  starting {label}: {shlex.join(command.argv)}", flush=True)
        load_before = os.getloadavg()[0]
        try:
            with RunningServer(
                command, workdir=scratch, log_path=log, start_timeout_s=args.start_timeout
            ):
                measured = asyncio.run(
                    exercise_server(
                        command.base_url,
                        kind,
                        model,
                        send,
                        reference,
                        task,
                        levels,
                        settings,
                        open_rate,
                        paired,
                    )
                )
        except (ServerStartError, CheckFailed) as exc:
            # One broken server must not cost the rest of a half-hour run: record, go on.
            print(f"  {label} FAILED: {exc}", flush=True)
            servers[label] = {"precision": precision, "error": str(exc)}
            write_results(results, out_dir)
            continue
        # Other processes' load makes a run noisy on a small machine: keep a trace of it.
        load = {"before": load_before, "after": os.getloadavg()[0]}
        servers[label] = {"precision": precision, **measured, "load_average": load}
        write_results(results, out_dir)
    del pipeline, compared_raw
    gc.collect()
    entry["ratios"] = compute_ratios(
        servers, precision=args.precision, compared=plan.compare_precision
    )
    write_results(results, out_dir)
    print(
        "\n".join(model_table(servers)) + "\n\n" + "\n".join(ratio_table(entry["ratios"])),
        flush=True,
    )


def setup_process(args: argparse.Namespace) -> dict[str, Any]:
    """This process's torch threads and malloc options (where raw runs); what was set."""
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    kept = keep_freed_memory() if args.raw_keep_freed_memory else False
    return {"raw_keeps_freed_memory": kept}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = point_settings(args)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = args.name or (f"quick-{stamp}" if args.quick else stamp)
    out_dir = RESULTS_DIR / name
    process = setup_process(args)
    command = shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    results: dict[str, Any] = {
        "meta": {
            "name": name,
            "command": command,
            "started": stamp,
            "machine": machine(),
            "settings": {
                **{k: v for k, v in vars(settings).items()},
                "precision": args.precision,
                "seed": args.seed,
                "device": args.device,
                "torch_threads": args.torch_threads,
                **process,
                "score_threshold": args.score_threshold,
                "env": dict(args.env),
            },
        },
        "models": {},
    }
    print(f"results: {out_dir}", flush=True)
    with tempfile.TemporaryDirectory(prefix="segserve-bench-") as scratch:
        for model in args.models:
            run_model(model, args, settings, results, out_dir, Path(scratch))
    write_results(results, out_dir)
    print(f"\nwrote {out_dir}/results.json, results.md and the plots", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
