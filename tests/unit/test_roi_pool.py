"""RoIAlign over ranges of the boxes in threads: the same tensor as torchvision's pooler."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from app.predictors import roi_pool
from app.predictors.roi_pool import (
    MIN_ROIS_PER_PART,
    ParallelRoIAlign,
    _ranges,
    _slice_boxes,
    parallelise_roi_pools,
)

IMAGE_SHAPES = [(256, 320), (256, 320), (256, 320)]


@pytest.fixture
def ranges_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Three intra-op threads; yields the number of ranges run in the pool, per call."""
    runs: list[int] = []
    executor = ThreadPoolExecutor(3)

    class Counting:
        def submit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            runs.append(1)
            return executor.submit(*args, **kwargs)

    monkeypatch.setattr(roi_pool, "_executor", lambda threads: Counting())
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        yield runs
    finally:
        torch.set_num_threads(threads)
        executor.shutdown()


def _features(channels_last: bool) -> OrderedDict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    features = OrderedDict()
    for name, stride in [("0", 4), ("1", 8), ("2", 16), ("3", 32)]:
        level = torch.randn(3, 8, 256 // stride, 320 // stride, generator=generator)
        features[name] = (
            level.contiguous(memory_format=torch.channels_last) if channels_last else level
        )
    return features


def _boxes(counts: list[int]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    boxes = []
    for count in counts:
        corner = torch.rand(count, 2, generator=generator) * torch.tensor([280.0, 220.0])
        size = 4 + torch.rand(count, 2, generator=generator) * 200  # spans every FPN level
        boxes.append(torch.cat([corner, corner + size], dim=1))
    return boxes


def test_ranges_cover_everything_in_order() -> None:
    assert _ranges(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert _ranges(2, 2) == [(0, 1), (1, 2)]


def test_a_slice_keeps_every_image_in_its_place() -> None:
    boxes = _boxes([3, 0, 4])
    sliced = _slice_boxes(boxes, 2, 5)
    assert [len(b) for b in sliced] == [1, 0, 2]
    assert torch.equal(sliced[0], boxes[0][2:]) and torch.equal(sliced[2], boxes[2][:2])


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("counts", "ranges"), [([70, 0, 55], 3), ([0, 0, 40], 2), ([5, 3, 1], 0)])
def test_parallel_pooling_is_bit_identical(
    channels_last: bool, counts: list[int], ranges: int, ranges_run: list[int]
) -> None:
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    parallel = ParallelRoIAlign(pooler)
    features, boxes = _features(channels_last), _boxes(counts)
    with torch.inference_mode():
        want = pooler(features, boxes, IMAGE_SHAPES)  # also sets the pooler's scales
        got = parallel(features, boxes, IMAGE_SHAPES)
    assert len(ranges_run) == ranges  # few boxes: one call, no threads
    assert got.shape == (sum(counts), 8, 7, 7)
    assert torch.equal(got, want)


def test_the_first_call_runs_alone(ranges_run: list[int]) -> None:
    # The pooler sets its scales on its first call; two threads must not race to do it.
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    with torch.inference_mode():
        ParallelRoIAlign(pooler)(_features(False), _boxes([100, 0, 0]), IMAGE_SHAPES)
    assert ranges_run == [] and pooler.scales is not None


def test_parallel_pooling_keeps_the_callers_autocast(ranges_run: list[int]) -> None:
    # Under bf16 autocast roi_align casts to fp32 and back: each thread must do the same.
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    features, boxes = _features(True), _boxes([4 * MIN_ROIS_PER_PART, 0, 0])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = OrderedDict((k, v.to(torch.bfloat16)) for k, v in features.items())
        want = pooler(bf16, boxes, IMAGE_SHAPES)
        got = ParallelRoIAlign(pooler)(bf16, boxes, IMAGE_SHAPES)
    assert len(ranges_run) == 3
    assert got.dtype == want.dtype == torch.bfloat16
    assert torch.equal(got, want)


def test_mask_rcnn_box_and_mask_poolers_are_wrapped() -> None:
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

    model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)
    assert parallelise_roi_pools(model) == 2
    heads = model.roi_heads
    assert isinstance(heads.box_roi_pool, ParallelRoIAlign)
    assert isinstance(heads.mask_roi_pool, ParallelRoIAlign)


def test_the_threads_run_in_the_callers_inference_mode(ranges_run: list[int]) -> None:
    modes: list[bool] = []

    class Spy(MultiScaleRoIAlign):
        def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            modes.append(torch.is_inference_mode_enabled())
            return super().forward(*args, **kwargs)

    pooler = Spy(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    features, boxes = _features(False), _boxes([4 * MIN_ROIS_PER_PART, 0, 0])
    with torch.inference_mode():
        pooler(features, boxes, IMAGE_SHAPES)  # sets the scales
        ParallelRoIAlign(pooler)(features, boxes, IMAGE_SHAPES)
    assert len(ranges_run) == 3 and modes == [True] * 4
