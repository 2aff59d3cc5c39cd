"""The query parameters of the inference endpoints: output format and options, tiling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query

from app.config import Settings
from app.errors import InvalidParameter
from app.output.encode import EncodeOptions, MaskEncoding, OutputFormat
from app.predictors import MAX_INSTANCES
from app.predictors.repository import MAX_TILE, MIN_TILE, TilingSpec
from app.serving import ServedModel
from app.tiling import Tiling

ModelName = Annotated[
    str | None,
    Query(
        description="A served model of this endpoint's task (GET /models); default: its default."
    ),
]
FormatQuery = Annotated[
    OutputFormat | None,
    Query(
        description="`png`, `json` or `overlay` (absent: `Accept: application/json` selects json)."
    ),
]
ClassesQuery = Annotated[
    str | None, Query(description="Comma-separated labels to keep (default: all).")
]
ToleranceQuery = Annotated[
    float,
    Query(
        ge=0,
        le=1000,
        allow_inf_nan=False,
        description="Douglas-Peucker tolerance in pixels; 0 = exact boundary.",
    ),
]
MinAreaQuery = Annotated[
    float,
    Query(ge=0, allow_inf_nan=False, description="Drop polygons with a smaller area (pixels)."),
]


def choose_format(
    fmt: OutputFormat | None, accept: str | None, default: OutputFormat
) -> OutputFormat:
    if fmt is not None:
        return fmt
    if accept and "application/json" in accept.lower():
        return "json"
    return default


def class_ids(classes: str | None, categories: list[str]) -> set[int] | None:
    """The ids of the comma-separated labels in ``classes``; 422 naming any unknown label."""
    wanted = [c.strip() for c in (classes or "").split(",") if c.strip()]
    if not wanted:  # absent or empty (`classes=`): every class
        return None
    index = {label: i for i, label in enumerate(categories)}
    unknown = [c for c in wanted if c not in index]
    if unknown:
        raise InvalidParameter(
            f"classes: unknown label(s) {', '.join(map(repr, unknown))}; this model's labels "
            f"are {', '.join(c for c in categories if c)}"
        )
    return {index[c] for c in wanted}


@dataclass(frozen=True)
class OutputQuery:
    """The output options a request asked for (``accept``: its Accept header)."""

    format: OutputFormat | None
    classes: str | None
    tolerance: float
    min_area: float
    accept: str | None

    def options(self, model: ServedModel[Any], settings: Settings) -> EncodeOptions:
        categories = model.predictor.categories
        return EncodeOptions(
            model=model.spec.name,
            categories=categories,
            keep=class_ids(self.classes, categories),
            tolerance=self.tolerance,
            min_area=self.min_area,
            compress_level=settings.png_compress_level,
        )


# /instances only.
Probability = Annotated[float, Query(ge=0, le=1, allow_inf_nan=False)]
ScoreThresholdQuery = Annotated[Probability, Query(description="Drop detections scoring lower.")]
MaskThresholdQuery = Annotated[Probability, Query(description="Mask probability cut-off.")]
MaxInstancesQuery = Annotated[
    int,
    Query(ge=1, le=MAX_INSTANCES, description="Keep at most this many, highest scores first."),
]
MaskEncodingQuery = Annotated[MaskEncoding, Query(description="`polygons`, `rle` or `both`.")]


# Tiling (both endpoints; docs/api.md, "Tiling").
TileQuery = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_TILE,
        description=f"Tile the image at its own resolution into windows of this side "
        f"({MIN_TILE} to {MAX_TILE}); 0: no tiling. Absent: the model's `[tiling]` default, "
        "else none.",
    ),
]
OverlapQuery = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_TILE - 1,
        description="Pixels neighbouring windows share (less than `tile`). Absent: the "
        "model's `[tiling]` overlap, else a quarter of the tile.",
    ),
]


def resolve_tiling(
    tile: int | None, overlap: int | None, default: TilingSpec | None
) -> Tiling | None:
    """The request's tiling: its own parameters, else the model's default; 422 if invalid."""
    if tile is None and default is not None:
        tile = default.tile
        overlap = default.overlap if overlap is None else overlap
    if not tile:  # absent with no default, or 0: the whole image at the preset's size
        if overlap:
            raise InvalidParameter("overlap: needs tile (tiling is off for this request)")
        return None
    if tile < MIN_TILE:
        raise InvalidParameter(f"tile: at least {MIN_TILE} pixels (or 0 for none); got {tile}")
    overlap = tile // 4 if overlap is None else overlap
    if overlap >= tile:
        raise InvalidParameter(f"overlap: must be less than tile ({tile}); got {overlap}")
    return Tiling(tile, overlap)
