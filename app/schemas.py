"""Response schemas: they document the API in /docs; handlers build the same shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Point = list[int]
Ring = list[Point]
Polygon = list[Ring]


class ErrorDetail(BaseModel):
    """What went wrong: a snake_case code and a message saying why."""

    code: str = Field(description="snake_case error code, e.g. `payload_too_large`.")
    message: str = Field(description="What went wrong and why, with the limit and the value given.")


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


class Segment(BaseModel):
    """One class present in the image, with its polygons."""

    label: str = Field(description="The class's name in the model's categories.")
    class_id: int = Field(description="Index of the class in the model's categories.")
    area: int = Field(description="Number of pixels of this class.")
    polygons: list[Polygon] = Field(
        description="Polygons of the class: each a list of rings ([x, y] pixel centres), the "
        "first ring the outer boundary, the rest holes (GeoJSON MultiPolygon order)."
    )


class SegmentResponse(BaseModel):
    """POST /segment's JSON answer."""

    model: str = Field(description="The model that produced the result.")
    width: int = Field(description="Width of the (EXIF-oriented) input in pixels.")
    height: int = Field(description="Height of the (EXIF-oriented) input in pixels.")
    segments: list[Segment] = Field(description="One per class present, background excluded.")


class Rle(BaseModel):
    """A mask in COCO's compressed run-length encoding."""

    size: list[int] = Field(description="[height, width] of the mask.")
    counts: str = Field(description="COCO compressed RLE string (pycocotools).")


class InstanceOut(BaseModel):
    """One detected instance in POST /instances' JSON answer."""

    label: str = Field(description="The class's name in the model's categories.")
    class_id: int = Field(description="Index of the class in the model's categories.")
    score: float = Field(description="Detection confidence in [0, 1].")
    bbox: list[float] = Field(description="[x0, y0, x1, y1] in pixels, x right, y down.")
    area: int = Field(description="Number of pixels in the thresholded mask.")
    polygons: list[Polygon] | None = Field(
        None, description="The mask as polygons (mask_encoding polygons or both)."
    )
    rle: Rle | None = Field(None, description="The mask as COCO RLE (mask_encoding rle or both).")


class InstancesResponse(BaseModel):
    """POST /instances' JSON answer."""

    model: str = Field(description="The model that produced the result.")
    width: int = Field(description="Width of the (EXIF-oriented) input in pixels.")
    height: int = Field(description="Height of the (EXIF-oriented) input in pixels.")
    instances: list[InstanceOut] = Field(description="Detections, highest score first.")


class BatchTuningInfo(BaseModel):
    """What the batch-size autotune measured and chose at warm-up."""

    configured_max_batch_size: int = Field(description="The cap from the model's TOML.")
    chosen_max_batch_size: int = Field(description="The cap kept after measuring.")
    images_per_s: dict[str, float] = Field(description="Measured throughput per batch size.")
    reason: str = Field(description="Why the chosen size won.")


class BatchingInfo(BaseModel):
    """How a model's requests are batched."""

    max_batch_size: int = Field(description="Most images in one forward pass.")
    max_wait_ms: float = Field(description="How long a batch waits to fill.")
    max_queue_size: int = Field(description="Requests queued before 503.")
    autotune: BatchTuningInfo | None = Field(
        description="What the warm-up measurement found (null when it did not run)."
    )


class TilingInfo(BaseModel):
    """A model's default tiling (docs/api.md, "Tiling")."""

    tile: int = Field(description="Window side in pixels.")
    overlap: int = Field(description="Pixels neighbouring windows share.")


class ModelInfo(BaseModel):
    """One served model, as GET /models describes it."""

    model_config = {"protected_namespaces": ()}

    name: str = Field(description="Name to pass as `model=`.")
    task: Literal["semantic", "instance"] = Field(description="Which endpoint serves it.")
    architecture: str = Field(description="torchvision builder name.")
    categories: list[str] = Field(description="Label of each class id.")
    device: str = Field(description="Where the model runs, e.g. `cpu` or `cuda:0`.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        description="Numeric precision of inference (how: `precision_mode`)."
    )
    precision_mode: Literal["full", "autocast", "cast"] = Field(
        description="`full`: fp32. `autocast`: weights stay fp32, ops run in the reduced "
        "dtype under torch.autocast (CUDA; Mask R-CNN everywhere). `cast`: weights and "
        "inputs cast to bf16 (semantic models on CPU, where autocast's casts to and from "
        "fp32 cost time)."
    )
    channels_last: bool = Field(description="Whether convolutions run channels-last.")
    fold_batchnorm: bool = Field(
        description="Whether batch norms were folded into the convolutions before them."
    )
    weights: str = Field(
        description="`torchvision:<Enum>.<MEMBER>`, `checkpoint:<file>` or `untrained`."
    )
    default: bool = Field(description="Whether it is the default for its task.")
    resize: int | None = Field(
        description="Semantic models: the short side (pixels) images are resized to before "
        "the network (`[preprocessing] resize` in its TOML, else the preset's 520). Null for "
        "instance models, whose resize is Mask R-CNN's own (`[options] min_size`, `max_size`)."
    )
    batching: BatchingInfo
    tiling: TilingInfo | None = Field(
        description="The model's default tiling (`[tiling]` in its TOML), used when a request "
        "gives no `tile`; null: untiled unless a request asks."
    )


class ModelsResponse(BaseModel):
    """GET /models' answer."""

    models: list[ModelInfo]


class HealthResponse(BaseModel):
    """The answer of the health probes."""

    status: str = Field(description="`ok`, `ready`, or why not.")


class ManyResults(BaseModel):
    """The answer to a many-images request: one entry per image, in the order sent."""

    results: list[dict[str, Any]] = Field(
        description="Per image: the JSON a single request returns (format=json); "
        '`{"media_type", "data"}` with the PNG in base64 (format=png or overlay); or '
        '`{"error": {"code", "message"}, "status"}` when that image failed.'
    )
