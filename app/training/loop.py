"""One training epoch: losses, mixed precision on CUDA, the learning-rate schedule, and a
stop with advice when the loss stops being a number."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from app.progress import ProgressBar
from app.training.augment import IGNORE
from app.training.recipes import Recipe


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run cannot continue as configured."""


@dataclass
class LrSchedule:
    """The learning-rate factor at an iteration: linear warm-up, then the recipe's decay
    (semantic: poly; instance: steps at epochs). A callable object, not a closure, so the
    scheduler's state_dict saves it and a resumed run continues the same curve."""

    task: str
    iters_per_epoch: int
    epochs: int
    warmup_iters: int
    warmup_factor: float
    poly_power: float
    lr_steps: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1

    def __call__(self, iteration: int) -> float:
        factor = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            factor = self.warmup_factor * (1 - alpha) + alpha
        if self.task == "semantic":
            total = self.iters_per_epoch * self.epochs
            return factor * max(1 - iteration / total, 0.0) ** self.poly_power
        epoch = iteration // self.iters_per_epoch
        return factor * self.lr_gamma ** sum(epoch >= step for step in self.lr_steps)


def make_schedule(recipe: Recipe, iters_per_epoch: int) -> LrSchedule:
    return LrSchedule(
        task=recipe.task,
        iters_per_epoch=iters_per_epoch,
        epochs=recipe.epochs,
        # torchvision's detection reference warms up over min(1000, len(loader) - 1) steps.
        warmup_iters=min(recipe.warmup_iters, max(iters_per_epoch - 1, 0)),
        warmup_factor=recipe.warmup_factor,
        poly_power=recipe.poly_power,
        lr_steps=list(recipe.lr_steps),
        lr_gamma=recipe.lr_gamma,
    )


def parameter_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """What the optimiser updates; a semantic auxiliary head learns at 10x (the reference)."""
    aux = getattr(model, "aux_classifier", None)
    aux_ids = {id(p) for p in aux.parameters()} if aux is not None else set()
    main = [p for p in model.parameters() if p.requires_grad and id(p) not in aux_ids]
    groups: list[dict[str, Any]] = [{"params": main}]
    if aux is not None:
        groups.append(
            {"params": [p for p in aux.parameters() if p.requires_grad], "lr": recipe.lr * 10}
        )
    return groups


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = parameter_groups(model, recipe)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )


def semantic_losses(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, aux_weight: float
) -> dict[str, torch.Tensor]:
    outputs = model(images)
    losses = {"loss_out": F.cross_entropy(outputs["out"], targets, ignore_index=IGNORE)}
    if outputs.get("aux") is not None:
        aux = F.cross_entropy(outputs["aux"], targets, ignore_index=IGNORE)
        losses["loss_aux"] = aux_weight * aux
    return losses


def to_device(batch: Any, device: torch.device) -> tuple[Any, Any]:
    images, targets = batch
    if isinstance(images, torch.Tensor):
        return images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    return (
        [i.to(device, non_blocking=True) for i in images],
        [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets],
    )


def losses_of(model: nn.Module, batch: Any, recipe: Recipe) -> dict[str, torch.Tensor]:
    """The recipe's losses for a batch already on the model's device."""
    images, targets = batch
    if recipe.task == "semantic":
        return semantic_losses(model, images, targets, recipe.aux_weight)
    return dict(model(images, targets))  # Mask R-CNN's five losses


@dataclass
class EpochPosition:
    """Where an epoch is: the steps done so far (what Ctrl-C saves, what --resume skips) and
    the loss sums over them, so a resumed epoch reports the mean of all its steps."""

    epoch: int
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)


def train_epoch(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    total_steps: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    recipe: Recipe,
    device: torch.device,
    position: EpochPosition,
    progress: ProgressBar,
    on_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Train on ``batches``, skipping the first ``position.step`` (already trained before a
    resume: they are still drawn, so the order and augmentations of the rest are the ones of
    an uninterrupted run); returns the mean of each loss over the epoch's steps.
    ``on_step`` runs after each step, when the model and optimiser are consistent (a Ctrl-C
    is honoured there)."""
    model.train()
    sums = position.sums
    amp = recipe.amp and device.type == "cuda"
    for index, batch in enumerate(batches):
        if index < position.step:
            continue
        on_device = to_device(batch, device)
        autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
        with autocast:
            losses = losses_of(model, on_device, recipe)
            loss = sum(losses.values(), torch.zeros((), device=device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        # One read of every loss, after the step (as the reference's logger does): reading
        # before the backward would make a GPU finish the forward before queueing the rest.
        values = torch.stack([loss.detach(), *(p.detach() for p in losses.values())]).tolist()
        value = values[0]
        if not math.isfinite(value):
            raise TrainingDiverged(_divergence_advice(value, position, recipe, optimizer, amp))
        for name, part in zip(losses, values[1:], strict=True):
            sums[name] = sums.get(name, 0.0) + part
        sums["loss"] = sums.get("loss", 0.0) + value
        position.step = index + 1
        progress.advance(f"loss {value:.4f}")
        if on_step is not None:
            on_step()
    return {name: total / max(position.step, 1) for name, total in sums.items()}


def _divergence_advice(
    value: float,
    position: EpochPosition,
    recipe: Recipe,
    optimizer: torch.optim.Optimizer,
    amp: bool,
) -> str:
    lr = optimizer.param_groups[0]["lr"]
    advice = [f"lower the learning rate (--lr {recipe.lr / 10:g}, now {recipe.lr:g})"]
    if recipe.task == "instance" and recipe.warmup_iters == 0:
        advice.append("warm up (--warmup-iters 1000: Mask R-CNN without warm-up diverges early)")
    if amp:
        advice.append("or train in full precision (--no-amp)")
    return (
        f"the loss became {value} at epoch {position.epoch + 1}, step {position.step + 1} "
        f"(learning rate {lr:.3g}): training stopped. Try: {'; '.join(advice)}"
    )
