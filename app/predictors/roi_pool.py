"""Mask R-CNN's RoIAlign pooling on CPU, spread over torch's intra-op threads.

torchvision's CPU ``roi_align`` kernel runs on one thread: a noticeable share of a Mask
R-CNN forward (box head over 1,000 proposals, mask head over the detections) while the other
cores idle (docs/PERFORMANCE.md, "RoIAlign over the intra-op threads"). Each RoI's output
depends on that RoI and the feature maps only, so the pooler is run on contiguous ranges of
the boxes in parallel threads (the kernel releases the GIL) and the outputs are concatenated
in order: bit-identical results.

The kernel also makes its feature map contiguous on every call; with channels-last features
that copy is done once here, not once per range.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign

from app.predictors.modules import replace_modules

# Below this many RoIs per thread, a thread's start-up costs more than it saves.
MIN_ROIS_PER_PART = 16


def _ranges(total: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous, near-equal ``[start, end)`` ranges covering ``range(total)``."""
    bounds = [total * k // parts for k in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def _slice_boxes(boxes: list[Tensor], start: int, end: int) -> list[Tensor]:
    """Boxes number ``start`` to ``end`` of the images' boxes taken in order, still one tensor
    per image (an image outside the range gets none), so each keeps its batch index."""
    sliced, offset = [], 0
    for per_image in boxes:
        count = len(per_image)
        low, high = max(start - offset, 0), min(end - offset, count)
        sliced.append(per_image[low:high] if low < high else per_image[:0])
        offset += count
    return sliced


def _in_callers_modes(fn: Callable[..., Tensor], device_type: str) -> Callable[..., Tensor]:
    """``fn`` run under the calling thread's inference mode and autocast: both are per thread,
    and under bf16 autocast roi_align must see its fp32 cast as it would in the caller."""
    inference = torch.is_inference_mode_enabled()
    autocast = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type)

    def run(*args: Any) -> Tensor:
        with (
            torch.inference_mode(inference),
            torch.autocast(device_type, dtype=dtype, enabled=autocast),
        ):
            return fn(*args)

    return run


@cache
def _executor(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="roi-align")


class ParallelRoIAlign(nn.Module):
    """A ``MultiScaleRoIAlign`` run over ranges of the boxes in as many threads as torch's
    intra-op pool has."""

    def __init__(self, pooler: MultiScaleRoIAlign) -> None:
        super().__init__()
        self.pooler = pooler

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        total = sum(len(b) for b in boxes)
        threads = torch.get_num_threads()
        parts = min(threads, total // MIN_ROIS_PER_PART)
        # The pooler sets its scales on its first call: that one runs alone, never racing.
        if parts < 2 or self.pooler.scales is None:
            return self.pooler(x, boxes, image_shapes)
        names = set(self.pooler.featmap_names)
        features = {k: v.contiguous() if k in names else v for k, v in x.items()}
        pool = _in_callers_modes(self.pooler, boxes[0].device.type)
        futures = [
            _executor(threads).submit(pool, features, _slice_boxes(boxes, start, end), image_shapes)
            for start, end in _ranges(total, parts)
        ]
        return torch.cat([f.result() for f in futures])


def parallelise_roi_pools(model: nn.Module) -> int:
    """Wrap each ``MultiScaleRoIAlign`` of ``model`` (box and mask heads); returns how many."""
    return replace_modules(model, MultiScaleRoIAlign, ParallelRoIAlign)
