"""The model repository: ``models/*.toml`` read into validated :class:`ModelSpec` objects.

Every error names the file, the key and the value, so an operator can fix a typo without
reading code.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torchvision import models as tv_models

from app.config import Precision
from app.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Task = Literal["semantic", "instance"]
UNTRAINED = "none"
# Bounds of a tiling window's side (docs/api.md, "Tiling").
MIN_TILE = 16
MAX_TILE = 4096


@functools.cache
def builders_for(task: Task) -> list[str]:
    """The torchvision builder names a task can serve."""
    if task == "semantic":
        return sorted(tv_models.list_models(module=tv_models.segmentation))
    # The instance predictor reads Mask R-CNN outputs (boxes, labels, scores, masks).
    return sorted(
        n for n in tv_models.list_models(module=tv_models.detection) if n.startswith("maskrcnn")
    )


class BatchingSpec(BaseModel):
    """A model file's `[batching]` table."""

    # strict: TOML has real types, so `default = "yes"` is a mistake, not a true.
    model_config = ConfigDict(extra="forbid", strict=True)

    max_batch_size: int = Field(8, ge=1, le=256, description="Most images in one forward pass.")
    max_wait_ms: float = Field(
        5.0, ge=0, le=10_000, description="How long the first image waits for company."
    )


class TilingSpec(BaseModel):
    """A model file's `[tiling]` table: tile requests by default (docs/api.md, "Tiling")."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tile: int = Field(ge=MIN_TILE, le=MAX_TILE, description="Window side in pixels.")
    overlap: int | None = Field(
        None, ge=0, description="Pixels neighbouring windows share (default: a quarter of tile)."
    )

    @model_validator(mode="after")
    def _check(self) -> TilingSpec:
        if self.overlap is None:
            self.overlap = self.tile // 4
        if self.overlap >= self.tile:
            raise ValueError(f"overlap ({self.overlap}) must be less than tile ({self.tile})")
        return self


class PreprocessingSpec(BaseModel):
    """A model file's `[preprocessing]` table: how images are prepared for the network.

    Serving, `segserve evaluate` and `segserve finetune`'s validation all build their
    transforms from it (:mod:`app.predictors.preprocessing`), so a model trained at one scale
    is measured and served at that scale.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    resize: int | None = Field(
        None,
        ge=MIN_TILE,
        le=MAX_TILE,
        description="Short side (pixels) images are resized to before a semantic model "
        "(default: the architecture preset's, 520).",
    )


class ModelSpec(BaseModel):
    """One model file of the repository (`models/NAME.toml`), validated."""

    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())

    name: str = Field(description="The TOML file's stem.")
    task: Task
    architecture: str
    weights: str | None = Field(
        None, description='A member of the builder\'s weights enum, or "none" (untrained).'
    )
    checkpoint: str | None = Field(None, description="A state_dict file in the weights dir.")
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Full SHA-256 (64 hex digits) the weights or checkpoint file must have.",
    )
    categories: list[str] | None = None
    default: bool = False
    precision: Precision | None = Field(
        None, description="fp32, bf16 or fp16 for this model (default: SEGSERVE_PRECISION)."
    )
    channels_last: bool | None = Field(
        None, description="Channels-last convolutions (default: SEGSERVE_CHANNELS_LAST)."
    )
    fold_batchnorm: bool | None = Field(
        None, description="Fold batch norms into convolutions (default: SEGSERVE_FOLD_BATCHNORM)."
    )
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    tiling: TilingSpec | None = Field(None, description="Tile requests by default.")
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.architecture not in builders_for(self.task):
            raise ValueError(
                f"architecture {self.architecture!r} is not a torchvision {self.task} builder; "
                f"choose one of {', '.join(builders_for(self.task))}"
            )
        if self.checkpoint is not None:
            if self.weights is not None:
                raise ValueError("give either `weights` or `checkpoint`, not both")
            if not self.categories:
                raise ValueError("`categories` is required with `checkpoint`")
        elif self.weights is None:
            self.weights = "DEFAULT"
        if self.weights is not None and self.weights.lower() != UNTRAINED:
            enum = tv_models.get_model_weights(self.architecture)
            if self.weights not in enum.__members__:
                raise ValueError(
                    f"weights {self.weights!r} is not a member of {enum.__name__}; choose one of "
                    f'{", ".join(enum.__members__)} or "none"'
                )
        if self.task == "semantic" and self.categories and len(self.categories) > 256:
            raise ValueError(
                f"a semantic model may have at most 256 categories (uint8 class maps); "
                f"got {len(self.categories)}"
            )
        if self.sha256 is not None and self.untrained:
            raise ValueError('`sha256` pins a weights file; weights = "none" loads no file')
        if self.task == "instance" and self.preprocessing.resize is not None:
            raise ValueError(
                "[preprocessing] resize is for semantic models; Mask R-CNN states its resize "
                "with [options] min_size and max_size (its own transform)"
            )
        reserved = {"weights", "weights_backbone", "num_classes", "progress"}
        if bad := reserved & self.options.keys():
            raise ValueError(f"[options] may not set {', '.join(sorted(bad))}: segserve sets them")
        return self

    @property
    def untrained(self) -> bool:
        return self.checkpoint is None and (self.weights or "").lower() == UNTRAINED


def _describe(error: ValidationError, path: Path) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "missing":
            lines.append(f"{path}: {key}: required, missing")
        elif key:
            lines.append(f"{path}: {key} = {item['input']!r}: {item['msg']}")
        else:  # a check across keys: its message names them
            lines.append(f"{path}: {item['msg']}")
    return "\n".join(lines)


def load_spec(path: Path) -> ModelSpec:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable TOML file: {exc}") from exc
    if "name" in data:
        raise ConfigError(f"{path}: name = {data['name']!r}: the name is the file's stem")
    try:
        return ModelSpec(name=path.stem, **data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


def load_repository(models_dir: Path) -> list[ModelSpec]:
    """Every model in ``models_dir``, with exactly one default per task that has models."""
    if not models_dir.is_dir():
        raise ConfigError(f"model repository {models_dir} is not a directory (SEGSERVE_MODELS_DIR)")
    specs = [load_spec(p) for p in sorted(models_dir.glob("*.toml"))]
    if not specs:
        raise ConfigError(f"model repository {models_dir} holds no *.toml model files")
    for task in ("semantic", "instance"):
        of_task = [s for s in specs if s.task == task]
        defaults = [s.name for s in of_task if s.default]
        if len(defaults) > 1:
            raise ConfigError(
                f"{models_dir}: default = true in more than one {task} model: {', '.join(defaults)}"
            )
        if of_task and not defaults:
            of_task[0].default = True  # the first by file name: documented in docs/models.md
    return specs
