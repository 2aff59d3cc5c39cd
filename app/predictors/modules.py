"""Swapping submodules of a built torchvision model (one walk, shared by every rewrite)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)


def replace_modules(
    model: nn.Module,
    kind: type[M],
    replacement: Callable[[M], nn.Module],
    where: Callable[[M], bool] = lambda _: True,
) -> int:
    """Replace each submodule of ``model`` of type ``kind`` (for which ``where`` holds) by
    ``replacement(it)``, in its parent's place; returns how many. A replaced module's own
    children are not visited."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kind) and where(child):
                setattr(parent, name, replacement(child))
                replaced += 1
    return replaced
