"""Fake predictors for API and batching tests: the Predictor protocol, no torch model.

Their outputs are simple functions of the input, so a test can compute what the API must
answer; `gate` lets a test hold a batch in the model until it says go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from app.config import Settings
from app.predictors import InstanceParams, Predictor, TorchPredictor
from app.predictors.repository import BatchingSpec, ModelSpec
from app.results import Instance, InstanceResult, SemanticResult
from app.serving import ModelRegistry, ServedModel

SEM_CATEGORIES = ["__background__", "bright", "dark", "red"]
INST_CATEGORIES = ["__background__", "box", "bar"]


class FakePredictor:
    """The Predictor protocol without a network: subclasses compute results from the input."""

    source = "untrained"
    device = "cpu"
    precision = "fp32"
    precision_mode = "full"
    channels_last = False
    fold_batchnorm = False

    def __init__(self, spec: ModelSpec, categories: list[str]) -> None:
        self.spec = spec
        self.name = spec.name
        self.categories = categories
        self.batches: list[int] = []  # size of every batch run
        self.gate: threading.Event | None = None  # when set by a test, batches wait for it
        self.fail_with: Exception | None = None
        self.entered = threading.Event()  # set when a batch reaches the model
        self.params: list[Any] = []  # the request parameters of every image run

    def network_shape(self, height: int, width: int) -> tuple[int, int]:
        return (height, width)

    def warmup(self) -> None:
        pass

    def default_params(self) -> Any:
        return None

    def predict_windows(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError("only semantic models give window logits")

    describe = TorchPredictor.describe  # the real /models entry, from the fake's attributes

    def _enter(self, n: int, params: Sequence[Any]) -> None:
        self.params.extend(params)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=30)
        self.batches.append(n)
        if self.fail_with is not None:
            raise self.fail_with


def semantic_truth(image: np.ndarray) -> np.ndarray:
    """The fake semantic model's class map: 1 where bright, 2 where dark, 3 where red."""
    grey = image.mean(axis=2)
    out = np.zeros(image.shape[:2], dtype=np.uint8)
    out[grey > 200] = 1
    out[grey < 30] = 2
    out[(image[..., 0] > 200) & (image[..., 1] < 50) & (image[..., 2] < 50)] = 3
    return out


class FakeSemantic(FakePredictor):
    def predict_batch(self, images: Sequence[np.ndarray], params: Sequence[Any]) -> list[Any]:
        self._enter(len(images), params)
        return [SemanticResult(class_map=semantic_truth(img)) for img in images]

    def predict_windows(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One-hot logits of each window's truth: a tiled map equals the untiled one."""
        self._enter(len(windows), [None] * len(windows))
        classes = np.arange(len(self.categories))[:, None, None]
        return [(semantic_truth(w)[None] == classes).astype(np.float32) for w in windows]


def instance_truth(image: np.ndarray, count: int) -> list[Instance]:
    """`count` square instances along the diagonal, scores 0.99 down in steps of 0.9/count."""
    height, width = image.shape[:2]
    found = []
    for k in range(count):
        x, y = (k * 3) % max(width - 4, 1), (k * 2) % max(height - 4, 1)
        mask = np.ones((4, 4), dtype=bool)
        mask[1:3, 1:3] = k % 2 == 0  # every other instance has a 2x2 hole
        mask = mask[: height - y, : width - x]  # like a real crop, inside tiny images too
        found.append(
            Instance(
                class_id=1 + k % 2,
                score=0.99 - 0.9 * k / max(count, 1),
                box=(float(x), float(y), float(x + 4), float(y + 4)),
                mask=mask,
                origin=(x, y),
            )
        )
    return found


class FakeInstance(FakePredictor):
    instances_per_image = 5

    def default_params(self) -> Any:
        return InstanceParams()

    def predict_batch(self, images: Sequence[np.ndarray], params: Sequence[Any]) -> list[Any]:
        self._enter(len(images), params)
        results = []
        for image, p in zip(images, params, strict=True):
            found = [
                i
                for i in instance_truth(image, self.instances_per_image)
                if i.score >= p.score_threshold and (not p.classes or i.class_id in p.classes)
            ][: p.max_instances]
            results.append(InstanceResult(image.shape[0], image.shape[1], found))
        return results


def fake_specs() -> tuple[ModelSpec, ModelSpec]:
    sem = ModelSpec(
        name="fake-sem",
        task="semantic",
        architecture="deeplabv3_mobilenet_v3_large",
        weights="none",
        default=True,
        batching=BatchingSpec(max_batch_size=4, max_wait_ms=1),
    )
    inst = ModelSpec(
        name="fake-inst",
        task="instance",
        architecture="maskrcnn_resnet50_fpn_v2",
        weights="none",
        default=True,
        batching=BatchingSpec(max_batch_size=4, max_wait_ms=1),
    )
    return sem, inst


def fake_registry(settings: Settings, *predictors: Predictor[Any]) -> ModelRegistry:
    """A registry serving ``predictors`` (fakes, usually) as the app's loader would."""
    return ModelRegistry([ServedModel(predictor, settings) for predictor in predictors])


def fake_loader(*predictors: Predictor[Any]) -> Callable[[Settings], ModelRegistry]:
    """A ``create_app(loader=...)`` that serves ``predictors``."""
    return lambda settings: fake_registry(settings, *predictors)


def fake_pair() -> tuple[FakeSemantic, FakeInstance]:
    """The two fakes most tests serve: ``fake-sem`` and ``fake-inst``, both defaults."""
    sem_spec, inst_spec = fake_specs()
    return FakeSemantic(sem_spec, SEM_CATEGORIES), FakeInstance(inst_spec, INST_CATEGORIES)
