"""Torch datasets and loaders over checked samples: decoding in worker processes, so the
model never waits for JPEG decoding."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from app.training.augment import instance_train, semantic_train
from app.training.datasets import (
    InstanceSample,
    Sample,
    SemanticSample,
    instance_masks,
    read_image,
    read_mask,
)


class SemanticTrainSet(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Augmented (image, target) pairs for a semantic network."""

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.samples = [s for s in samples if isinstance(s, SemanticSample)]
        self.size, self.mean, self.std = size, mean, std

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        return semantic_train(
            read_image(sample.image),
            read_mask(sample.mask),
            base_size=self.size,
            crop_size=self.size,
            mean=self.mean,
            std=self.std,
        )


class SemanticCalibrationSet(TorchDataset[torch.Tensor]):
    """Training images prepared as the served model sees them (the model file's resize, the
    preset's normalisation), centre-cropped to a square so they batch: what batch-norm
    statistics are recomputed on."""

    def __init__(self, samples: Sequence[Sample], *, preprocess: Any, size: int) -> None:
        self.samples = [s for s in samples if isinstance(s, SemanticSample)]
        self.preprocess, self.size = preprocess, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = torch.from_numpy(read_image(self.samples[index].image)).permute(2, 0, 1)
        prepared = self.preprocess(image.contiguous())
        return TF.center_crop(prepared, [self.size, self.size])


Target = dict[str, torch.Tensor]


class InstanceTrainSet(TorchDataset[tuple[torch.Tensor, Target]]):
    """(image, target) pairs for Mask R-CNN; crowd regions and degenerate boxes are left out
    of the targets, as torchvision's reference does (``ConvertCocoPolysToMask``)."""

    def __init__(self, samples: Sequence[Sample], *, augment: bool = True) -> None:
        self.samples = [s for s in samples if isinstance(s, InstanceSample)]
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        sample = self.samples[index]
        image = read_image(sample.image)
        keep = [i for i, a in enumerate(sample.annotations) if not a.iscrowd]
        masks = instance_masks(sample)[keep] if keep else np.zeros((0, *image.shape[:2]), np.uint8)
        boxes = np.array([sample.annotations[i].box for i in keep], np.float32).reshape(-1, 4)
        labels = np.array([sample.annotations[i].label for i in keep], np.int64)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        tensor, box, mask = instance_train(
            image, boxes[valid], masks[valid], flip=None if self.augment else False
        )
        return tensor, {"boxes": box, "labels": torch.from_numpy(labels[valid]), "masks": mask}


def _list_collate(batch: list[Any]) -> tuple[list[Any], list[Any]]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def _leave_interrupts_to_the_trainer(worker_id: int) -> None:
    # Ctrl-C on a terminal reaches the whole process group: workers that died of it would
    # fail the main process's next fetch before it could save its state (app/training/finetune.py
    # stops after the current step instead).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(
    dataset: TorchDataset[Any],
    *,
    batch: int,
    shuffle: bool,
    workers: int,
    seed: int,
    drop_last: bool,
    lists: bool = False,
    pin: bool = False,
) -> DataLoader[Any]:
    """A loader whose order, worker seeds and so augmentations depend on ``seed`` only."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        drop_last=drop_last,
        collate_fn=_list_collate if lists else None,
        pin_memory=pin,  # page-locked batches copy to a GPU asynchronously
        worker_init_fn=_leave_interrupts_to_the_trainer,
    )
