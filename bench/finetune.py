"""Fine-tuning (issue 13 item 6): segserve's training step against torchvision's reference
loop, and how long the real ``segserve finetune`` takes to reach a validation metric.

Three modes, each on a generated shapes dataset (app/training/shapes.py) in a temp folder:

- ``throughput``: images/s of ``segserve finetune``'s training step (``train_epoch`` with the
  model, loader, optimiser, schedule and grad scaler an ``app.training.finetune.Trainer``
  builds, its per-step callback, a progress bar writing to a null stream) against a plain
  loop written here the way torchvision's references/segmentation/train.py
  ``train_one_epoch`` is: cross-entropy (ignore 255) on "out" + 0.5 x "aux" when the model
  has one, SGD momentum 0.9 / weight decay 1e-4 (its head at 10x where there is an auxiliary
  one), a poly ``LambdaLR`` stepped every iteration, ``loss.item()`` after each step. Both
  sides share ONE ``DataLoader`` (same workers, batch and, per block, the same seed, so the
  same batches), start from the same seeded weights (``build_trainable(start="scratch")``)
  and run the same precision. Blocks of ``--steps`` timed steps (each block is one pass over
  the loader: a first untimed step absorbs the workers' start-up) alternate after a warm-up
  pair: reference, segserve, reference, ..., reference; each segserve block is divided by the
  mean of the reference blocks around it (bench/paired.py) and the ratio is the geometric
  mean over rounds, with their range. Target: segserve / reference >= 0.95.
- ``converge``: the real command (``python -m app finetune`` in a subprocess) from scratch on
  3 shape classes; from its log (the wall time each epoch ended, counted from the command's
  start) and its results.csv: the time and epoch at which ``val_miou`` first reaches
  ``--target``, the best ``val_miou`` and the total time. Target: reached within 15 minutes.
- ``converge-instance``: the same for Mask R-CNN (COCO-format shapes) under a time budget
  (``--budget-min``; the command gets Ctrl-C when it is spent): the best ``val_mask_ap50``
  of the epochs that ended within it.

    .venv/bin/python -m bench.finetune throughput            # ~3-5 min on 2 idle cores
    .venv/bin/python -m bench.finetune throughput --model deeplabv3_mobilenet_v3_large --rounds 6
    .venv/bin/python -m bench.finetune converge              # 12 epochs (target: < 15 min)
    .venv/bin/python -m bench.finetune converge --optimizer sgd --lr 0.01 --epochs 20
    .venv/bin/python -m bench.finetune converge-instance     # 30 min budget
    .venv/bin/python -m bench.finetune MODE --quick          # tiny sizes: a smoke run

Writes ``bench/results/finetune-<mode>-<model>[-quick]/`` (``--out`` to choose):
results.json (figures, settings, the machine: CPU model and flags, torch, threads), a plot
(images/s of every block; the validation metric against minutes), and for the converge
modes the command's log and its run's results.csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.paired import summarise as paired_ratio
from bench.report import RESULTS_DIR, plt, save_json
from bench.servers import REPO_ROOT, task_of
from bench.tiling import machine

THROUGHPUT_TARGET = 0.95  # segserve's images/s over the reference loop's
CONVERGE_TARGET_MIN = 15.0  # minutes to reach the semantic target
MAX_ROUNDS = 25  # keeps the bench's steps inside the poly schedule's horizon (30 epochs)


@dataclass(frozen=True)
class ThroughputPlan:
    image_size: int
    batch: int
    steps: int  # timed steps a block
    rounds: int  # segserve blocks, each between two reference blocks
    workers: int


@dataclass(frozen=True)
class ConvergePlan:
    model: str
    start: str
    train: int
    val: int
    image_size: int
    batch: int
    epochs: int
    optimizer: str | None  # None: the command's default (the reference recipe's)
    lr: float | None
    workers: int
    target: float | None
    budget_min: float | None
    bn_images: int | None = None


THROUGHPUT = ThroughputPlan(image_size=256, batch=8, steps=10, rounds=4, workers=2)
QUICK_THROUGHPUT = ThroughputPlan(image_size=64, batch=4, steps=2, rounds=1, workers=0)
CONVERGE = {
    "converge": ConvergePlan(
        "lraspp_mobilenet_v3_large", "scratch", 400, 100, 256, 8, 12, "adamw", 0.003, 2,
        target=0.85, budget_min=None,
    ),
    "converge-instance": ConvergePlan(
        "maskrcnn_resnet50_fpn", "scratch", 200, 50, 256, 4, 10, "sgd", None, 2,
        target=None, budget_min=30.0,
    ),
}  # fmt: skip
QUICK_CONVERGE = {
    "converge": ConvergePlan(
        "lraspp_mobilenet_v3_large", "scratch", 8, 2, 64, 4, 1, "adamw", 0.003, 0,
        target=0.85, budget_min=None, bn_images=4,
    ),
    "converge-instance": ConvergePlan(
        "maskrcnn_resnet50_fpn", "scratch", 2, 1, 64, 2, 1, "sgd", None, 0,
        target=None, budget_min=30.0, bn_images=2,
    ),
}  # fmt: skip
METRIC = {"converge": "val_miou", "converge-instance": "val_mask_ap50"}


# --------------------------------------------------------------------- the reference loop


def reference_criterion(inputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """references/segmentation/train.py ``criterion``: "out", plus 0.5 x "aux" if present."""
    losses = {}
    for name, x in inputs.items():
        losses[name] = F.cross_entropy(x, target, ignore_index=255)
    if len(losses) == 1:
        return losses["out"]
    return losses["out"] + 0.5 * losses["aux"]


class ReferenceLoop:
    """The reference script's optimiser, schedule and ``train_one_epoch``, written from it
    (not from segserve's loop): the baseline segserve's step is held to."""

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        iters_per_epoch: int,
        epochs: int,
        device: torch.device,
        amp: bool,
    ) -> None:
        self.model, self.device = model, device
        model_any: Any = model
        params_to_optimize: list[dict[str, Any]] = [
            {"params": [p for p in model_any.backbone.parameters() if p.requires_grad]},
            {"params": [p for p in model_any.classifier.parameters() if p.requires_grad]},
        ]
        if getattr(model_any, "aux_classifier", None) is not None:
            params = [p for p in model_any.aux_classifier.parameters() if p.requires_grad]
            params_to_optimize.append({"params": params, "lr": lr * 10})
        self.optimizer = torch.optim.SGD(params_to_optimize, lr=lr, momentum=0.9, weight_decay=1e-4)
        total = iters_per_epoch * epochs
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda x: (1 - x / total) ** 0.9
        )
        self.scaler = torch.amp.GradScaler("cuda") if amp else None

    def train_one_epoch(self, data_loader: Iterable[Any], after_step: Callable[[], None]) -> None:
        model, optimizer, scaler, device = self.model, self.optimizer, self.scaler, self.device
        model.train()
        for image, target in data_loader:
            image, target = image.to(device), target.to(device)
            with torch.autocast("cuda", enabled=scaler is not None):
                output = model(image)
                loss = reference_criterion(output, target)
            optimizer.zero_grad()
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            self.lr_scheduler.step()
            loss.item()  # the reference's MetricLogger.update(loss=loss.item(), ...)
            after_step()


# ---------------------------------------------------------------------------- throughput


class StepClock:
    """Called after every step of a block; times steps 2..N+1 (the first step of a pass
    waits for the loader's workers to start, on both sides alike)."""

    def __init__(self, device: torch.device, total: int) -> None:
        self.device, self.total = device, total
        self.count = 0
        self.first = self.last = 0.0

    def __call__(self) -> None:
        self.count += 1
        if self.count in (1, self.total):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            self.first = now if self.count == 1 else self.first
            self.last = now

    def seconds(self) -> float:
        if self.count != self.total:
            raise RuntimeError(f"a block ran {self.count} steps, not {self.total}")
        return self.last - self.first


class Sides:
    """segserve's Trainer and the reference loop over the same loader and starting weights."""

    def __init__(self, args: argparse.Namespace, data: Path, scratch: Path, null: IO[str]):
        from app.config import Settings
        from app.training.build import build_trainable
        from app.training.datasets import load_dataset
        from app.training.finetune import Job, Trainer
        from app.training.recipes import default_recipe
        from app.training.runs import RunFolder

        recipe = default_recipe("semantic", batch=args.batch)
        recipe.image_size, recipe.workers, recipe.amp = args.image_size, args.workers, args.amp
        recipe.seed = args.seed
        settings = Settings(
            _env_file=None,
            device=args.device,
            weights_dir=scratch,
            allow_download=False,
        )
        job = Job(
            name="bench",
            data=data,
            architecture=args.model,
            start="scratch",
            recipe=recipe,
            val_fraction=0.1,
            run=RunFolder(scratch / "run"),  # never written: no epoch ends here
            install=False,
            overwrite=False,
        )
        self.null = null
        self.trainer = Trainer(job, load_dataset(data), settings, null)
        self.recipe, self.device = recipe, self.trainer.device
        self.loader = self.trainer.train_loader
        self.steps = self.trainer.steps  # per pass over the loader: the timed steps + 1
        reference_model = build_trainable(
            args.model,
            len(self.trainer.dataset.categories),
            start="scratch",
            weights_dir=scratch,
            allow_download=False,
            seed=recipe.seed,
        ).to(self.device)
        self.reference = ReferenceLoop(
            reference_model,
            lr=recipe.lr,
            iters_per_epoch=self.steps,
            epochs=recipe.epochs,
            device=self.device,
            amp=recipe.amp and self.device.type == "cuda",
        )

    def _seed(self, block: int) -> None:
        # What Trainer.run_epoch does at each epoch, done for both sides: the same batches.
        seed = self.recipe.seed * 100_003 + block
        torch.manual_seed(seed)
        self.loader.generator.manual_seed(seed)

    def segserve(self, block: int) -> float:
        from app.progress import ProgressBar
        from app.training.loop import EpochPosition, train_epoch

        trainer = self.trainer
        self._seed(block)
        clock = StepClock(self.device, self.steps)

        def on_step() -> None:
            trainer._remember_rng()  # the Trainer's own per-step callback
            clock()

        train_epoch(
            trainer.model,
            self.loader,
            total_steps=self.steps,
            optimizer=trainer.optimizer,
            scheduler=trainer.scheduler,
            scaler=trainer.scaler,
            recipe=self.recipe,
            device=self.device,
            position=EpochPosition(epoch=block),
            progress=ProgressBar(self.steps, f"block {block}", stream=self.null),
            on_step=on_step,
        )
        return (self.steps - 1) * self.recipe.batch / clock.seconds()

    def reference_block(self, block: int) -> float:
        self._seed(block)
        clock = StepClock(self.device, self.steps)
        self.reference.train_one_epoch(self.loader, clock)
        return (self.steps - 1) * self.recipe.batch / clock.seconds()


def throughput_figures(blocks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """From the measured blocks (warm-up pair first, then ref, seg, ref, ..., ref): each
    round's segserve / mean(reference before, after), their geometric mean and range."""
    timed = [b for b in blocks if not b["warmup"]]
    refs = [b["images_per_s"] for b in timed if b["side"] == "reference"]
    segs = [b["images_per_s"] for b in timed if b["side"] == "segserve"]
    if len(refs) != len(segs) + 1 or not segs:
        raise ValueError(
            f"want reference blocks around each segserve block: {len(refs)}, {len(segs)}"
        )
    rounds = [
        {"reference_before": before, "segserve": seg, "reference_after": after}
        for before, seg, after in zip(refs, segs, refs[1:], strict=False)
    ]
    per_round = [
        r["segserve"] / ((r["reference_before"] + r["reference_after"]) / 2) for r in rounds
    ]
    paired = [
        {
            "raw_before": {"reference": r["reference_before"]},
            "server_ips": r["segserve"],
            "raw_after": {"reference": r["reference_after"]},
        }
        for r in rounds
    ]
    ratio = paired_ratio(paired)["reference"]
    return {
        "rounds": [{**r, "ratio": q} for r, q in zip(rounds, per_round, strict=True)],
        "reference_images_per_s_median": statistics.median(refs),
        "segserve_images_per_s_median": statistics.median(segs),
        "ratio": ratio,
        "ratio_min": min(per_round),
        "ratio_max": max(per_round),
        "ratio_of_medians": statistics.median(segs) / statistics.median(refs),
        "target": THROUGHPUT_TARGET,
        "met": ratio >= THROUGHPUT_TARGET,
    }


def plot_blocks(blocks: Sequence[dict[str, Any]], title: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    for side, marker in (("reference", "o"), ("segserve", "s")):
        points = [(i, b["images_per_s"]) for i, b in enumerate(blocks) if b["side"] == side]
        axis.plot(*zip(*points, strict=True), marker=marker, linestyle="", label=side)
    if warm := sum(b["warmup"] for b in blocks):
        axis.axvspan(-0.5, warm - 0.5, color="grey", alpha=0.15, label="warm-up")
    axis.set_xlabel("block, in the order run")
    axis.set_ylabel("training images/s")
    axis.set_ylim(bottom=0)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_throughput(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from app.training.shapes import write_shapes_dataset

    names = ("model", "batch", "image_size", "steps", "rounds")
    result: dict[str, Any] = {"settings": _settings(args, names)}
    result["settings"] |= {"workers": args.workers, "device": args.device, "amp": args.amp}
    blocks: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="segserve-bench-finetune-") as tmp,
        open(os.devnull, "w") as null,
    ):
        scratch = Path(tmp)
        # One pass over the loader is one block: the timed steps and the untimed first one.
        data = write_shapes_dataset(
            scratch / "data",
            format="masks",
            train=(args.steps + 1) * args.batch,
            val=2,
            size=args.image_size,
            seed=args.seed,
        )
        sides = Sides(args, data, scratch, null)
        plan = [("reference", True), ("segserve", True), ("reference", False)]
        plan += [("segserve", False), ("reference", False)] * args.rounds
        for block, (side, warmup) in enumerate(plan):
            run = sides.segserve if side == "segserve" else sides.reference_block
            ips = run(block)
            blocks.append({"side": side, "warmup": warmup, "images_per_s": ips})
            note = " (warm-up)" if warmup else ""
            print(f"  block {block + 1}/{len(plan)}: {side} {ips:.2f} images/s{note}", flush=True)
    result["blocks"] = blocks
    result["throughput"] = throughput_figures(blocks)
    t = result["throughput"]
    result["summary"] = [
        f"{args.model}, batch {args.batch}, {args.image_size} px, {args.device}"
        f"{' amp' if args.amp and args.device.startswith('cuda') else ' fp32'}, "
        f"{args.workers} workers, {args.rounds} rounds of {args.steps} steps:",
        f"  reference loop {t['reference_images_per_s_median']:.2f} images/s, segserve "
        f"{t['segserve_images_per_s_median']:.2f} images/s (medians); segserve / reference "
        f"{t['ratio']:.3f} (rounds {t['ratio_min']:.3f}..{t['ratio_max']:.3f}) "
        f"(target >= {THROUGHPUT_TARGET}: {'met' if t['met'] else 'NOT met'})",
    ]
    plot_blocks(blocks, result["summary"][0].rstrip(":"), out / "throughput.png")
    result["plot"] = "throughput.png"
    return result


# ----------------------------------------------------------------------------- converge

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): ")


@dataclass
class CommandRun:
    returncode: int
    wall_s: float
    epoch_end_s: dict[int, float]  # epoch -> seconds from the command's start to its line
    interrupted: bool


def run_command(
    argv: list[str], env: dict[str, str], log: Path, budget_s: float | None
) -> CommandRun:
    """Run ``argv``, echoing and logging its output; Ctrl-C (SIGINT) when ``budget_s`` is
    spent (the command saves its state after the current step and exits)."""
    ends: dict[int, float] = {}
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as sink:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert process.stdout is not None
        stream = process.stdout

        def read() -> None:
            for line in stream:
                if match := EPOCH_LINE.match(line):
                    ends[int(match.group(1))] = time.monotonic() - started
                sink.write(line)
                sink.flush()
                print(f"  | {line}", end="", flush=True)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        interrupted = False
        while process.poll() is None:
            if budget_s is not None and not interrupted and time.monotonic() - started > budget_s:
                print(f"  budget of {budget_s / 60:g} min spent: Ctrl-C to the command", flush=True)
                process.send_signal(signal.SIGINT)
                interrupted = True
                try:
                    process.wait(timeout=300)
                except subprocess.TimeoutExpired:
                    process.kill()
            time.sleep(0.2)
        reader.join(timeout=30)
    return CommandRun(process.wait(), time.monotonic() - started, ends, interrupted)


def read_results(path: Path) -> list[dict[str, Any]]:
    """results.csv's rows with numbers as numbers."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: _number(v) for k, v in row.items()} for row in rows]


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def convergence(
    rows: Sequence[dict[str, Any]],
    epoch_end_s: dict[int, float],
    metric: str,
    target: float | None,
    budget_s: float | None,
) -> dict[str, Any]:
    """Per epoch: the metric, when the epoch ended (wall, from the command's start) and the
    training seconds so far (results.csv's ``seconds``); the first epoch at or above
    ``target`` and the best epoch (within ``budget_s``, when given)."""
    epochs: list[dict[str, Any]] = []
    train_s = 0.0
    for row in rows:
        train_s += float(row.get("seconds", 0.0))
        epoch = int(row["epoch"])
        epochs.append(
            {
                "epoch": epoch,
                metric: float(row[metric]),
                "wall_s": epoch_end_s.get(epoch),
                "train_s": round(train_s, 1),
            }
        )
    counted = [
        e
        for e in epochs
        if budget_s is None or (e["wall_s"] is not None and e["wall_s"] <= budget_s)
    ]
    best = max(counted, key=lambda e: e[metric], default=None)
    reached = None
    if target is not None:
        reached = next((e for e in epochs if e[metric] >= target), None)
    return {"metric": metric, "epochs": epochs, "best": best, "reached": reached}


def plot_metric(found: dict[str, Any], args: argparse.Namespace, title: str, path: Path) -> None:
    metric = found["metric"]
    points = [(e["wall_s"] / 60, e[metric]) for e in found["epochs"] if e["wall_s"] is not None]
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    if points:
        axis.plot(*zip(*points, strict=True), marker="o", label=metric)
    if args.target is not None:
        axis.axhline(args.target, linestyle="--", color="grey", linewidth=1, label="target")
    limit = args.budget_min or (CONVERGE_TARGET_MIN if args.mode == "converge" else None)
    if limit:
        axis.axvline(limit, linestyle=":", color="red", linewidth=1, label=f"{limit:g} min")
    axis.set_xlabel("minutes since the command started (epoch ends)")
    axis.set_ylabel(metric)
    axis.set_ylim(0, 1)
    axis.set_xlim(left=0)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def finetune_argv(args: argparse.Namespace, data: Path, project: Path) -> list[str]:
    argv = [sys.executable, "-m", "app", "finetune", "--data", str(data), "--model", args.model]
    argv += ["--start", args.start, "--image-size", str(args.image_size)]
    argv += ["--batch", str(args.batch), "--epochs", str(args.epochs)]
    argv += ["--workers", str(args.workers), "--seed", str(args.seed)]
    if args.optimizer:
        argv += ["--optimizer", args.optimizer]
    if args.lr is not None:
        argv += ["--lr", str(args.lr)]
    if args.bn_images is not None:
        argv += ["--bn-images", str(args.bn_images)]
    argv += ["--project", str(project), "--name", "bench", "--no-install", "--overwrite"]
    return argv + shlex.split(args.finetune_args)


def run_converge(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from app.training.shapes import write_shapes_dataset

    metric = METRIC[args.mode]
    names = ("model", "start", "train", "val", "image_size", "batch", "epochs", "optimizer", "lr")
    result: dict[str, Any] = {"settings": _settings(args, names)}
    result["settings"] |= {
        "workers": args.workers,
        "target": args.target,
        "budget_min": args.budget_min,
        "device": args.device,
        "finetune_args": args.finetune_args,
    }
    budget_s = args.budget_min * 60 if args.budget_min else None
    with tempfile.TemporaryDirectory(prefix="segserve-bench-finetune-") as tmp:
        scratch = Path(tmp)
        started = time.monotonic()
        data = write_shapes_dataset(
            scratch / "data",
            format="masks" if args.mode == "converge" else "coco",
            train=args.train,
            val=args.val,
            size=args.image_size,
            seed=args.seed,
        )
        result["dataset_s"] = round(time.monotonic() - started, 1)
        argv = finetune_argv(args, data, scratch / "runs")
        env = {**os.environ, "SEGSERVE_DEVICE": args.device, "SEGSERVE_ALLOW_DOWNLOAD": "false"}
        if args.torch_threads:
            env["SEGSERVE_TORCH_THREADS"] = str(args.torch_threads)
        result["finetune_command"] = shlex.join(["python", *argv[1:]])
        print(f"  {result['finetune_command']}", flush=True)
        run = run_command(argv, env, out / "finetune.log", budget_s)
        results_csv = scratch / "runs" / "bench" / "results.csv"
        if not results_csv.is_file():
            raise RuntimeError(f"the command wrote no results.csv (exit {run.returncode}): "
                               f"see {out / 'finetune.log'}")  # fmt: skip
        shutil.copy(results_csv, out / "run-results.csv")
        rows = read_results(results_csv)
    found = convergence(rows, run.epoch_end_s, metric, args.target, budget_s)
    result["command"] = {
        "returncode": run.returncode,
        "wall_s": round(run.wall_s, 1),
        "interrupted_at_budget": run.interrupted,
        "epochs_done": len(rows),
    }
    result["convergence"] = found
    if args.mode == "converge":
        reached = found["reached"]
        found["target_min"] = CONVERGE_TARGET_MIN
        found["met"] = bool(reached and reached["wall_s"] <= CONVERGE_TARGET_MIN * 60)
    title = f"{args.model} from {args.start}, {args.train} images at {args.image_size} px"
    plot_metric(found, args, title, out / "metric.png")
    result["plot"] = "metric.png"
    result["summary"] = converge_lines(args, result)
    return result


def converge_lines(args: argparse.Namespace, result: dict[str, Any]) -> list[str]:
    found, command = result["convergence"], result["command"]
    metric, best, reached = found["metric"], found["best"], found["reached"]
    lines = [
        f"{args.model} from {args.start}: {args.train} train / {args.val} val images at "
        f"{args.image_size} px, batch {args.batch}, {args.optimizer or 'default optimiser'} "
        f"lr {args.lr if args.lr is not None else 'default'}, {args.epochs} epochs, {args.device}:",
        f"  the command ran {command['wall_s'] / 60:.1f} min, {command['epochs_done']} epochs"
        + (" (stopped at the budget)" if command["interrupted_at_budget"] else "")
        + f", exit {command['returncode']}",
    ]
    if args.target is not None:
        if reached:
            lines.append(
                f"  {metric} >= {args.target} first at epoch {reached['epoch']}, "
                f"{reached['wall_s'] / 60:.1f} min after the start ({reached[metric]:.4f})"
            )
        else:
            lines.append(f"  {metric} never reached {args.target}")
        if "met" in found:
            lines[-1] += f" (target within {CONVERGE_TARGET_MIN:g} min: " + (
                "met)" if found["met"] else "NOT met)"
            )
    within = f" within {args.budget_min:g} min" if args.budget_min else ""
    if best:
        lines.append(
            f"  best {metric}{within}: {best[metric]:.4f} at epoch {best['epoch']} "
            f"({best['wall_s'] / 60:.1f} min)"
        )
    else:
        lines.append(f"  no epoch ended{within}")
    return lines


# --------------------------------------------------------------------------------- main


def _settings(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names}


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive; got {text!r}")
        return value

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.finetune",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", help="torchvision architecture")
    common.add_argument("--batch", type=_positive(int))
    common.add_argument("--image-size", type=_positive(int), help="pixels (crop side, min_size)")
    common.add_argument("--workers", type=int, help="DataLoader worker processes")
    common.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--torch-threads", type=int, default=0, help="0: as segserve picks")
    common.add_argument("--out", type=Path, help="results folder")
    common.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    throughput = modes.add_parser(
        "throughput", parents=[common], help="segserve's training step vs the reference loop"
    )
    throughput.add_argument("--steps", type=_positive(int), help="timed steps a block (10)")
    throughput.add_argument("--rounds", type=_positive(int), help="segserve blocks (4)")
    throughput.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=True, help="CUDA only, both sides"
    )
    for mode, help_ in (
        ("converge", "time for the real command to reach val_miou --target"),
        ("converge-instance", "Mask R-CNN: best val_mask_ap50 within --budget-min"),
    ):
        sub = modes.add_parser(mode, parents=[common], help=help_)
        defaults = CONVERGE[mode]
        sub.add_argument("--start", choices=("scratch", "backbone", "pretrained"))
        sub.add_argument("--train", type=_positive(int), help=f"images ({defaults.train})")
        sub.add_argument("--val", type=_positive(int), help=f"images ({defaults.val})")
        sub.add_argument("--epochs", type=_positive(int), help=f"default {defaults.epochs}")
        sub.add_argument("--lr", type=_positive(float))
        sub.add_argument("--optimizer", choices=("sgd", "adamw"))
        sub.add_argument("--bn-images", type=_positive(int))
        sub.add_argument("--target", type=float, help=f"metric to reach ({defaults.target})")
        sub.add_argument(
            "--budget-min", type=float, help=f"Ctrl-C after this ({defaults.budget_min}; 0: none)"
        )
        sub.add_argument(
            "--finetune-args", default="", help="more options for the command, one string"
        )
    args = parser.parse_args(argv)
    if args.mode == "throughput":
        base: Any = QUICK_THROUGHPUT if args.quick else THROUGHPUT
        args.model = args.model or "lraspp_mobilenet_v3_large"
    else:
        base = (QUICK_CONVERGE if args.quick else CONVERGE)[args.mode]
    for name in base.__dataclass_fields__:
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(base, name))
    if args.mode == "throughput" and args.rounds > MAX_ROUNDS:
        parser.error(f"--rounds: at most {MAX_ROUNDS}")
    if args.mode == "throughput" and task_of(args.model) != "semantic":
        parser.error(f"--model: {args.model} is not semantic (the reference loop is)")
    if args.workers < 0:
        parser.error("--workers: 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from app.threads import configure_torch_threads

    threads = configure_torch_threads(args.torch_threads)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"finetune-{args.mode}-{args.model}{'-quick' if args.quick else ''}"
    out: Path = args.out or RESULTS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.finetune", *argv]),
        "started": stamp,
        "machine": machine(),
        "process": {"torch_threads": threads},
    }
    lscpu = meta["machine"]["lscpu"]
    print(
        f"{meta['machine']['cpu']} ({lscpu['cpus']} CPUs, {meta['machine']['cores usable']} "
        f"usable; {' '.join(lscpu['relevant_flags']) or 'no avx2/avx512/amx'}), torch "
        f"{torch.__version__}, {threads} threads, load {meta['machine']['load average at start']}",
        flush=True,
    )
    print(f"== {args.mode}", flush=True)
    run = run_throughput if args.mode == "throughput" else run_converge
    result = {"meta": meta, "mode": args.mode, **run(args, out)}
    print("\n".join(result["summary"]))
    print(f"wrote {save_json(result, out / 'results.json')}")
    command = result.get("command", {})
    # The command failing is a failed bench; stopped at the budget (exit 130) is not.
    return 1 if command.get("returncode", 0) and not command["interrupted_at_budget"] else 0


if __name__ == "__main__":
    sys.exit(main())
