"""``segserve evaluate``: a model's metrics on a dataset's split, in process or over HTTP.

In process, the model is loaded from the repository (``SEGSERVE_*`` settings) and its
predictor runs the images read as the service reads them; ``finetune`` validates through
:func:`evaluate_predictor` the same way. With ``--url`` the image files go unchanged to a
running service (which applies EXIF itself) through the Python client. Both ask for the
same outputs (whole images, no tiling; for instances every detection down to score 0.05, at
most 100 an image, masks cut at 0.5: COCO practice), so a model served alone gives the same
class maps and detections, hence the same metrics, either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np

from app.config import Settings
from app.errors import ConfigError, ServiceError
from app.evaluation import (
    ConfusionMatrix,
    Detection,
    InstanceMetrics,
    SemanticMetrics,
    detections,
    instance_metrics,
)
from app.predictors.instance import InstanceParams
from app.training.datasets import (
    DatasetError,
    InstanceSample,
    Sample,
    SemanticSample,
    read_image,
    read_mask,
)

if TYPE_CHECKING:  # imported where used: in-process evaluation needs no client
    from segserve_client import AsyncClient, Prediction

log = logging.getLogger(__name__)

Metrics = SemanticMetrics | InstanceMetrics


class ProgressSink(Protocol):
    """Told of each image once scored (app.predict.Progress is one): its source, the error
    it got or None, and a few words on its prediction."""

    def update(self, source: str, error: str | None, output: str | None) -> None: ...


EVAL_INSTANCE_PARAMS = InstanceParams(score_threshold=0.05, mask_threshold=0.5, max_instances=100)
# Images a predictor may hold waiting for company of their network shape, per batch slot.
_PENDING_BATCHES = 4


class EvaluationError(Exception):
    """The evaluation could not score every image (the reasons, one a line)."""


def sample_task(samples: Sequence[Sample]) -> str:
    """``semantic`` or ``instance``: what the samples are (all of one kind)."""
    kinds = {type(s) for s in samples}
    if kinds == {SemanticSample}:
        return "semantic"
    if kinds == {InstanceSample}:
        return "instance"
    raise ValueError("samples must be all SemanticSample or all InstanceSample, and not none")


def _instance_samples(samples: Sequence[Sample]) -> list[InstanceSample]:
    return [s for s in samples if isinstance(s, InstanceSample)]


# ------------------------------------------------------------------------- in process


def _classes_summary(class_map: np.ndarray) -> str:
    return f"{np.count_nonzero(np.bincount(class_map.ravel()))} classes"


def _shape_batches(
    predictor: Any, samples: Sequence[Sample], batch_size: int
) -> Iterator[list[tuple[int, np.ndarray]]]:
    """(index, image) batches whose images share the network's input shape.

    Such images see, batched, what each would see alone. Images wait for company in one
    group per shape; the fullest group is run early when too many wait, so memory stays
    bounded by a few batches whatever the dataset's variety of sizes.
    """
    groups: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    waiting = 0
    for index, sample in enumerate(samples):
        try:
            image = read_image(sample.image)
            key = predictor.network_shape(image.shape[0], image.shape[1])
        except ServiceError as exc:  # what the service would answer 413/422 to
            raise EvaluationError(f"{sample.image}: {exc}") from exc
        group = groups.setdefault(key, [])
        group.append((index, image))
        waiting += 1
        if len(group) < batch_size and waiting < batch_size * _PENDING_BATCHES:
            continue
        full = key if len(group) >= batch_size else max(groups, key=lambda k: len(groups[k]))
        waiting -= len(groups[full])
        yield groups.pop(full)
    yield from groups.values()


def evaluate_predictor(
    predictor: Any,
    samples: Sequence[Sample],
    categories: Sequence[str],
    *,
    batch_size: int = 1,
    progress: ProgressSink | None = None,
) -> Metrics:
    """Metrics of ``predictor`` (a :class:`~app.predictors.base.TorchPredictor`, or anything
    with its ``network_shape`` and ``predict_batch``) on ``samples``.

    The caller chooses the model's mode: ``finetune`` passes one wrapping the model it
    trains, in eval mode. ``categories`` are the dataset's K + 1 names, background first.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    task = sample_task(samples)
    if getattr(predictor, "task", task) != task:
        raise ValueError(f"a {predictor.task} predictor cannot be evaluated on {task} samples")
    if task == "semantic":
        matrix = ConfusionMatrix(len(categories), categories)
        params: Any = predictor.default_params()
    else:
        found: list[list[Detection]] = [[] for _ in samples]
        params = EVAL_INSTANCE_PARAMS
    for batch in _shape_batches(predictor, samples, batch_size):
        results = predictor.predict_batch([image for _, image in batch], [params] * len(batch))
        for (index, _), result in zip(batch, results, strict=True):
            sample = samples[index]
            if isinstance(sample, SemanticSample):
                matrix.update(read_mask(sample.mask), result.class_map)
                summary = _classes_summary(result.class_map)
            else:
                found[index] = detections(result)
                summary = f"{len(found[index])} detections"
            if progress is not None:
                progress.update(str(sample.image), None, summary)
    if task == "semantic":
        return matrix.compute()
    return instance_metrics(_instance_samples(samples), found, categories)


# ------------------------------------------------------------------------------ over HTTP


def check_model(
    name: str, task: str, model_task: str, model_categories: Sequence[str], names: Sequence[str]
) -> None:
    """ConfigError unless the model's task and number of categories are the dataset's."""
    if model_task != task:
        raise ConfigError(f"model {name!r} is for {model_task} segmentation; the dataset is {task}")
    if len(model_categories) != len(names):
        raise ConfigError(
            f"model {name!r} has {len(model_categories)} categories (background included) "
            f"but the dataset has {len(names)}: {', '.join(names)}"
        )
    if list(model_categories) != list(names):
        # Same count, other names (or order): classes are compared by index, which may be
        # what the user wants (renamed labels) or a mistake; say which is which.
        pairs = ", ".join(
            f"{i}: {m} / {n}"
            for i, (m, n) in enumerate(zip(model_categories, names, strict=True))
            if m != n
        )
        log.warning(
            "model %r and the dataset name some classes differently (index: model / "
            "dataset): %s; they are compared by index",
            name,
            pairs,
        )


async def _served_model(client: AsyncClient, model: str | None, task: str) -> dict[str, Any]:
    """The /models entry of ``model`` (the task's default when None)."""
    served = (await client.models())["models"]
    for entry in served:
        if entry["name"] == model or (model is None and entry["task"] == task and entry["default"]):
            return dict(entry)
    what = f"model {model!r}" if model else f"a default {task} model"
    listed = ", ".join(f"{m['name']} ({m['task']})" for m in served) or "none"
    raise ConfigError(f"the service serves no {what}; it serves: {listed}")


def _query(task: str, model: str) -> dict[str, Any]:
    """What to ask the service for: whole images (tile 0), outputs exactly as in process."""
    if task == "semantic":
        return {"model": model, "format": "png", "tile": 0}
    p = EVAL_INSTANCE_PARAMS
    return {
        "model": model,
        "format": "json",
        "mask_encoding": "rle",
        "tile": 0,
        "score_threshold": p.score_threshold,
        "mask_threshold": p.mask_threshold,
        "max_instances": p.max_instances,
    }


async def evaluate_client(
    client: AsyncClient,
    model: str | None,
    samples: Sequence[Sample],
    categories: Sequence[str],
    *,
    batch_size: int = 1,
    concurrency: int = 1,
    progress: ProgressSink | None = None,
) -> tuple[str, Metrics]:
    """:func:`evaluate_url` on a client already open (an ASGI transport in tests); also
    returns the name of the model evaluated."""
    from segserve_client import SegmentResult

    task = sample_task(samples)
    entry = await _served_model(client, model, task)
    name = str(entry["name"])
    check_model(name, task, entry["task"], entry["categories"], categories)
    matrix = ConfusionMatrix(len(categories), categories)
    found: list[list[Detection]] = [[] for _ in samples]
    failures: list[str] = []

    def score(prediction: Prediction) -> None:
        sample, result = samples[prediction.index], prediction.result
        error, summary = None, None
        if prediction.error is not None or result is None:
            error = str(prediction.error or "no result")
            failures.append(f"{sample.image}: {error}")
        elif isinstance(result, SegmentResult):
            assert isinstance(sample, SemanticSample)
            assert result.class_map is not None
            matrix.update(read_mask(sample.mask), result.class_map)
            summary = _classes_summary(result.class_map)
        else:
            # The service's JSON carries what Detection holds, bit for bit: float32 scores
            # and boxes as exact decimals, and the full-image RLE.
            found[prediction.index] = [
                Detection(i.class_id, i.score, i.bbox, i.rle or {}) for i in result.instances
            ]
            summary = f"{len(result.instances)} detections"
        prediction.result = None  # scored: its class map need not stay in memory
        if progress is not None:
            progress.update(str(sample.image), error, summary)

    await client.predict_many(
        [s.image for s in samples],
        task=task,
        batch_size=batch_size,
        concurrency=concurrency,
        on_result=score,
        **_query(task, name),
    )
    if failures:
        raise EvaluationError("\n".join(failures))
    if task == "semantic":
        return name, matrix.compute()
    return name, instance_metrics(_instance_samples(samples), found, categories)


def _evaluate_url(
    url: str,
    model: str | None,
    samples: Sequence[Sample],
    categories: Sequence[str],
    *,
    api_key: str | None,
    batch_size: int,
    concurrency: int,
    progress: ProgressSink | None,
) -> tuple[str, Metrics]:
    from segserve_client import AsyncClient

    async def run() -> tuple[str, Metrics]:
        async with AsyncClient(url, api_key) as client:
            return await evaluate_client(
                client,
                model,
                samples,
                categories,
                batch_size=batch_size,
                concurrency=concurrency,
                progress=progress,
            )

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    return asyncio.run(run())


def evaluate_url(
    url: str,
    model: str | None,
    samples: Sequence[Sample],
    categories: Sequence[str],
    *,
    api_key: str | None = None,
    batch_size: int = 1,
    concurrency: int = 1,
    progress: ProgressSink | None = None,
) -> Metrics:
    """The metrics of a served model (``None``: the task's default) at ``url``.

    Each image file is sent as it is (the service applies EXIF and the mode rules itself);
    an image the service fails is an :class:`EvaluationError`, a model whose task or number
    of categories is not the dataset's a ConfigError.
    """
    _, metrics = _evaluate_url(
        url,
        model,
        samples,
        categories,
        api_key=api_key,
        batch_size=batch_size,
        concurrency=concurrency,
        progress=progress,
    )
    return metrics


# ------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``segserve evaluate``."""
    parser.add_argument("--data", required=True, help="the dataset: DATA.yaml (or COCO JSON)")
    parser.add_argument("--split", choices=("val", "train"), default="val", help="default: val")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of train held out when the dataset has no val split: the value the "
        "model was fine-tuned with (default 0.1, as finetune's)",
    )
    parser.add_argument("--model", help="a model of the repository (default: the task's default)")
    parser.add_argument(
        "--url", help="evaluate a running service (default: load the model here, SEGSERVE_*)"
    )
    parser.add_argument(
        "--api-key", help="the service's API key (default: SEGSERVE_API_KEY, if set)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="images per batch, or per request with --url (default: 1: a batch of one is "
        "what makes this process, finetune's validation and a service agree exactly; more "
        "is faster and differs by float rounding only)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="--url: requests in flight (default: 1; the service batches concurrent requests)",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--limit", type=int, help="only the first N images of the split")


def _in_process(
    settings: Settings,
    model: str | None,
    samples: Sequence[Sample],
    categories: Sequence[str],
    batch_size: int,
    progress: ProgressSink,
) -> tuple[str, Metrics]:
    from app.predictors.loading import load_predictor
    from app.predictors.repository import load_repository
    from app.threads import configure_torch_threads

    task = sample_task(samples)
    specs = load_repository(settings.models_dir)
    if model is None:
        spec = next((s for s in specs if s.task == task and s.default), None)
        if spec is None:
            raise ConfigError(f"{settings.models_dir} has no {task} model (SEGSERVE_MODELS_DIR)")
    else:
        spec = next((s for s in specs if s.name == model), None)
        if spec is None:
            names = ", ".join(s.name for s in specs)
            raise ConfigError(f"unknown model {model!r}; the repository has: {names}")
    if spec.categories is not None:  # known before loading: refuse early
        check_model(spec.name, task, spec.task, spec.categories, categories)
    configure_torch_threads(settings.torch_threads)
    predictor = load_predictor(spec, settings)
    check_model(spec.name, task, spec.task, predictor.categories, categories)
    metrics = evaluate_predictor(
        predictor, samples, categories, batch_size=batch_size, progress=progress
    )
    return spec.name, metrics


def evaluate_command(
    settings: Settings,
    args: argparse.Namespace,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """``segserve evaluate`` with its parsed arguments: 0, or 1 when the dataset is refused
    or an image could not be scored (each problem printed)."""
    from app.predict import Progress
    from app.training.datasets import load_dataset

    out, err = stdout or sys.stdout, stderr or sys.stderr
    if args.batch < 1 or args.concurrency < 1:
        raise ConfigError("--batch and --concurrency must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    try:
        if not 0 < args.val_fraction < 1:
            raise ConfigError("--val-fraction must be between 0 and 1")
        dataset = load_dataset(Path(args.data), val_fraction=args.val_fraction)
        samples = (dataset.val if args.split == "val" else dataset.train)[: args.limit]
        if not samples:
            print(f"segserve: error: {args.data}: the {args.split} split has no images", file=err)
            return 1
        progress = Progress(len(samples), err)
        if args.url is not None:
            from app.predict import require_client

            require_client()
            key = args.api_key or (
                settings.api_key.get_secret_value() if settings.api_key else None
            )
            name, metrics = _evaluate_url(
                args.url,
                args.model,
                samples,
                dataset.categories,
                api_key=key,
                batch_size=args.batch,
                concurrency=args.concurrency,
                progress=progress,
            )
        else:
            name, metrics = _in_process(
                settings, args.model, samples, dataset.categories, args.batch, progress
            )
    except DatasetError as exc:
        print(f"segserve: error: {exc.report(args.data)}", file=err)
        return 1
    except EvaluationError as exc:
        print(f"segserve: error: some images could not be evaluated:\n{exc}", file=err)
        return 1
    report = {
        "data": str(args.data),
        "split": args.split,
        "model": name,
        "images": len(samples),
        **metrics.as_dict(),
    }
    if args.json:
        print(json.dumps(report, indent=2), file=out)
    else:
        print(f"{name} on {args.data} ({args.split}, {len(samples)} images)\n", file=out)
        print(metrics.table(), file=out)
    return 0
