"""The ``segserve finetune`` command line: arguments, the job they describe, the end of a run
(the served checkpoint, installed into the weights directory and the model repository)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import IO, Any

import torch

from app.config import Settings
from app.errors import ConfigError
from app.predictors.repository import MAX_TILE, MIN_TILE
from app.training.build import STARTS
from app.training.datasets import DatasetError, load_dataset
from app.training.finetune import Job, check_architecture, train
from app.training.install import check_installable, install
from app.training.loop import TrainingDiverged
from app.training.recipes import default_recipe
from app.training.runs import RunFolder, save_served_checkpoint

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DEFAULT_ARCHITECTURE = {"semantic": "deeplabv3_resnet50", "instance": "maskrcnn_resnet50_fpn"}
# Recipe fields a command-line option overrides (option dest -> Recipe field).
_RECIPE_OPTIONS = (
    "epochs",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "image_size",
    "aux_weight",
    "warmup_iters",
    "trainable_backbone_layers",
    "freeze_backbone",
    "amp",
    "patience",
    "workers",
    "seed",
    "bn_images",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``segserve finetune`` (docs/training.md)."""
    parser.add_argument("--data", help="the dataset: DATA.yaml, or a COCO instances JSON")
    parser.add_argument(
        "--model",
        help="torchvision architecture (default: deeplabv3_resnet50 for semantic data, "
        "maskrcnn_resnet50_fpn for instance data)",
    )
    parser.add_argument("--name", help="model name: run folder and models/NAME.toml")
    parser.add_argument(
        "--start",
        choices=STARTS,
        default="pretrained",
        help="pretrained: the architecture's published weights (default); backbone: its "
        "ImageNet backbone only; scratch: random. Files come from SEGSERVE_WEIGHTS_DIR",
    )
    parser.add_argument("--epochs", type=int, help="default: 30 semantic, 26 instance")
    parser.add_argument("--batch", type=int, help="images per step (default: 4 / 2)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the reference's, scaled)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"))
    parser.add_argument("--momentum", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument(
        "--image-size",
        type=int,
        help="semantic: the short side served and the crop trained on (default 520); "
        "instance: Mask R-CNN's min_size (default 800)",
    )
    parser.add_argument("--aux-weight", type=float, help="auxiliary loss weight (default 0.5)")
    parser.add_argument("--warmup-iters", type=int, help="linear warm-up steps (instance: 1000)")
    parser.add_argument("--trainable-backbone-layers", type=int, help="Mask R-CNN (default 3)")
    parser.add_argument(
        "--freeze-backbone", action="store_true", default=None, help="train the heads only"
    )
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        help="mixed precision on CUDA (default: on; no effect on CPU)",
    )
    parser.add_argument("--patience", type=int, help="stop after N epochs without improvement")
    parser.add_argument("--workers", type=int, help="data loading processes (default 2)")
    parser.add_argument("--seed", type=int, help="seed of the run (default 0)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: SEGSERVE_DEVICE, auto)")
    parser.add_argument("--bn-images", type=int, help="images for batch-norm statistics (256)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of train held out when the dataset has no val split (default 0.1)",
    )
    parser.add_argument("--project", default="runs/finetune", help="where run folders go")
    parser.add_argument("--resume", metavar="RUN", help="continue a run folder (or its last.pt)")
    parser.add_argument("--no-install", action="store_true", help="leave weights/ and models/")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace models/NAME.toml and the run folder"
    )


def _job(args: argparse.Namespace, task: str) -> Job:
    architecture = args.model or DEFAULT_ARCHITECTURE[task]
    check_architecture(architecture, task)
    recipe = default_recipe(task, batch=args.batch, epochs=args.epochs)  # type: ignore[arg-type]
    for option in _RECIPE_OPTIONS:
        value = getattr(args, option)
        if value is not None:
            setattr(recipe, option, value)
    if task == "instance" and args.epochs is not None:
        recipe.lr_steps = [round(recipe.epochs * 16 / 26), round(recipe.epochs * 22 / 26)]
    for option, least in (("epochs", 1), ("batch", 1), ("workers", 0), ("bn_images", 2)):
        if getattr(recipe, option) < least:
            raise ConfigError(f"--{option.replace('_', '-')} must be at least {least}")
    if not MIN_TILE <= recipe.image_size <= MAX_TILE:
        raise ConfigError(f"--image-size must be {MIN_TILE}..{MAX_TILE} pixels")
    if recipe.lr <= 0:
        raise ConfigError("--lr must be positive")
    if task == "semantic" and args.trainable_backbone_layers is not None:
        raise ConfigError(
            "--trainable-backbone-layers is Mask R-CNN's; for a semantic network use "
            "--freeze-backbone (the heads only) or leave it out (everything trains)"
        )
    name = args.name or f"{Path(args.data).stem}-{architecture}"
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"--name {name!r}: a model name is letters, digits, '.', '_' and '-' (it names "
            "the run folder, the weights file and models/NAME.toml)"
        )
    run = RunFolder(Path(args.project) / name)
    return Job(
        name=name,
        data=Path(args.data),
        architecture=architecture,
        start=args.start,
        recipe=recipe,
        val_fraction=args.val_fraction,
        run=run,
        install=not args.no_install,
        overwrite=args.overwrite,
        device=args.device,
    )


def _job_args(job: Job) -> dict[str, Any]:
    return {
        "name": job.name,
        "data": str(job.data),
        "model": job.architecture,
        "start": job.start,
        "val_fraction": job.val_fraction,
        "install": job.install,
        "recipe": job.recipe.as_dict(),
    }


def _resumed_job(target: str, device: str | None) -> Job:
    path = Path(target)
    run = RunFolder(path.parent.parent if path.suffix == ".pt" else path)
    if not run.last.is_file():
        raise ConfigError(f"--resume {target}: no {run.last} to resume from")
    saved = run.read_args()
    recipe = default_recipe(saved["recipe"]["task"])
    for key, value in saved["recipe"].items():
        setattr(recipe, key, value)
    return Job(
        name=saved["name"],
        data=Path(saved["data"]),
        architecture=saved["model"],
        start=saved["start"],
        recipe=recipe,
        val_fraction=saved["val_fraction"],
        run=run,
        install=saved["install"],
        overwrite=True,  # the run was allowed to install when it started
        resume=True,
        device=device,
        args=saved,
    )


def finetune_command(
    settings: Settings, args: argparse.Namespace, *, out: IO[str] | None = None
) -> int:
    """``segserve finetune``: 0 when the model is trained (and installed), 1 when the
    dataset is refused or training diverged, 130 after Ctrl-C (state saved)."""
    err = out or sys.stderr
    if args.resume:
        given = [
            o
            for o in ("data", "model", "name", "batch", *_RECIPE_OPTIONS)
            if getattr(args, o) is not None
        ]
        if given:
            options = ", ".join(f"--{o.replace('_', '-')}" for o in given)
            raise ConfigError(
                f"--resume continues a run with the arguments it started with (its "
                f"args.yaml); drop {options}, or start a new run"
            )
        job = _resumed_job(args.resume, args.device)
    elif args.data is None:
        raise ConfigError("--data is required (or --resume RUN)")
    elif not 0 < args.val_fraction < 1:
        raise ConfigError("--val-fraction must be between 0 and 1")
    try:
        dataset = load_dataset(
            job.data if args.resume else Path(args.data),
            val_fraction=job.val_fraction if args.resume else args.val_fraction,
        )
    except DatasetError as exc:
        print(f"segserve: error: {exc.report(args.data or job.data)}", file=err)
        return 1
    if not args.resume:
        job = _job(args, dataset.task)
        job.args = _job_args(job)
        # A folder without a resumable state (a run that failed in its first epoch) is
        # simply started again; one with a state is someone's work.
        if job.run.last.exists() and not job.overwrite:
            raise ConfigError(
                f"run folder {job.run.path} exists: --resume {job.run.path} to continue it, "
                "another --name, or --overwrite to replace it"
            )
    if job.install and not job.resume:
        check_installable(job.name, settings.models_dir, overwrite=job.overwrite)
    print(
        f"finetune {job.name}: {job.architecture} from {job.start} on {len(dataset.train)} "
        f"training and {len(dataset.val)} validation images, {len(dataset.categories) - 1} "
        f"classes ({', '.join(dataset.categories[1:])})",
        file=err,
    )
    try:
        trainer = train(job, dataset, settings, err)
    except KeyboardInterrupt:
        return 130
    except TrainingDiverged as exc:
        print(f"segserve: error: {exc}", file=err)
        return 1
    best = torch.load(job.run.best, map_location="cpu", weights_only=True)
    served = job.run.served(job.name)
    save_served_checkpoint(best["model"], served)
    print(
        f"best epoch {trainer.best_epoch}: {trainer.history[trainer.best_epoch - 1]}\n"
        f"served checkpoint: {served}\nresults: {job.run.path}/results.csv, results.png",
        file=err,
    )
    if job.install:
        weights, toml = install(
            trainer.spec,
            served,
            weights_dir=settings.weights_dir,
            models_dir=settings.models_dir,
            source=str(job.data),
        )
        print(f"installed {weights}\nwrote {toml}: `segserve serve` serves {job.name!r}", file=err)
    return 0
