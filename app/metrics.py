"""Prometheus metrics of one app, kept in the app's own ``CollectorRegistry``.

A registry per app (not prometheus-client's global one) keeps tests, and several apps in one
process, from sharing or double-registering series. Three sources feed it:

- once per request, :class:`app.request_log.RequestLogMiddleware` calls
  :meth:`ServiceMetrics.observe_request` (counts, end-to-end and stage latencies, rejections);
- each batcher reports the size of every batch it sends to its model (``on_batch``);
- queue depths, the loaded models and GPU memory are read from the model registry at scrape
  time, so they cost nothing between scrapes and are never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from app.errors import (
    DeadlineExceeded,
    ImageTooLarge,
    ImageUnprocessable,
    InternalError,
    PayloadTooLarge,
    QueueFull,
    UndecodableImage,
)

if TYPE_CHECKING:
    from app.serving import ModelRegistry

# Seconds, from 0.5 ms to the default 300 s request timeout: a GPU answers in milliseconds, a
# small CPU takes seconds per image, and a queued request waits up to its timeout
# (docs/PERFORMANCE.md, "The machine, and how to read the figures", has this CPU's latencies).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
# Every size up to 8 (the shipped TOMLs' caps) tells the batches apart; coarser above.
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64)
WINDOW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

# Error code (the JSON body's `code`) -> rejection reason, where several codes are one reason
# or a shorter name reads better on a dashboard. Any other code is its own reason.
_REASONS = {
    QueueFull.code: "queue_full",
    DeadlineExceeded.code: "deadline",
    PayloadTooLarge.code: "too_large",
    ImageTooLarge.code: "too_large",
    UndecodableImage.code: "bad_image",
    ImageUnprocessable.code: "bad_image",
}


def rejection_reason(code: str) -> str | None:
    """The ``reason`` label for an error answer; None for a 500, a failure not a refusal."""
    if code == InternalError.code:
        return None
    return _REASONS.get(code, code)


class ServiceMetrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self, models: Callable[[], ModelRegistry | None]) -> None:
        """``models`` returns the app's model registry (None while it loads)."""
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "segserve_requests",
            "Requests answered, by route template, model (empty when none) and HTTP status.",
            ["endpoint", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "segserve_request_duration_seconds",
            "End-to-end time from the request's arrival until its response was sent.",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "segserve_stage_duration_seconds",
            "Time per request in each stage of Server-Timing (decode, queue, infer, encode; "
            "stitch when tiled).",
            ["model", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "segserve_batch_size",
            "Images in each batch sent to a model (one observation per batch).",
            ["model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.windows = Histogram(
            "segserve_tiled_request_windows",
            "Windows each tiled request became (one observation per tiled request).",
            ["model"],
            buckets=WINDOW_BUCKETS,
            registry=self.registry,
        )
        self.rejections = Counter(
            "segserve_rejections",
            "Requests refused with an error answer (every 4xx, 503 and 504), by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(_ServingCollector(models))
        ProcessCollector(registry=self.registry)  # RSS, CPU seconds, open files

    def watch(self, models: ModelRegistry) -> None:
        """Have every model's batcher report its batch sizes here."""
        for name, model in models.models.items():
            model.batcher.on_batch = self.batch_size.labels(model=name).observe

    def observe_request(
        self,
        *,
        endpoint: str,
        model: str | None,
        status: int,
        seconds: float,
        stages: Mapping[str, float],
        error: str | None,
        counts: Mapping[str, int] | None = None,
    ) -> None:
        model_label = model or ""
        self.requests.labels(endpoint, model_label, str(status)).inc()
        self.latency.labels(endpoint, model_label).observe(seconds)
        for stage, stage_s in stages.items():
            self.stages.labels(model_label, stage).observe(stage_s)
        if counts and "windows" in counts:
            self.windows.labels(model_label).observe(counts["windows"])
        reason = rejection_reason(error) if error else None
        if reason is not None:
            self.rejections.labels(reason).inc()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (OpenMetrics when the scraper asks for it) and its Content-Type."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class _ServingCollector:
    """What the model registry holds right now, read at scrape time."""

    def __init__(self, models: Callable[[], ModelRegistry | None]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        registry = self._models()
        if registry is None:  # still loading: nothing served yet
            return
        depth = GaugeMetricFamily(
            "segserve_queue_depth",
            "Requests waiting in each model's queue (not counting the batch running).",
            labels=["model"],
        )
        info = InfoMetricFamily(
            "segserve_model", "Each loaded model, where it runs and how.", labels=["model"]
        )
        for name, model in registry.models.items():
            depth.add_metric([name], model.batcher.queue_depth)
            info.add_metric([name], _info_labels(model.describe()))
        yield depth
        yield info
        yield from _gpu_memory(str(m.predictor.device) for m in registry.models.values())


def _info_labels(described: Mapping[str, Any]) -> dict[str, str]:
    keys = ("task", "architecture", "device", "precision", "weights")
    return {key: str(described.get(key, "")) for key in keys}


def _gpu_memory(devices: Iterable[str]) -> Iterator[Metric]:
    """Allocated and reserved bytes of each CUDA device a model uses (nothing without one).

    Only the models' own devices: querying any other would create a CUDA context on it.
    """
    cuda = sorted({d for d in devices if d.startswith("cuda")})
    if not cuda:
        return
    import torch  # loaded already by the predictors; not needed on CPU-only scrapes

    if not torch.cuda.is_available():
        return
    allocated = GaugeMetricFamily(
        "segserve_gpu_memory_allocated_bytes",
        "GPU memory held by tensors (torch.cuda.memory_allocated).",
        labels=["device"],
    )
    reserved = GaugeMetricFamily(
        "segserve_gpu_memory_reserved_bytes",
        "GPU memory held by PyTorch's caching allocator (torch.cuda.memory_reserved).",
        labels=["device"],
    )
    for name in cuda:
        device = torch.device(name)
        allocated.add_metric([name], torch.cuda.memory_allocated(device))
        reserved.add_metric([name], torch.cuda.memory_reserved(device))
    yield allocated
    yield reserved
