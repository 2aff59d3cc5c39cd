"""A short throughput sweep for a GPU check: models x precisions x batch sizes x tiled/untiled.

Each model is loaded as the service loads it (``load_predictor``: batch norms folded,
channels_last, the precision's mode) once per precision, then measured per batch size:

- ``untiled``: ``predict_batch`` on a batch of the same photo-like image (the preset resizes
  it: 520-pixel short side for the semantic models, 800 for Mask R-CNN); images/s.
- ``tiled``: one tiled request in-process through the service's own machinery
  (``ServedModel``'s batcher with ``max_batch_size`` set to the batch size, then
  ``segment_tiled`` / ``detect_tiled``: windows at their own resolution, stitching or merging
  on the host); windows/s.

Weights are untrained (``weights = "none"``, seeded) unless the torchvision weights file is in
the weights directory. A precision the device cannot run (fp16 on CPU) is recorded as skipped,
as is every point after ``--budget-s`` seconds; results are rewritten after each point, so a
run cut short by ``timeout`` still leaves what it measured.

    python -m bench.gpu_sweep --device cuda --out bench/results/gpu-sweep   # ~4 min on a GPU
    python -m bench.gpu_sweep --device cpu --quick --out /tmp/sweep          # smoke run, ~20 s

Writes ``sweep.json`` (everything, with the torch/CUDA versions), ``sweep.csv`` (one row a
point) and ``sweep.md`` (a table: items/s per batch size) into ``--out``. bench/gpu_check.sh
runs it on a GPU machine.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import gc
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.images import photo_like
from bench.report import save_json
from bench.servers import REPO_ROOT, task_of

STANDARD_MODELS = ("deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "maskrcnn_resnet50_fpn_v2")
BATCH_SIZES = (1, 4, 8)
PRECISIONS = ("fp32", "bf16", "fp16")
MODES = ("untiled", "tiled")
# Mask R-CNN in --quick: tests/integration's resize bounds and fewer proposals and detections
# (an untrained network keeps every proposal): seconds, not minutes, on a CPU.
QUICK_INSTANCE_OPTIONS = {
    "min_size": 128,
    "max_size": 192,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_detections_per_img": 20,
}


@dataclass(frozen=True)
class Sizes:
    """Image sizes (width, height), tiles and how long each point is measured."""

    image: tuple[int, int]  # untiled
    tiled_image: tuple[int, int]
    semantic_tile: int
    semantic_overlap: int
    instance_tile: int
    instance_overlap: int
    measure_s: float  # each point: at least this long ...
    min_runs: int  # ... and at least this many timed runs (after one untimed)


# Tiled: 42 semantic windows of 512, 20 Mask R-CNN windows of 800, so batches of 8 fill.
STANDARD = Sizes((640, 480), (3200, 2400), 512, 64, 800, 160, 0.5, 2)
QUICK = Sizes((64, 48), (96, 64), 32, 8, 48, 12, 0.0, 1)


@dataclass
class Point:
    model: str
    precision: str
    mode: str
    batch_size: int
    status: str = "ok"  # ok, skipped, failed
    unit: str = ""  # images/s or windows/s
    items_per_s: float | None = None
    s_per_run: float | None = None
    runs: int = 0
    items_per_run: int = 0
    peak_gpu_memory_mb: float | None = None
    note: str = ""


def _list(kind: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"want a comma-separated list; got {text!r}")
        return values

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_sweep",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--models", type=_list(str), default=STANDARD_MODELS)
    parser.add_argument("--batch-sizes", type=_list(int), help="default 1,4,8 (--quick: 1,2)")
    parser.add_argument("--precisions", type=_list(str), default=PRECISIONS)
    parser.add_argument("--modes", type=_list(str), default=MODES, help="untiled,tiled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--weights-dir", type=Path, default=REPO_ROOT / "weights", help="trained weights, if any"
    )
    parser.add_argument("--budget-s", type=float, default=0.0, help="stop after this (0: none)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--quick", action="store_true", help="tiny images, one run a point")
    args = parser.parse_args(argv)
    if args.batch_sizes is None:
        args.batch_sizes = (1, 2) if args.quick else BATCH_SIZES
    for name, allowed in (("precisions", PRECISIONS), ("modes", MODES)):
        if bad := [v for v in getattr(args, name) if v not in allowed]:
            parser.error(f"--{name}: unknown {bad}; choose from {', '.join(allowed)}")
    for model in args.models:
        try:
            task_of(model)
        except Exception as exc:  # pragma: no cover - task_of looks names up only
            parser.error(f"--models: {model}: {exc}")
    return args


# --------------------------------------------------------------------------- the models


def weights_for(model: str, weights_dir: Path) -> str:
    """``DEFAULT`` when torchvision's file for it is in ``weights_dir``, else ``none``."""
    from app.predictors.repository import ModelSpec
    from app.predictors.weights import weights_source

    spec = ModelSpec(name=model, task=task_of(model), architecture=model, weights="DEFAULT")
    source = weights_source(spec)
    present = hasattr(source, "path") and source.path(weights_dir).is_file()
    return "DEFAULT" if present else "none"


def load(model: str, precision: str, args: argparse.Namespace) -> Any:
    """The predictor as the service builds it; raises ConfigError where it cannot run."""
    from app.config import Settings
    from app.predictors import load_predictor
    from app.predictors.repository import ModelSpec

    task = task_of(model)
    options = QUICK_INSTANCE_OPTIONS if args.quick and task == "instance" else {}
    spec = ModelSpec(
        name=model,
        task=task,
        architecture=model,
        weights=weights_for(model, args.weights_dir),
        options=options,
    )
    settings = Settings(
        _env_file=None,
        device=args.device,
        precision=precision,
        seed=args.seed,
        weights_dir=args.weights_dir,
        allow_download=False,
        batch_autotune=False,
    )
    return load_predictor(spec, settings), settings


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(run: Callable[[], int], device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """One untimed run (kernels pick their algorithms), then runs until the point's minimum;
    ``run`` returns the items it processed."""
    run()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    items = 0
    while len(times) < sizes.min_runs or sum(times) < sizes.measure_s:
        started = time.perf_counter()
        items = run()
        _sync(device)
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) / 1e6 if device.type == "cuda" else None
    return {
        "items_per_s": items * len(times) / sum(times),
        "s_per_run": sum(times) / len(times),
        "runs": len(times),
        "items_per_run": items,
        "peak_gpu_memory_mb": peak,
    }


def untiled_run(predictor: Any, image: np.ndarray, batch_size: int) -> Callable[[], int]:
    params = [predictor.default_params()] * batch_size

    def run() -> int:
        predictor.predict_batch([image] * batch_size, params)
        return batch_size

    return run


class TiledRun:
    """Tiled requests through one ServedModel's batcher, on an event loop of its own (the
    batcher's inference thread lives as long as it: CUDA handles are per thread)."""

    def __init__(
        self,
        predictor: Any,
        settings: Any,
        image: np.ndarray,
        tile: int,
        overlap: int,
        batch_size: int,
    ) -> None:
        from app.serving import ServedModel
        from app.tiling import Tiling

        self.predictor = predictor
        self.image = image
        self.grid = Tiling(tile, overlap).grid(*image.shape[:2])
        self.loop = asyncio.new_event_loop()
        self.served: ServedModel[Any] = ServedModel(predictor, settings)
        self.served.batcher.max_batch_size = batch_size
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.served.batcher.start()

    async def _request(self) -> int:
        from app.tiled_inference import detect_tiled, segment_tiled

        if self.predictor.spec.task == "semantic":
            done = await segment_tiled(self.served, self.image, self.grid, 3600.0)
        else:
            params = self.predictor.default_params()
            done = await detect_tiled(self.served, self.image, self.grid, params, 3600.0)
        return int(done.windows)

    def __call__(self) -> int:
        return self.loop.run_until_complete(self._request())

    def close(self) -> None:
        self.loop.run_until_complete(self.served.batcher.stop())
        self.loop.close()


# -------------------------------------------------------------------------------- output


def environment(device: str) -> dict[str, Any]:
    from bench.run import machine

    info: dict[str, Any] = {
        **machine(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "platform": platform.platform(),
        "device": device,
    }
    if torch.cuda.is_available():
        index = (torch.device(device).index or 0) if device.startswith("cuda") else 0
        props = torch.cuda.get_device_properties(index)
        info["gpu_name"] = props.name
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        info["gpu_memory_gb"] = round(props.total_memory / 1e9, 1)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def table(points: Sequence[Point], batch_sizes: Sequence[int]) -> list[str]:
    """Markdown: one row per model, precision and mode; items/s per batch size."""
    lines = [
        "| model | precision | mode | unit | "
        + " | ".join(f"batch {b}" for b in batch_sizes)
        + " |",
        "|---|---|---|---|" + "---:|" * len(batch_sizes),
    ]
    rows: dict[tuple[str, str, str], dict[int, Point]] = {}
    for p in points:
        rows.setdefault((p.model, p.precision, p.mode), {})[p.batch_size] = p
    for (model, precision, mode), by_size in rows.items():
        unit = next((p.unit for p in by_size.values() if p.unit), "")
        cells = []
        for b in batch_sizes:
            cell = by_size.get(b)
            if cell is None:
                cells.append("")
            elif cell.items_per_s is not None:
                cells.append(f"{cell.items_per_s:.2f}")
            else:
                cells.append(cell.status)
        lines.append(f"| {model} | {precision} | {mode} | {unit} | " + " | ".join(cells) + " |")
    return lines


def write(out: Path, meta: dict[str, Any], points: Sequence[Point], sizes: Sizes) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = [asdict(p) for p in points]
    save_json({"meta": meta, "sizes": asdict(sizes), "points": rows}, out / "sweep.json")
    with (out / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(Point("", "", "", 0))))
        writer.writeheader()
        writer.writerows(rows)
    # One line per model, precision, status and reason (with the points it covers).
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for p in points:
        if p.note:
            key = (p.model, p.precision, p.status, p.note)
            grouped.setdefault(key, []).append(f"{p.mode} {p.batch_size}")
    notes = [
        f"- {model} {precision} ({', '.join(which)}): {status}: {note}"
        for (model, precision, status, note), which in grouped.items()
    ]
    lines = [
        f"# Throughput sweep on {meta['environment'].get('gpu_name', meta['device'])}",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"- torch {meta['environment']['torch']}, CUDA {meta['environment']['torch_cuda']}, "
        f"cuDNN {meta['environment']['cudnn']}, commit {meta['environment']['commit']}",
        f"- untiled: {sizes.image[0]}x{sizes.image[1]} images (images/s); tiled: one "
        f"{sizes.tiled_image[0]}x{sizes.tiled_image[1]} request, tile "
        f"{sizes.semantic_tile}/{sizes.semantic_overlap} (semantic), "
        f"{sizes.instance_tile}/{sizes.instance_overlap} (Mask R-CNN) (windows/s)",
        "",
        *table(points, meta["batch_sizes"]),
        "",
        *notes,
    ]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------- main


def sweep(args: argparse.Namespace, argv: Sequence[str]) -> list[Point]:
    sizes = QUICK if args.quick else STANDARD
    device = torch.device(args.device)
    started = time.monotonic()
    meta = {
        "command": shlex.join(["python", "-m", "bench.gpu_sweep", *argv]),
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S"),
        "device": args.device,
        "batch_sizes": list(args.batch_sizes),
        "weights": {m: weights_for(m, args.weights_dir) for m in args.models},
        "environment": environment(args.device),
    }
    # Writable copies, as the service's decoder gives (torch warns about read-only arrays).
    image = np.array(photo_like(*sizes.image, seed=0))
    tiled_image = np.array(photo_like(*sizes.tiled_image, seed=1))
    points: list[Point] = []

    def over_budget() -> bool:
        return args.budget_s > 0 and time.monotonic() - started > args.budget_s

    for model in args.models:
        task = task_of(model)
        for precision in args.precisions:
            planned = [
                Point(model, precision, mode, b) for mode in args.modes for b in args.batch_sizes
            ]
            if over_budget():
                for p in planned:
                    p.status, p.note = "skipped", f"over the {args.budget_s:g} s budget"
                points += planned
                write(args.out, meta, points, sizes)
                continue
            try:
                predictor, settings = load(model, precision, args)
            except Exception as exc:  # fp16 on CPU: a ConfigError that says so
                for p in planned:
                    p.status, p.note = "skipped", f"{type(exc).__name__}: {exc}".splitlines()[0]
                points += planned
                print(f"{model} {precision}: skipped ({planned[0].note})", flush=True)
                write(args.out, meta, points, sizes)
                continue
            tile, overlap = (
                (sizes.semantic_tile, sizes.semantic_overlap)
                if task == "semantic"
                else (sizes.instance_tile, sizes.instance_overlap)
            )
            for point in planned:
                if over_budget():
                    point.status, point.note = "skipped", f"over the {args.budget_s:g} s budget"
                    points.append(point)
                    continue
                tiled: TiledRun | None = None
                try:
                    if point.mode == "untiled":
                        run = untiled_run(predictor, image, point.batch_size)
                        point.unit = "images/s"
                    else:
                        run = tiled = TiledRun(
                            predictor, settings, tiled_image, tile, overlap, point.batch_size
                        )
                        point.unit = "windows/s"
                    for key, value in timed_runs(run, device, sizes).items():
                        setattr(point, key, value)
                except Exception as exc:  # a failed point must not cost the rest of the sweep
                    point.status = "failed"
                    point.note = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                finally:
                    if tiled is not None:
                        tiled.close()
                points.append(point)
                shown = "-" if point.items_per_s is None else f"{point.items_per_s:.2f}"
                print(
                    f"{model} {precision} {point.mode} batch {point.batch_size}: {shown} "
                    f"{point.unit} {point.status} {point.note}".rstrip(),
                    flush=True,
                )
                write(args.out, meta, points, sizes)
            del predictor
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    meta["elapsed_s"] = time.monotonic() - started
    write(args.out, meta, points, sizes)
    return points


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    points = sweep(args, argv)
    print((args.out / "sweep.md").read_text())
    failed = [p for p in points if p.status == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
