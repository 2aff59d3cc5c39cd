"""Batch-norm statistics recomputed before a network is evaluated or saved.

Training normalises each batch with its own statistics; evaluation and serving use the
running averages batch norm accumulated along the way, which trail a network whose weights
kept moving (and, from scratch, trail it badly: a short run scored mIoU 0.84 with batch
statistics and 0.33 with the running ones). So after each epoch the statistics are computed
afresh, with the weights frozen, over training images prepared as the served model sees them
(the "precise BN" of fvcore, ``torch.optim.swa_utils.update_bn``): then the metric read at
training time is the served model's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def trainable_batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Batch norms that track running statistics (FrozenBatchNorm2d is not one)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recompute_statistics(
    model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], object]
) -> int:
    """Replace every batch norm's running mean and variance by their average over
    ``batches`` (run through ``forward`` in train mode); returns the batches seen.

    Only the statistics change: no gradient is taken and the weights stay as they are. The
    model's mode is restored.
    """
    norms = trainable_batch_norms(model)
    if not norms:
        return 0
    momenta = {norm: norm.momentum for norm in norms}
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch seen
    was_training = model.training
    model.train()
    seen = 0
    try:
        for batch in batches:
            forward(model, batch)
            seen += 1
    finally:
        for norm, momentum in momenta.items():
            norm.momentum = momentum
        model.train(was_training)
    return seen
