"""load_dataset: read and check a whole dataset, refusing it with every problem at once.

A training run that fails on sample 3,000 after an hour, for a mask saved in RGB, costs far
more than checking every file up front; and fixing problems one run at a time is worse. So
every check runs on every file, the problems are collected, and one DatasetError lists them.
Nothing is written to disk.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar, cast

from app.training.datasets.coco import load_coco_split
from app.training.datasets.description import Description, Split, describe
from app.training.datasets.masks import IGNORE_INDEX, load_semantic_split
from app.training.datasets.samples import Dataset, DatasetError, Problem, Sample
from app.training.datasets.yolo import load_yolo_split

T = TypeVar("T")


def load_dataset(path: Path, *, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Read and CHECK the whole dataset at ``path`` (a YAML, or a COCO JSON).

    Raises DatasetError listing every problem found. Without a ``val`` split, a seeded
    ``val_fraction`` of train (at least one image) becomes the validation set.
    """
    path = Path(path)
    problems: list[Problem] = []
    if not 0.0 < val_fraction < 1.0:
        problems.append(Problem(str(path), f"val_fraction must be in (0, 1), got {val_fraction}"))
    description = describe(path, problems)
    if description is None:
        raise DatasetError(problems)
    # Threads, not processes: PNG inflation and file reads release the GIL, and nothing
    # has to be pickled. A couple more than the cores hide the file-system latency.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        dataset = _load(description, problems, pool, val_fraction, seed)
    if problems or dataset is None:
        raise DatasetError(problems)
    return dataset


def _load(
    d: Description,
    problems: list[Problem],
    pool: ThreadPoolExecutor,
    val_fraction: float,
    seed: int,
) -> Dataset | None:
    src = str(d.source)
    coco_ids: list[int] | None = None
    train: list[Sample]
    val: list[Sample] = []
    if d.format == "coco":
        coco = load_coco_split(d.train, problems, pool)
        categories = ["background", *coco.names] if coco else []
        coco_ids = coco.category_ids if coco else None
        train = list(coco.samples) if coco else []
        if d.val is not None:
            coco_val = load_coco_split(d.val, problems, pool)
            if coco and coco_val and coco_val.category_ids != coco.category_ids:
                problems.append(
                    Problem(
                        str(d.val.labels),
                        "the val categories differ from train's "
                        f"({coco_val.category_ids} vs {coco.category_ids}): use the same "
                        "categories list in both files",
                    )
                )
            if coco and coco_val and coco_val.names != coco.names:
                problems.append(
                    Problem(
                        str(d.val.labels),
                        f"the val category names {coco_val.names} differ from train's {coco.names}",
                    )
                )
            val = list(coco_val.samples) if coco_val else []
        if coco and d.names is not None and d.names not in (coco.names, categories):
            problems.append(
                Problem(
                    src,
                    f"names {d.names} differ from the COCO categories {coco.names} "
                    "(in ascending id order): drop names or make them agree",
                )
            )
    else:
        names = _check_names(src, d, problems)
        if names is None:
            return None
        categories = names if d.format == "masks" else ["background", *names]
        train = _split_samples(d, d.train, len(names), problems, pool)
        if d.val is not None:
            val = _split_samples(d, d.val, len(names), problems, pool)
    if d.val is None and train:
        if len(train) < 2:
            problems.append(
                Problem(src, "train has a single image: add a val split or more images")
            )
        else:
            train, val = split_train_val(train, val_fraction, seed)
    if problems:
        return None
    return Dataset(
        # describe() admitted only these values.
        task=cast(Literal["semantic", "instance"], d.task),
        format=cast(Literal["masks", "coco", "yolo"], d.format),
        categories=categories,
        train=train,
        val=val,
        source=d.source,
        coco_category_ids=coco_ids,
    )


def _split_samples(
    d: Description, split: Split, count: int, problems: list[Problem], pool: ThreadPoolExecutor
) -> list[Sample]:
    if d.format == "masks":
        return list(load_semantic_split(split, count, problems, pool))
    return list(load_yolo_split(split, count, problems, pool))


def _check_names(src: str, d: Description, problems: list[Problem]) -> list[str] | None:
    names = d.names or []
    if d.format == "masks" and len(names) < 2:
        problems.append(
            Problem(src, "no classes: names must list the background (0) and at least one class")
        )
        return None
    if d.format == "yolo" and not names:
        problems.append(Problem(src, "no classes: names must list at least one class"))
        return None
    if d.format == "masks" and len(names) > IGNORE_INDEX:
        problems.append(
            Problem(
                src,
                f"{len(names)} names: mask values stop at "
                f"{IGNORE_INDEX - 1} ({IGNORE_INDEX} is ignore)",
            )
        )
        return None
    duplicates = [name for name, n in Counter(names).items() if n > 1]
    if duplicates:
        problems.append(Problem(src, f"duplicate class names: {', '.join(duplicates)}"))
        return None
    return names


def split_train_val(samples: list[T], val_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """A seeded, disjoint split: ``val_fraction`` (at least one) of ``samples`` to val.

    Both keep the input order, so the split depends only on the sample list and the seed.
    """
    count = max(1, round(len(samples) * val_fraction))
    count = min(count, len(samples) - 1)
    chosen = set(random.Random(seed).sample(range(len(samples)), count))
    train = [s for i, s in enumerate(samples) if i not in chosen]
    val = [s for i, s in enumerate(samples) if i in chosen]
    return train, val
