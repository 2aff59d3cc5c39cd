"""The served models: each predictor with its batcher, looked up by task and name.

:class:`ModelRegistry` is built in the app's lifespan and is the only long-lived state the
routes see of the models (through ``app.api.deps``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from app import autotune, faults
from app.batching import Batcher, Completed
from app.config import Settings
from app.errors import ConfigError, ImageTooLarge, ModelNotFound
from app.predictors import Predictor, load_predictor
from app.predictors.repository import ModelSpec, Task

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Job:
    """One image queued for a model, with its request's parameters."""

    image: np.ndarray
    params: Any
    logits: bool = False  # a semantic tile window: its logits, not a class map


class ServedModel(Generic[ResultT]):
    """A predictor behind its own batcher: what a request is queued to."""

    def __init__(self, predictor: Predictor[ResultT], settings: Settings) -> None:
        self.predictor = predictor
        self.spec: ModelSpec = predictor.spec
        self.max_network_pixels = settings.max_network_pixels
        self._network_shape = functools.lru_cache(maxsize=4096)(predictor.network_shape)
        self.batcher: Batcher[Job, ResultT] = Batcher(
            self._run,
            name=predictor.name,
            max_batch_size=self.spec.batching.max_batch_size,
            max_wait_s=self.spec.batching.max_wait_ms / 1000,
            max_queue_size=settings.max_queue_size,
            retry_after_s=settings.retry_after_s,
        )
        self.autotune_enabled = settings.batch_autotune
        self.tuning: autotune.BatchTuning | None = None

    def _run(self, jobs: Sequence[Job]) -> list[ResultT]:
        images = [j.image for j in jobs]
        for image in images:
            faults.point("preprocess", image)
        faults.point("infer_batch", images)
        if jobs[0].logits:  # a batch holds one key, so all or none are windows
            return self.predictor.predict_windows(images)  # type: ignore[return-value]
        return self.predictor.predict_batch(images, [j.params for j in jobs])

    async def infer(
        self, image: np.ndarray, params: Any, timeout_s: float, *, admitted: bool = False
    ) -> Completed[ResultT]:
        """One image's result (``admitted``: one of a request admitted as a whole)."""
        shape = await self.checked_shape(image)
        return await self.batcher.submit(
            Job(image, params), key=shape, timeout_s=timeout_s, admitted=admitted
        )

    async def infer_window(
        self, window: np.ndarray, params: Any, timeout_s: float
    ) -> Completed[Any]:
        """One window of a tiled request, whose admission was decided for the whole request.

        Semantic models return the window's logits (its network input is the window itself);
        instance models detect in it as in an image. Windows of one request share a key.
        """
        if self.spec.task == "semantic":
            job, key = Job(window, params, logits=True), ("window", *window.shape[:2])
        else:
            job, key = Job(window, params), await self.checked_shape(window)
        return await self.batcher.submit(job, key=key, timeout_s=timeout_s, admitted=True)

    async def checked_shape(self, image: np.ndarray) -> tuple[int, int]:
        """The network shape ``image`` is batched by; 413 when it is too large to run."""
        height, width = image.shape[:2]
        # Torchvision's own resize code computes the shape (a few ms for Mask R-CNN): off the
        # event loop, and cached since inputs come in few distinct sizes.
        shape = await asyncio.to_thread(self._network_shape, height, width)
        if shape[0] * shape[1] > self.max_network_pixels:
            # The short-side resize of the semantic presets turns a thin strip into a huge
            # network input (1x300 -> 520x156000), which can exhaust memory or crash kernels.
            raise ImageTooLarge(
                f"an image of {width}x{height} pixels becomes {shape[1]}x{shape[0]} = "
                f"{shape[0] * shape[1]} pixels after model {self.spec.name!r}'s resize, over the "
                f"limit of {self.max_network_pixels} (SEGSERVE_MAX_NETWORK_PIXELS): its aspect "
                "ratio is too extreme"
            )
        return shape

    def warm_up(self) -> None:
        """The inference(s) before serving, on the inference thread, before the batcher starts.

        With autotune on, its measurement is the warm-up (its first run is untimed), so the
        model does not also run a separate warm-up image.
        """
        if self.autotune_enabled and self.spec.batching.max_batch_size > 1:
            self.tune_batch_size()
        else:
            self.predictor.warmup()

    def tune_batch_size(self) -> None:
        """Measure throughput per batch size and cap batches at the best (see app.autotune)."""
        configured = self.spec.batching.max_batch_size
        image, params = autotune.sample_image(), self.predictor.default_params()

        def run_batch(size: int) -> None:
            try:
                self.predictor.predict_batch([image] * size, [params] * size)
            except torch.cuda.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                raise autotune.BatchTooLarge(f"batch {size}: {exc}") from exc

        throughput = autotune.measure(run_batch, autotune.candidate_sizes(configured))
        self.tuning = autotune.choose(throughput, configured)
        self.batcher.max_batch_size = self.tuning.chosen
        log.info(
            "%s: max_batch_size %d (%s)", self.spec.name, self.tuning.chosen, self.tuning.reason
        )

    def describe(self) -> dict[str, Any]:
        return {
            **self.predictor.describe(),
            "batching": {
                "max_batch_size": self.batcher.max_batch_size,
                "max_wait_ms": self.spec.batching.max_wait_ms,
                "max_queue_size": self.batcher.max_queue_size,
                "autotune": self.tuning.describe() if self.tuning else None,
            },
            "tiling": self.spec.tiling.model_dump() if self.spec.tiling else None,
        }


class ModelRegistry:
    """Every served model by name: lookup by task, warm-up, start, drain and stop."""

    def __init__(self, models: Sequence[ServedModel[Any]]) -> None:
        self.models = {m.spec.name: m for m in models}

    def get(self, task: Task, name: str | None) -> ServedModel[Any]:
        """The named model of ``task`` (its default when ``name`` is None), else 404."""
        if name is None:
            for model in self.models.values():
                if model.spec.task == task and model.spec.default:
                    return model
            raise ModelNotFound(f"no {task} model is served (GET /models lists what is)")
        found = self.models.get(name)
        if found is None or found.spec.task != task:
            names = [n for n, m in self.models.items() if m.spec.task == task]
            why = "is not served" if found is None else f"is a {found.spec.task} model"
            raise ModelNotFound(
                f"model {name!r} {why}; {task} models: {', '.join(names) or 'none'}"
            )
        return found

    @classmethod
    def load(cls, specs: Sequence[ModelSpec], settings: Settings) -> ModelRegistry:
        served = []
        for spec in specs:
            started = time.perf_counter()
            predictor = load_predictor(spec, settings)
            log.info(
                "loaded %s (%s, %s) on %s in %.1f s",
                spec.name,
                spec.architecture,
                predictor.source,
                predictor.device,
                time.perf_counter() - started,
            )
            served.append(ServedModel(predictor, settings))
        return cls(served)

    async def warmup(self) -> None:
        for model in self.models.values():
            started = time.perf_counter()
            try:
                # On the model's own inference thread: CUDA/cuDNN handles are per thread.
                await model.batcher.run_in_worker(model.warm_up)
            except Exception as exc:
                raise ConfigError(
                    f"model {model.spec.name!r} failed its warm-up inference "
                    f"({type(exc).__name__}: {exc}); check its [options]"
                ) from exc
            log.info("warmed up %s in %.1f s", model.spec.name, time.perf_counter() - started)

    def start(self) -> None:
        for model in self.models.values():
            model.batcher.start()

    def drain_by(self, deadline: float) -> None:
        """Shutdown: every model refuses new work and runs queued work only while it can
        finish by ``deadline`` (loop time); see :meth:`app.batching.Batcher.drain_by`."""
        for model in self.models.values():
            model.batcher.drain_by(deadline)

    async def stop(self) -> None:
        """Let queued and running work finish, then stop every model's batcher."""
        await asyncio.gather(*(m.batcher.stop() for m in self.models.values()))
