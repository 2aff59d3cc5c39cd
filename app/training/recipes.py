"""Training defaults: torchvision's reference recipes (``references/segmentation`` and
``references/detection``), scaled to one process, each overridable from the command line.

Semantic (train.py of references/segmentation): SGD, momentum 0.9, weight decay 1e-4, lr 0.02
for a total batch of 32 (8 GPUs x 4), a poly schedule (power 0.9) stepped every iteration,
the auxiliary loss at weight 0.5 with its head at 10x the learning rate, random resize from
0.5x to 2x the base size, horizontal flip, random crop. Instance (references/detection,
Mask R-CNN): SGD, momentum 0.9, weight decay 1e-4, lr 0.02 for a total batch of 16, a linear
warm-up over the first 1000 iterations from 0.001x, step decay by 0.1 at epochs 16 and 22 of
26, horizontal flip, three trainable backbone layers. The learning rate scales linearly with
the batch (the linear scaling rule both recipes follow).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Optimizer = Literal["sgd", "adamw"]
Task = Literal["semantic", "instance"]

# The total batch each reference learning rate was tuned for.
_REFERENCE_BATCH = {"semantic": 32, "instance": 16}
_REFERENCE_LR = {"semantic": 0.02, "instance": 0.02}


@dataclass
class Recipe:
    """Every hyper-parameter of a run (written to the run folder's args.yaml)."""

    task: Task
    epochs: int
    batch: int
    lr: float
    optimizer: Optimizer = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    image_size: int = 520  # semantic: served short side and crop; instance: min_size
    aux_weight: float = 0.5  # semantic networks with an auxiliary head
    poly_power: float = 0.9  # semantic schedule
    warmup_iters: int = 0  # linear warm-up from warmup_factor x lr
    warmup_factor: float = 0.001
    lr_steps: list[int] = field(default_factory=list)  # instance: epochs where lr x lr_gamma
    lr_gamma: float = 0.1
    trainable_backbone_layers: int | None = None  # Mask R-CNN, pretrained or backbone start
    freeze_backbone: bool = False
    amp: bool = True  # on CUDA only: mixed precision (float16 autocast with a grad scaler)
    patience: int = 0  # epochs without improvement before stopping; 0: never stop early
    workers: int = 2
    seed: int = 0
    bn_images: int = 256  # training images the batch-norm statistics are recomputed on

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_recipe(task: Task, *, batch: int | None = None, epochs: int | None = None) -> Recipe:
    """The reference recipe of ``task`` for a batch of ``batch`` (default 4 / 2)."""
    if task == "semantic":
        batch = 4 if batch is None else batch
        epochs = 30 if epochs is None else epochs
        return Recipe(
            task=task,
            epochs=epochs,
            batch=batch,
            lr=scaled_lr(task, batch),
            image_size=520,
        )
    batch = 2 if batch is None else batch
    epochs = 26 if epochs is None else epochs
    return Recipe(
        task=task,
        epochs=epochs,
        batch=batch,
        lr=scaled_lr(task, batch),
        image_size=800,
        warmup_iters=1000,
        lr_steps=[round(epochs * 16 / 26), round(epochs * 22 / 26)],
        trainable_backbone_layers=3,
    )


def scaled_lr(task: Task, batch: int) -> float:
    """The reference learning rate scaled linearly to ``batch``."""
    return _REFERENCE_LR[task] * batch / _REFERENCE_BATCH[task]
