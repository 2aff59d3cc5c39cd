"""The query parameters of the inference endpoints: output format and options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query

from app.config import Settings
from app.errors import InvalidParameter
from app.output.encode import EncodeOptions, MaskEncoding, OutputFormat
from app.predictors import MAX_INSTANCES
from app.serving import ServedModel

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
