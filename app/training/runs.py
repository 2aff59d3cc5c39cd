"""A run folder (``runs/finetune/NAME``), as Ultralytics lays one out::

args.yaml        every argument and recipe value of the run
results.csv      one row per epoch: losses, validation metrics, learning rate, time
results.png      the same as plots
weights/last.pt  resumable state after the last finished (or interrupted) epoch
weights/best.pt  resumable state of the best validation metric
NAME.pt          the served checkpoint: the best epoch's tensors only (weights_only loads)
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from app.training.files import replacing

RESULTS = "results.csv"
PLOT = "results.png"
ARGS = "args.yaml"


class RunFolder:
    """Where a run writes; every file is replaced atomically (a crash leaves the old one)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def last(self) -> Path:
        return self.path / "weights" / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "weights" / "best.pt"

    def served(self, name: str) -> Path:
        return self.path / f"{name}.pt"

    def create(self, args: dict[str, Any]) -> None:
        """A fresh folder: whatever a previous run of the name left (--overwrite) goes."""
        if self.path.exists():
            shutil.rmtree(self.path)
        (self.path / "weights").mkdir(parents=True)
        with replacing(self.path / ARGS) as temporary:
            temporary.write_text(yaml.safe_dump(args, sort_keys=False), encoding="utf-8")

    def read_args(self) -> dict[str, Any]:
        data = yaml.safe_load((self.path / ARGS).read_text(encoding="utf-8"))
        return dict(data)

    def save_state(self, path: Path, state: dict[str, Any]) -> None:
        _atomic_save(state, path)

    def write_results(self, rows: Sequence[dict[str, Any]]) -> None:
        """results.csv and results.png from every epoch so far."""
        if not rows:
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with replacing(self.path / RESULTS) as temporary, temporary.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        plot_results(rows, self.path / PLOT)


def plot_results(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """One panel per loss and per validation metric, against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows[0] if k.startswith(("loss", "val_")) and _numeric(rows, k)]
    if not keys:
        return
    columns = min(len(keys), 4)
    lines = -(-len(keys) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.6 * lines), squeeze=False)
    epochs = [row["epoch"] for row in rows]
    for axis, key in zip(axes.flat, keys, strict=False):
        axis.plot(epochs, [row[key] for row in rows], marker="o", markersize=3)
        axis.set_title(key, fontsize=9)
        axis.set_xlabel("epoch", fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    figure.tight_layout()
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)


def _numeric(rows: Sequence[dict[str, Any]], key: str) -> bool:
    return all(isinstance(row.get(key), int | float) for row in rows)


def _atomic_save(obj: Any, path: Path) -> None:
    with replacing(path) as temporary:
        torch.save(obj, temporary)


def save_served_checkpoint(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Tensors only, on the CPU, without the training-only auxiliary head."""
    tensors = {
        k: v.detach().cpu().clone()
        for k, v in state_dict.items()
        if not k.startswith("aux_classifier.")
    }
    _atomic_save(tensors, path)
