"""``segserve finetune``: from a folder of labelled images to a served model.

Order matters: the dataset is checked, the architecture built and its starting weights found
(offline: a clear error) BEFORE the run folder, the weights directory or the model repository
see a single byte. Each epoch trains, recomputes the batch-norm statistics, measures the
validation metric through the serving predictor (:func:`app.evaluate.evaluate_predictor`, the
same code ``segserve evaluate`` runs) and saves a resumable state.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import torch
from torch import nn
from torch.utils.data import Subset

from app.config import Settings
from app.errors import ConfigError
from app.evaluate import evaluate_predictor
from app.predictors.loading import make_predictor, resolve_device
from app.predictors.preprocessing import model_preprocess
from app.predictors.repository import ModelSpec, builders_for
from app.predictors.weights import ResolvedWeights
from app.progress import ProgressBar
from app.training.batchnorm import recompute_statistics, trainable_batch_norms
from app.training.build import Start, build_trainable
from app.training.data import (
    InstanceTrainSet,
    SemanticCalibrationSet,
    SemanticTrainSet,
    make_loader,
)
from app.training.datasets import Dataset
from app.training.loop import (
    EpochPosition,
    make_optimizer,
    make_schedule,
    to_device,
    train_epoch,
)
from app.training.recipes import Recipe
from app.training.runs import RunFolder

# Mask R-CNN's resize: torchvision's 800 / 1333 bounds, scaled to the chosen short side.
_MAX_SIZE_RATIO = 1333 / 800


@dataclass
class Job:
    """Everything a run needs, decided before anything is written."""

    name: str
    data: Path
    architecture: str
    start: Start
    recipe: Recipe
    val_fraction: float
    run: RunFolder
    install: bool
    overwrite: bool
    resume: bool = False
    device: str | None = None  # default: SEGSERVE_DEVICE
    args: dict[str, Any] = field(default_factory=dict)

    def serving_spec(self, categories: list[str]) -> ModelSpec:
        """The model file the run ends with (its checkpoint named once it exists)."""
        semantic = self.recipe.task == "semantic"
        size = self.recipe.image_size
        options = {} if semantic else {"min_size": size, "max_size": round(size * _MAX_SIZE_RATIO)}
        return ModelSpec(
            name=self.name,
            task=self.recipe.task,
            architecture=self.architecture,
            checkpoint=f"{self.name}.pt",
            categories=categories,
            preprocessing={"resize": size} if semantic else {},  # type: ignore[arg-type]
            options=options,
        )


def _epoch_seed(recipe: Recipe, epoch: int) -> int:
    # Each epoch's shuffling, augmentation and dropout depend on (seed, epoch) only, so a
    # resumed run draws exactly what the uninterrupted one would have.
    return recipe.seed * 100_003 + epoch


class Trainer:
    """One run: the network, its data, optimiser and schedule, and the epochs."""

    def __init__(self, job: Job, dataset: Dataset, settings: Settings, out: IO[str]) -> None:
        self.job, self.dataset, self.settings, self.out = job, dataset, settings, out
        recipe = job.recipe
        self.recipe = recipe
        self.device = resolve_device(job.device or settings.device)
        self.spec = job.serving_spec(dataset.categories)
        options: dict[str, Any] = dict(self.spec.options)
        if recipe.trainable_backbone_layers is not None:
            options["trainable_backbone_layers"] = recipe.trainable_backbone_layers
        model = build_trainable(
            job.architecture,
            len(dataset.categories),
            start=job.start,
            weights_dir=settings.weights_dir,
            allow_download=settings.allow_download,
            seed=recipe.seed,
            options=options,
        )
        if recipe.freeze_backbone:
            backbone: Any = model.backbone
            frozen = backbone.body if hasattr(backbone, "body") else backbone  # Mask R-CNN: body
            for parameter in frozen.parameters():
                parameter.requires_grad_(False)
        if recipe.batch < 2 and trainable_batch_norms(model):
            raise ConfigError(
                f"--batch {recipe.batch}: {job.architecture} has batch norms that train, and a "
                "batch of one gives them no statistics to learn from (or fails outright); use "
                "--batch 2 or more"
            )
        if len(dataset.train) < recipe.batch:
            raise ConfigError(
                f"the training split has {len(dataset.train)} images, fewer than --batch "
                f"{recipe.batch}: add images or lower --batch"
            )
        self.model = model.to(self.device)
        self.train_loader = self._train_loader()
        self.steps = len(self.train_loader)
        self.optimizer = make_optimizer(self.model, recipe)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, make_schedule(recipe, self.steps)
        )
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=recipe.amp and self.device.type == "cuda"
        )
        self.epoch = 0
        self.position = EpochPosition(epoch=0)
        self.history: list[dict[str, Any]] = []
        self.best: float | None = None
        self.best_epoch = 0
        # The generators' states after the last trained step (what a resume restores).
        self.position_rng: torch.Tensor | None = None
        self.position_cuda_rng: list[torch.Tensor] | None = None
        # Ctrl-C seen and not yet honoured (train() installs the handler that fills it).
        self.interrupts: list[int] = []

    # ------------------------------------------------------------------------ data

    def _train_loader(self) -> Any:
        recipe = self.recipe
        train = self.dataset.train
        if recipe.task == "semantic":
            preset = model_preprocess(self.spec)
            data: Any = SemanticTrainSet(
                train, size=recipe.image_size, mean=preset.mean, std=preset.std
            )
        else:
            data = InstanceTrainSet(train)
        return make_loader(
            data,
            batch=recipe.batch,
            shuffle=True,
            workers=recipe.workers,
            seed=_epoch_seed(recipe, 0),
            drop_last=True,  # a last batch of one would break batch norm (the reference's choice)
            lists=recipe.task == "instance",
            pin=self.device.type == "cuda",
        )

    def _calibration_batches(self) -> tuple[Any, Any]:
        """Training images as the served model sees them, and how to run them in train mode."""
        recipe = self.recipe
        count = min(recipe.bn_images, len(self.dataset.train))
        if count % recipe.batch == 1 and count > 1:
            count -= 1  # a last batch of one image gives batch norm nothing to average
        if recipe.task == "semantic":
            data: Any = SemanticCalibrationSet(
                self.dataset.train, preprocess=model_preprocess(self.spec), size=recipe.image_size
            )

            def forward(model: nn.Module, batch: Any) -> object:
                return model(batch.to(self.device))

        else:
            data = InstanceTrainSet(self.dataset.train, augment=False)

            def forward(model: nn.Module, batch: Any) -> object:
                return model(*to_device(batch, self.device))

        loader = make_loader(
            Subset(data, range(count)),
            batch=recipe.batch,
            shuffle=False,
            workers=recipe.workers,
            seed=recipe.seed,
            drop_last=False,
            lists=recipe.task == "instance",
            pin=self.device.type == "cuda",
        )
        return loader, forward

    # ------------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.position.epoch,
            "step": self.position.step,
            "loss_sums": dict(self.position.sums),
            "steps_per_epoch": self.steps,
            "rng": self.position_rng,
            "cuda_rng": self.position_cuda_rng,
            "history": self.history,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "categories": self.dataset.categories,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state["categories"] != self.dataset.categories:
            raise ConfigError(
                f"--resume: the run trained classes {state['categories']}, the dataset now "
                f"has {self.dataset.categories}: start a new run"
            )
        if state["steps_per_epoch"] != self.steps:
            raise ConfigError(
                f"--resume: the run had {state['steps_per_epoch']} steps an epoch, the "
                f"dataset now gives {self.steps}: its training images changed; start a new run"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.position = EpochPosition(
            epoch=int(state["epoch"]), step=int(state["step"]), sums=dict(state["loss_sums"])
        )
        self.position_rng = state.get("rng")
        self.position_cuda_rng = state.get("cuda_rng")
        self.history = list(state["history"])
        self.best = state["best"]
        self.best_epoch = int(state["best_epoch"])

    # ------------------------------------------------------------------------ epochs

    def validate(self) -> Any:
        """The validation metrics of the network as it would be served."""
        served = copy.deepcopy(self.model)
        if self.recipe.task == "semantic":
            served.aux_classifier = None  # type: ignore[assignment]
        weights = ResolvedWeights(None, self.dataset.categories, "finetune")
        # The service's own construction (precision, channels-last, folding from the
        # settings): the number printed is the served model's, not an approximation of it.
        predictor = make_predictor(self.spec, served.eval(), weights, self.device, self.settings)
        # One image a batch, as `segserve evaluate` does by default: batched convolutions
        # round differently, and the metric printed here must be the one evaluate reads.
        return evaluate_predictor(
            predictor, self.dataset.val, self.dataset.categories, batch_size=1
        )

    def run_epoch(self) -> dict[str, Any]:
        recipe, position = self.recipe, self.position
        started = time.monotonic()
        seed = _epoch_seed(recipe, position.epoch)
        torch.manual_seed(seed)
        self.train_loader.generator.manual_seed(seed)
        progress = ProgressBar(
            self.steps, f"epoch {position.epoch + 1}/{recipe.epochs}", stream=self.out
        )
        progress.done = position.step
        losses = train_epoch(
            self.model,
            self._resumed_batches(),
            total_steps=self.steps,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            recipe=recipe,
            device=self.device,
            position=position,
            progress=progress,
            on_step=self._remember_rng,
        )
        loader, forward = self._calibration_batches()
        recompute_statistics(self.model, loader, forward)
        metrics = self.validate()
        name, value = metrics.headline
        row: dict[str, Any] = {"epoch": position.epoch + 1}
        row.update({k: round(v, 6) for k, v in losses.items()})
        row.update({f"val_{k}": v for k, v in metrics.as_dict().items() if _scalar(v)})
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row["seconds"] = round(time.monotonic() - started, 1)
        self.history.append(row)
        improved = self.best is None or value > self.best
        if improved:
            self.best, self.best_epoch = value, position.epoch + 1
        self.position = EpochPosition(epoch=position.epoch + 1)
        self.position_rng = self.position_cuda_rng = None
        state = self.state()
        self.job.run.save_state(self.job.run.last, state)
        if improved:
            self.job.run.save_state(self.job.run.best, state)
        self.job.run.write_results(self.history)
        loss_text = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        mark = " *" if improved else ""
        print(
            f"epoch {row['epoch']}/{recipe.epochs}: {loss_text} | val {name} {value:.4f}{mark} "
            f"| {row['seconds']} s",
            file=self.out,
            flush=True,
        )
        return row

    def _remember_rng(self) -> None:
        self.position_rng = torch.get_rng_state()
        if self.device.type == "cuda":  # dropout and sampling on the GPU draw from these
            self.position_cuda_rng = torch.cuda.get_rng_state_all()
        if self.interrupts:
            raise KeyboardInterrupt

    def _resumed_batches(self) -> Any:
        """The epoch's batches; after a mid-epoch resume, the main generator is put back
        where it stood after the last trained step, once the skipped batches are drawn."""
        skip, rng, cuda_rng = self.position.step, self.position_rng, self.position_cuda_rng
        for index, batch in enumerate(self.train_loader):
            if skip and index == skip - 1 and rng is not None:
                torch.set_rng_state(rng)
                if cuda_rng is not None:
                    torch.cuda.set_rng_state_all(cuda_rng)
            yield batch

    def stale_epochs(self) -> int:
        return self.position.epoch - self.best_epoch


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------------------- the command


def check_architecture(architecture: str, task: str) -> None:
    if architecture not in builders_for(task):
        raise ConfigError(
            f"--model {architecture}: not a {task} architecture (the dataset is {task}); "
            f"choose one of {', '.join(builders_for(task))}"
        )


def train(job: Job, dataset: Dataset, settings: Settings, out: IO[str] = sys.stderr) -> Trainer:
    """Run ``job`` to its end (epochs, early stop or Ctrl-C); the trainer holds the result."""
    trainer = Trainer(job, dataset, settings, out)
    if job.resume:
        trainer.load_state(torch.load(job.run.last, map_location="cpu", weights_only=True))
        print(
            f"resuming {job.run.path} at epoch {trainer.position.epoch + 1}, "
            f"step {trainer.position.step}",
            file=out,
        )
    else:
        job.run.create(job.args)
    recipe = job.recipe
    try:
        with _deferred_interrupt(out) as trainer.interrupts:
            while trainer.position.epoch < recipe.epochs:
                if trainer.interrupts:
                    raise KeyboardInterrupt
                trainer.run_epoch()
                if recipe.patience and trainer.stale_epochs() >= recipe.patience:
                    print(
                        f"early stop: no better validation metric for {recipe.patience} "
                        f"epochs (best at epoch {trainer.best_epoch})",
                        file=out,
                    )
                    break
    except StoppedAtOnce:
        print(
            f"\nstopped at once: nothing saved now; {job.run.last} holds the last finished "
            f"epoch (or the last Ctrl-C's step): `segserve finetune --resume {job.run.path}`",
            file=out,
        )
        raise
    except KeyboardInterrupt:
        job.run.save_state(job.run.last, trainer.state())
        print(
            f"\ninterrupted: state saved at epoch {trainer.position.epoch + 1}, step "
            f"{trainer.position.step}; continue with `segserve finetune --resume {job.run.path}`",
            file=out,
        )
        raise
    return trainer


class StoppedAtOnce(KeyboardInterrupt):
    """A second Ctrl-C: the run stops where it is, and its state is not saved (it may be
    half-way through a step)."""


@contextlib.contextmanager
def _deferred_interrupt(out: IO[str]) -> Iterator[list[int]]:
    """Ctrl-C stops training after the current step, when the model and optimiser agree (a
    second Ctrl-C stops at once). Yields the list the signal handler appends to."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen  # signals reach the main thread only; nothing to defer here
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if seen:
            raise StoppedAtOnce  # anywhere, even inside an optimiser step: nothing is saved
        seen.append(signum)
        print("\nCtrl-C: stopping after this step (again to stop at once)", file=out)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)
