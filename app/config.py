"""Settings: one typed object from ``SEGSERVE_*`` variables (and ``.env``), validated at boot.

Nothing reads the environment at import time: :func:`get_settings` builds the object when
the app is created, and tests inject their own through ``create_app(settings)``.

The fields below are the one source for the settings' documentation: docs/configuration.md
and .env.example are generated from their descriptions, defaults, bounds and groups
(:mod:`app.settings_docs`, ``make docs``), and a test fails when either file is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Precision = Literal["fp32", "bf16", "fp16"]

# The sections the generated docs list the settings in, in this order (id: title). Each field
# names its own in ``json_schema_extra={"group": id}``; a field's optional ``"values"`` there
# describes what it accepts where its type cannot (a validator's rule).
GROUPS = {
    "models": "model repository and weights",
    "compute": "device and compute",
    "server": "server",
    "admission": "admission control and timeouts",
    "limits": "input limits",
    "responses": "responses",
    "access": "authentication and browsers",
    "debugging": "debugging",
}


class Settings(BaseSettings):
    """Every ``SEGSERVE_*`` setting, typed and validated at boot (the source of
    docs/configuration.md and .env.example)."""

    model_config = SettingsConfigDict(
        env_prefix="SEGSERVE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- model repository and weights
    models_dir: Path = Field(
        Path("models"),
        description="The model repository: one TOML per model (the file's stem is the "
        "model's name).",
        json_schema_extra={"group": "models"},
    )
    weights_dir: Path = Field(
        Path("weights"),
        description="Where weights files are looked up (and downloaded to); checkpoint paths "
        "in the TOMLs are relative to it.",
        json_schema_extra={"group": "models"},
    )
    allow_download: bool = Field(
        True,
        description="Let torchvision download missing weights into the weights directory. "
        "`false`: a missing file is a startup error at once.",
        json_schema_extra={"group": "models"},
    )
    seed: int = Field(
        0,
        description='Seed for models built with `weights = "none"` (untrained).',
        json_schema_extra={"group": "models"},
    )

    # --- device and compute
    device: str = Field(
        "auto",
        description="`auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`. "
        "Asking for CUDA where there is none is a startup error.",
        json_schema_extra={"group": "compute", "values": "`auto`, `cpu`, `cuda`, `cuda:N`"},
    )
    precision: Precision = Field(
        "fp32",
        description="Compute precision of every model (a model's TOML `precision` overrides "
        "it): `fp32`; `bf16` (semantic models on CPU run with bf16 weights, Mask R-CNN and "
        "every model on CUDA under autocast; `/models` says which as `precision_mode`); "
        "`fp16` (autocast, CUDA only). Reduced precisions change results beyond rounding; "
        "docs/PERFORMANCE.md measures their agreement with fp32.",
        json_schema_extra={"group": "compute"},
    )
    channels_last: bool = Field(
        True,
        description="Run convolutions in channels-last (NHWC) memory format, faster on CPU "
        "(oneDNN) and GPU (cuDNN). fp32 results then equal the reference up to float "
        "rounding; `false` gives the bit-exact NCHW path. A model's TOML `channels_last` "
        "overrides it.",
        json_schema_extra={"group": "compute"},
    )
    fold_batchnorm: bool = Field(
        True,
        description="Fold each eval-mode batch norm into the convolution before it at load "
        "time: one pass over every activation fewer. Results equal the reference up to float "
        "rounding; with this and `SEGSERVE_CHANNELS_LAST` both `false` the path is "
        "bit-exact. A model's TOML `fold_batchnorm` overrides it.",
        json_schema_extra={"group": "compute"},
    )
    torch_threads: Annotated[int, Field(ge=0)] = Field(
        0,
        description="Intra-op threads for torch. 0: `OMP_NUM_THREADS` when set, else the "
        "CPUs this process may use (its CPU affinity capped by the cgroup CPU quota, as in a "
        "container with `--cpus` or under a Kubernetes CPU limit).",
        json_schema_extra={"group": "compute"},
    )
    keep_freed_memory: bool = Field(
        True,
        description="Keep the memory a forward frees for the next one (glibc's malloc, set by "
        "`segserve serve` before anything else runs: one heap for all threads, no `mmap` for "
        "large blocks, no trimming) instead of faulting fresh zeroed pages in on every "
        'request (docs/PERFORMANCE.md, "Freed memory"). The process then keeps the heap its '
        "largest request needed. No effect without glibc (musl, macOS).",
        json_schema_extra={"group": "compute"},
    )
    batch_autotune: bool = Field(
        True,
        description="At warm-up, measure each model's images/s at batch sizes 1, 2, 4 ... up "
        "to its `max_batch_size`, and keep the smallest size within 10% of the best as its "
        "cap (a bigger batch must win by more than a noisy machine's run-to-run spread). "
        "`GET /models` shows the figures and the reason under `batching.autotune`. Needs "
        "`SEGSERVE_WARMUP`.",
        json_schema_extra={"group": "compute"},
    )
    warmup: bool = Field(
        True,
        description="Run one inference per model before turning ready.",
        json_schema_extra={"group": "compute"},
    )

    # --- server
    host: str = Field(
        "127.0.0.1",
        description="Address `segserve serve` binds to (`--host` overrides it).",
        json_schema_extra={"group": "server"},
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        8000,
        description="Port `segserve serve` listens on (`--port` overrides it).",
        json_schema_extra={"group": "server"},
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info",
        description="Level of the service's log and uvicorn's.",
        json_schema_extra={"group": "server"},
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Request log lines (one per request, on the `segserve.access` logger): "
        "`text` (`key=value` pairs) or `json` (one JSON object a line).",
        json_schema_extra={"group": "server"},
    )

    # --- admission control and timeouts
    max_queue_size: Annotated[int, Field(ge=1)] = Field(
        64,
        description="Requests waiting per model before new ones get 503 (`queue_full`).",
        json_schema_extra={"group": "admission"},
    )
    request_timeout_s: Annotated[float, Field(gt=0)] = Field(
        300.0,
        description="A request not answered within this many seconds of its arrival gets "
        "504; generous because a CPU works through a full queue slowly. A client may ask for "
        "less with the `X-Request-Timeout` header, never for more.",
        json_schema_extra={"group": "admission"},
    )
    shutdown_grace_s: Annotated[float, Field(ge=0)] = Field(
        30.0,
        description="On SIGTERM, how long requests already accepted may take to finish before "
        "the process stops anyway. Set the orchestrator's grace period (Kubernetes "
        "`terminationGracePeriodSeconds`) a few seconds longer.",
        json_schema_extra={"group": "admission"},
    )
    retry_after_s: Annotated[int, Field(ge=1)] = Field(
        1,
        description="`Retry-After` (seconds) sent with 503 answers: queue full, not ready or "
        "shutting down.",
        json_schema_extra={"group": "admission"},
    )

    # --- input limits
    max_body_bytes: Annotated[int, Field(ge=1)] = Field(
        32 * 1024 * 1024,
        description="Largest request body accepted, in bytes (413 above).",
        json_schema_extra={"group": "limits"},
    )
    max_image_pixels: Annotated[int, Field(ge=1)] = Field(
        40_000_000,
        description="Largest width x height accepted (413 above), checked before decoding.",
        json_schema_extra={"group": "limits"},
    )
    max_image_side: Annotated[int, Field(ge=1)] = Field(
        10_000,
        description="Longest side accepted in pixels (413 above), checked before decoding.",
        json_schema_extra={"group": "limits"},
    )
    max_network_pixels: Annotated[int, Field(ge=1)] = Field(
        4_000_000,
        description="Largest input a model may see after its own resize (413 above): "
        "bounds thin images that a short-side resize would blow up.",
        json_schema_extra={"group": "limits"},
    )
    body_read_timeout_s: Annotated[float, Field(gt=0)] = Field(
        30.0,
        description="A request body not received in full within this many seconds (or the "
        "request's own deadline, if sooner) is answered 408 and its connection closed: a "
        "client trickling its upload holds no decode slot and no queue place meanwhile.",
        json_schema_extra={"group": "limits"},
    )
    max_images_per_request: Annotated[int, Field(ge=1, le=256)] = Field(
        16,
        description="Most images one request may carry (several `image` parts, or JSON "
        "`images`; 413 above). They are admitted to the model's queue together, so keep it "
        "at most SEGSERVE_MAX_QUEUE_SIZE.",
        json_schema_extra={"group": "limits"},
    )
    max_tiled_pixels: Annotated[int, Field(ge=1)] = Field(
        100_000_000,
        description="Largest width x height accepted for a tiled request (`tile=`; 413 above), "
        "in place of SEGSERVE_MAX_IMAGE_PIXELS: tiles are seen at their own resolution, so "
        "large images are what tiling is for.",
        json_schema_extra={"group": "limits"},
    )
    max_tile_windows: Annotated[int, Field(ge=1)] = Field(
        2048,
        description="Most windows one tiled request may become (413 above).",
        json_schema_extra={"group": "limits"},
    )
    max_concurrent_decodes: Annotated[int, Field(ge=0)] = Field(
        0,
        description="Images decoded at the same time; the rest wait their turn. Bounds the "
        "memory that many large images arriving together take, since a decode's peak grows "
        'with the image (docs/PERFORMANCE.md, "Decode memory"). 0: the CPUs this process '
        "may use.",
        json_schema_extra={"group": "limits"},
    )

    # --- responses
    png_compress_level: Annotated[int, Field(ge=0, le=9)] = Field(
        1,
        description="zlib level for PNG responses. 1: the fast strategy for the content "
        "(run-length for masks, Huffman-only for overlays), still small; 2-9: zlib's full "
        "search at that level, smaller and slower; 0: uncompressed.",
        json_schema_extra={"group": "responses"},
    )

    # --- authentication and browsers
    api_key: SecretStr | None = Field(
        None,
        description="When set, inference and /models need `Authorization: Bearer <key>` or "
        "`X-API-Key: <key>` (401 otherwise); health endpoints and /metrics stay open. Unset "
        "or empty: no authentication.",
        json_schema_extra={"group": "access", "values": "text (a secret)"},
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins a browser may call the API from (comma-separated or a JSON "
        "list; `*` for any). Unset or empty: CORS off.",
        json_schema_extra={"group": "access", "values": "origins, comma-separated or a JSON list"},
    )
    ui: bool = Field(
        True,
        description="Serve the page at `/` (static files, no outside resources, a strict "
        "Content-Security-Policy) that sends an image to /segment or /instances and draws the "
        "result; it is open, its API calls carry the key typed into it. `false`: `/` is 404.",
        json_schema_extra={"group": "access"},
    )

    # --- debugging
    debug_faults: str = Field(
        "",
        description="Make stages fail or stall for chaos tests, e.g. "
        "`infer_batch:delay=0.5,encode:error` (points: decode, preprocess, infer_batch, "
        "encode; actions: `error`, `delay=<seconds>`). Never in production. Empty: off.",
        json_schema_extra={
            "group": "debugging",
            "values": "`<point>:<action>`, comma-separated",
        },
    )

    @field_validator("debug_faults")
    @classmethod
    def _check_faults(cls, value: str) -> str:
        from app.faults import parse_setting

        parse_setting(value)  # refuse a typo at startup, not at the first request
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: object) -> object:
        # `SEGSERVE_API_KEY=` (as left in a copied .env) means "no key", not "match nothing".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError as exc:
                    raise ValueError(f"starts with '[' but is not a JSON list ({exc})") from None
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {value!r}")


def get_settings() -> Settings:
    """Read the settings from the environment; called once per app."""
    return Settings()
