"""Concurrent requests of mixed sizes form batches by network shape and change no result.

The first request (the "blocker") is held inside the model until every other request is
queued, so the batches that follow are decided by the queue alone, not by timing: each group
of images the network sees at one shape must run as ceil(n / max_batch_size) batches, and no
batch may mix shapes. The shapes are computed by torchvision's own transforms, not by
segserve. Each result must equal the reference for its image run alone (up to the rounding
that another batch size brings, see ``reference``).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.conftest import Checkpoints, Serve, Service
from tests.integration.reference import (
    SCORE_ATOL,
    assert_class_map_matches,
    assert_instances_match,
    decode_png_array,
    instance_reference,
    make_image,
    png_bytes,
    quiet_count,
    quiet_threshold,
    rcnn_network_shape,
    semantic_reference,
)

pytestmark = pytest.mark.integration

GUARD_S = 120.0  # bound on every wait, so that a hang fails the test instead of the suite

Size = tuple[int, int]  # (height, width); every image of a test has its own size


class RecordingPredictor:
    """Stands in for a served model's predictor: delegates everything, records each batch.

    The first batch waits at a gate until the test releases it.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.batches: list[list[Size]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def predict_batch(self, images: Sequence[np.ndarray], params: Sequence[Any]) -> list[Any]:
        self.batches.append([(int(im.shape[0]), int(im.shape[1])) for im in images])
        if len(self.batches) == 1:
            self.entered.set()
            if not self.release.wait(GUARD_S):
                raise RuntimeError("the test never released the first batch")
        return self._inner.predict_batch(images, params)


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


async def run_gated(
    service: Service,
    model: str,
    path: str,
    blocker: bytes,
    requests: list[tuple[bytes, dict[str, Any]]],
) -> tuple[list[list[Size]], list[httpx.Response]]:
    """Send ``blocker``, then ``requests`` concurrently while it is held in the model.

    Returns the batches that ran after the blocker's, and the responses to ``requests``.
    """
    served = service.registry.models[model]
    spy = RecordingPredictor(served.predictor)
    served.predictor = spy  # type: ignore[assignment]

    def post(data: bytes, params: dict[str, Any]) -> asyncio.Task[httpx.Response]:
        return asyncio.create_task(
            service.client.post(
                path, params=params, content=data, headers={"content-type": "image/png"}
            )
        )

    first = post(blocker, {})
    tasks: list[asyncio.Task[httpx.Response]] = []
    try:
        await until(spy.entered.is_set, "the blocker reached the model")
        tasks = [post(data, params) for data, params in requests]
        await until(lambda: served.batcher.queue_depth == len(requests), "every request was queued")
    finally:
        spy.release.set()
    responses = await asyncio.wait_for(asyncio.gather(first, *tasks), GUARD_S)
    for response in responses:
        assert response.status_code == 200, response.text
    assert spy.batches[0] == [spy.batches[0][0]], "the blocker ran alone"
    return spy.batches[1:], list(responses[1:])


def assert_batched_by_shape(
    batches: list[list[Size]], network_shape: dict[Size, Size], max_batch_size: int
) -> None:
    assert sorted(s for batch in batches for s in batch) == sorted(network_shape), (
        "every image ran exactly once"
    )
    for batch in batches:
        assert len(batch) <= max_batch_size
        shapes = {network_shape[s] for s in batch}
        assert len(shapes) == 1, f"batch {batch} mixes network shapes {shapes}"
    # Everything was queued when the gate opened: each shape's images fill as few batches
    # as max_batch_size allows.
    per_shape = Counter(network_shape.values())
    runs = Counter(network_shape[batch[0]] for batch in batches)
    assert runs == {shape: math.ceil(n / max_batch_size) for shape, n in per_shape.items()}
    assert max(len(batch) for batch in batches) > 1


async def test_semantic_batches_by_shape_and_keeps_results(
    checkpoints: Checkpoints, serve: Serve
) -> None:
    architecture = "deeplabv3_mobilenet_v3_large"
    case = checkpoints.get(architecture)
    max_batch_size = 8
    # The preset resizes the short side to 520: 40x40, 64x64 and 97x97 all reach the network
    # at 520x520; 40x50 and 80x100 at 520x650; 50x40 at 650x520 (interleaved on purpose).
    sizes: list[Size] = [(40, 40), (40, 50), (64, 64), (50, 40), (80, 100), (97, 97)]
    blocker = png_bytes(make_image(60, 80, seed=99))  # 520x693: a shape of its own
    images = {s: png_bytes(make_image(*s, seed=30 + i)) for i, s in enumerate(sizes)}
    references = {s: semantic_reference(case.model, architecture, d) for s, d in images.items()}
    network_shape = {s: shape for s, (_, shape) in references.items()}
    assert len(set(network_shape.values())) == 3

    toml = case.toml(max_batch_size=max_batch_size, max_wait_ms=20)
    async with serve(toml) as service:
        batches, responses = await run_gated(
            service, case.name, "/segment", blocker, [(images[s], {}) for s in sizes]
        )

    assert_batched_by_shape(batches, network_shape, max_batch_size)
    for size, response in zip(sizes, responses, strict=True):
        got = decode_png_array(response.content)
        assert_class_map_matches(got, references[size][0], exact=False)


async def test_instance_batches_by_shape_and_keeps_results(
    checkpoints: Checkpoints, serve: Serve
) -> None:
    architecture = "maskrcnn_resnet50_fpn_v2"
    case = checkpoints.get(architecture)
    max_batch_size = 3
    # min_size 128 / max_size 192, padded to multiples of 32: 64x96, 100x150, 90x130 and
    # 120x175 all reach the network at 128x192 (4 images: a batch of 3 and one of 1);
    # 96x64 and 150x100 at 192x128; 80x80 at 128x128.
    sizes: list[Size] = [(64, 96), (96, 64), (100, 150), (80, 80), (90, 130), (150, 100)]
    sizes.append((120, 175))
    blocker = png_bytes(make_image(50, 150, seed=99))  # 64x192: a shape of its own
    images = {s: png_bytes(make_image(*s, seed=40 + i)) for i, s in enumerate(sizes)}
    references = {s: instance_reference(case.model, architecture, d) for s, d in images.items()}
    network_shape = {s: rcnn_network_shape(case.model, architecture, d) for s, d in images.items()}
    assert sorted(Counter(network_shape.values()).values()) == [1, 2, 4]

    # Each request its own cut, so that batches mix thresholds; every cut lies in a gap
    # of the reference's scores, where rounding cannot move a detection across it.
    cuts: list[dict[str, Any]] = []
    for i, size in enumerate(sizes):
        scores = references[size].scores
        low, high = ((20, 50), (5, 20), (50, 90))[i % 3]
        cut: dict[str, Any] = {
            "score_threshold": quiet_threshold(scores, low, high),
            "mask_threshold": (0.5, 0.3, 0.7)[i % 3],
            "max_instances": quiet_count(scores, 2, 8) if i % 2 else 100,
        }
        assert min(abs(s - cut["score_threshold"]) for s in scores) > SCORE_ATOL
        cuts.append(cut)

    toml = case.toml(max_batch_size=max_batch_size, max_wait_ms=20)
    async with serve(toml) as service:
        requests = [
            (images[s], {**c, "mask_encoding": "rle"}) for s, c in zip(sizes, cuts, strict=True)
        ]
        batches, responses = await run_gated(service, case.name, "/instances", blocker, requests)

    assert_batched_by_shape(batches, network_shape, max_batch_size)
    for size, cut, response in zip(sizes, cuts, responses, strict=True):
        instances = response.json()["instances"]
        assert instances
        assert_instances_match(instances, references[size], case.categories, exact=False, **cut)
