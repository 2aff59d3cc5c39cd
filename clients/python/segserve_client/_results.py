"""Typed results: what /segment and /instances answer, decoded."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

from segserve_client._decode import (
    Polygon,
    png_to_class_map,
    png_to_id_map,
    polygons_to_mask,
    read_png,
    rle_to_mask,
    segments_to_class_map,
)
from segserve_client._errors import SegserveError

Task = Literal["semantic", "instance"]
Format = Literal["png", "json", "overlay"]


def parse_server_timing(header: str | None) -> dict[str, float]:
    """``Server-Timing`` as ``{stage: ms}``, plus counts (``windows;desc="4"`` -> 4).

    ``decode;dur=3.64, queue;dur=6.22, infer;dur=392.68, encode;dur=2.62`` gives
    ``{"decode": 3.64, "queue": 6.22, "infer": 392.68, "encode": 2.62}``.
    """
    timing: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        if not name:
            continue
        for param in params:
            key, _, value = param.partition("=")
            value = value.strip().strip('"')
            try:
                number = float(value)
            except ValueError:
                continue
            if key.strip() == "dur":
                timing[name] = number
            elif key.strip() == "desc" and name not in timing:
                timing[name] = int(number) if number.is_integer() else number
    return timing


@dataclass
class Segment:
    """One class present in the image (background excluded), with its polygons."""

    label: str
    class_id: int
    area: int  # pixels of this class
    polygons: list[Polygon]  # docs/api.md, "Polygons"


@dataclass
class SegmentResult:
    """The answer of ``/segment`` for one image.

    - ``format="png"``: ``class_map`` is the PNG's pixels; ``segments`` is empty and
      ``model`` None (a PNG does not say).
    - ``format="json"``: ``segments`` as sent; ``class_map`` is rasterised from their
      polygons on first use (exact at ``tolerance=0``; with a tolerance, the simplified
      shapes; classes left out by ``classes`` are 0).
    - ``format="overlay"``: ``png`` and ``image`` are the overlay; ``class_map`` is None.

    ``timing`` is the ``Server-Timing`` header in ms (a many-images request's results share
    their request's); ``png`` the PNG bytes as the service sent them; ``raw`` the JSON body.
    """

    format: str
    width: int
    height: int
    model: str | None = None
    segments: list[Segment] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    png: bytes | None = field(default=None, repr=False)
    raw: dict[str, Any] | None = field(default=None, repr=False)
    request_id: str | None = None
    _class_map: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def class_map(self) -> np.ndarray | None:
        """(height, width) uint8: the class index of every pixel (0 = background)."""
        if self._class_map is None and self.format == "json":
            pairs = [(s.class_id, s.polygons) for s in self.segments]
            self._class_map = segments_to_class_map(pairs, self.height, self.width)
        return self._class_map

    @property
    def image(self) -> Image.Image | None:
        """The PNG as a Pillow image (the class map in palette colours, or the overlay)."""
        return read_png(self.png) if self.png is not None else None

    def mask(self, label: str | int) -> np.ndarray:
        """(height, width) bool mask of one class, by label or class index."""
        class_map = self.class_map
        if class_map is None:
            raise ValueError(f"a {self.format} result has no class map")
        if isinstance(label, str):
            ids = [s.class_id for s in self.segments if s.label == label]
            if not ids:
                return np.zeros((self.height, self.width), dtype=bool)
            label = ids[0]
        return np.asarray(class_map == label)


@dataclass
class Instance:
    """One detected object. ``mask`` is decoded on first use from the RLE if sent, else the
    polygons; from a ``png`` result it is the instance's visible pixels in the id map."""

    label: str
    class_id: int
    score: float
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    area: int  # pixels of the whole mask
    polygons: list[Polygon] | None = field(default=None, repr=False)
    rle: dict[str, Any] | None = field(default=None, repr=False)
    width: int = field(default=0, repr=False)
    height: int = field(default=0, repr=False)
    _mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def mask(self) -> np.ndarray:
        """(height, width) bool."""
        if self._mask is None:
            if self.rle is not None:
                self._mask = rle_to_mask(self.rle)
            elif self.polygons is not None:
                self._mask = polygons_to_mask(self.polygons, self.height, self.width)
            else:
                raise ValueError("this instance was sent without a mask (overlay format)")
        return self._mask

    @classmethod
    def from_json(cls, entry: dict[str, Any], width: int, height: int) -> Instance:
        return cls(
            label=str(entry["label"]),
            class_id=int(entry["class_id"]),
            score=float(entry["score"]),
            bbox=tuple(float(v) for v in entry["bbox"]),  # type: ignore[arg-type]
            area=int(entry["area"]),
            polygons=entry.get("polygons"),
            rle=entry.get("rle"),
            width=width,
            height=height,
        )


@dataclass
class InstancesResult:
    """The answer of ``/instances`` for one image.

    - ``format="json"``: ``instances`` with their RLE and/or polygons (``mask`` decodes
      them).
    - ``format="png"``: ``id_map`` ((height, width) uint8, uint16 above 255 instances;
      k > 0 = ``instances[k - 1]``) and the instance list of its text chunk; each
      instance's ``mask`` is its visible pixels there.
    - ``format="overlay"``: ``png`` and ``image`` are the overlay; no instances.
    """

    format: str
    width: int
    height: int
    model: str | None = None
    instances: list[Instance] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    png: bytes | None = field(default=None, repr=False)
    raw: dict[str, Any] | None = field(default=None, repr=False)
    request_id: str | None = None
    id_map: np.ndarray | None = field(default=None, repr=False)

    @property
    def image(self) -> Image.Image | None:
        """The PNG as a Pillow image (the id map, or the overlay)."""
        return read_png(self.png) if self.png is not None else None


Result = SegmentResult | InstancesResult


def parse_body(
    task: Task,
    fmt: str,
    content: bytes,
    timing: dict[str, float],
    request_id: str | None = None,
) -> Result:
    """A single answer's body (PNG for png/overlay, JSON for json) as a result."""
    if fmt == "json":
        return parse_json(task, json.loads(content), timing, request_id)
    if fmt == "overlay":
        with Image.open(io.BytesIO(content)) as image:
            width, height = image.size
        cls = SegmentResult if task == "semantic" else InstancesResult
        return cls("overlay", width, height, timing=timing, png=content, request_id=request_id)
    if task == "semantic":
        class_map = png_to_class_map(content)
        height, width = class_map.shape
        return SegmentResult(
            "png",
            width,
            height,
            timing=timing,
            png=content,
            request_id=request_id,
            _class_map=class_map,
        )
    ids, listed = png_to_id_map(content)
    height, width = ids.shape
    instances = []
    for k, entry in enumerate(listed, start=1):
        instance = Instance.from_json(entry, width, height)
        instance._mask = ids == k
        instances.append(instance)
    return InstancesResult(
        "png",
        width,
        height,
        instances=instances,
        timing=timing,
        png=content,
        request_id=request_id,
        id_map=ids,
    )


def parse_json(
    task: Task, body: dict[str, Any], timing: dict[str, float], request_id: str | None = None
) -> Result:
    width, height = int(body["width"]), int(body["height"])
    model = body.get("model")
    if task == "semantic":
        segments = [
            Segment(str(s["label"]), int(s["class_id"]), int(s["area"]), s["polygons"])
            for s in body.get("segments", [])
        ]
        return SegmentResult(
            "json", width, height, model, segments, timing, raw=body, request_id=request_id
        )
    instances = [Instance.from_json(e, width, height) for e in body.get("instances", [])]
    return InstancesResult(
        "json", width, height, model, instances, timing, raw=body, request_id=request_id
    )


def parse_entry(
    task: Task,
    fmt: str,
    entry: dict[str, Any],
    timing: dict[str, float],
    request_id: str | None = None,
) -> Result | SegserveError:
    """One entry of a many-images answer (docs/api.md, "Many images in one request") to a
    request for format ``fmt``: a JSON answer as is, a PNG in base64 under ``data``, or an
    error."""
    if "error" in entry:
        error = SegserveError.from_entry(entry)
        error.request_id = request_id
        return error
    if "data" in entry:
        content = base64.b64decode(entry["data"])
        return parse_body(task, str(entry.get("format", fmt)), content, timing, request_id)
    return parse_json(task, entry, timing, request_id)
