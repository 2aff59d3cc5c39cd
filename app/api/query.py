"""Query parameters shared by the inference endpoints, and their interpretation."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from app.errors import InvalidParameter
from app.rendering import OutputFormat

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
    Query(ge=0, le=1000, description="Douglas-Peucker tolerance in pixels; 0 = exact boundary."),
]
MinAreaQuery = Annotated[
    float, Query(ge=0, description="Drop polygons with a smaller area (pixels).")
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
    if classes is None:
        return None
    wanted = [c.strip() for c in classes.split(",") if c.strip()]
    index = {label: i for i, label in enumerate(categories)}
    unknown = [c for c in wanted if c not in index]
    if unknown:
        raise InvalidParameter(
            f"classes: unknown label(s) {', '.join(map(repr, unknown))}; this model's labels "
            f"are {', '.join(c for c in categories if c)}"
        )
    return {index[c] for c in wanted}
