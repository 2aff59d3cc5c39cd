"""Settings: one typed object from ``SEGSERVE_*`` variables (and ``.env``), validated at boot.

Nothing reads the environment at import time: :func:`get_settings` builds the object when
the app is created, and tests inject their own through ``create_app(settings)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Precision = Literal["fp32", "bf16", "fp16"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEGSERVE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    models_dir: Path = Field(
        Path("models"), description="The model repository: one TOML per model."
    )
    weights_dir: Path = Field(Path("weights"), description="Where weights files are looked up.")
    device: str = Field(
        "auto", description="`auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`."
    )
    allow_download: bool = Field(
        True, description="Let torchvision download missing weights into the weights directory."
    )
    host: str = Field("127.0.0.1", description="Address `segserve serve` binds to.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(8000, description="Port to listen on.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Request log lines (`segserve.access`): `key=value` text, or one JSON "
        "object a line.",
    )

    max_queue_size: Annotated[int, Field(ge=1)] = Field(
        64, description="Requests waiting per model before new ones get 503."
    )
    request_timeout_s: Annotated[float, Field(gt=0)] = Field(
        300.0,
        description="A request not answered within this many seconds of its arrival gets 504.",
    )
    shutdown_grace_s: Annotated[float, Field(ge=0)] = Field(
        30.0,
        description="On SIGTERM, how long requests already accepted may take to finish before "
        "the process stops anyway.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (comma-separated or a "
        "JSON list; `*` for any). Empty: CORS off.",
    )
    retry_after_s: Annotated[int, Field(ge=1)] = Field(
        1, description="`Retry-After` sent with 503 answers."
    )
    max_body_bytes: Annotated[int, Field(ge=1)] = Field(
        32 * 1024 * 1024, description="Largest request body accepted (413 above)."
    )
    max_image_pixels: Annotated[int, Field(ge=1)] = Field(
        40_000_000, description="Largest width x height accepted (413 above)."
    )
    max_image_side: Annotated[int, Field(ge=1)] = Field(
        10_000, description="Longest side accepted in pixels (413 above)."
    )
    max_network_pixels: Annotated[int, Field(ge=1)] = Field(
        4_000_000,
        description="Largest input a model may see after its own resize (413 above): "
        "bounds thin images that a short-side resize would blow up.",
    )
    max_concurrent_decodes: Annotated[int, Field(ge=0)] = Field(
        0,
        description="Images decoded at the same time; the rest wait their turn. Bounds the "
        "memory that many large images arriving together take (one 40 Mpx decode peaks at "
        "a few hundred MB). 0: the number of CPUs this process may use.",
    )
    png_compress_level: Annotated[int, Field(ge=0, le=9)] = Field(
        1,
        description="zlib level for PNG responses. 1: the fast strategy for the content "
        "(run-length for masks, Huffman-only for overlays), still small; 2-9: zlib's full "
        "search at that level, smaller and slower; 0: uncompressed.",
    )
    precision: Precision = Field(
        "fp32",
        description="Compute precision of every model (a model's TOML `precision` overrides): "
        "`fp32`; `bf16` (CPU or CUDA: autocast, except semantic models on CPU, which run "
        "with bf16 weights); `fp16` (autocast, CUDA only).",
    )
    channels_last: bool = Field(
        True,
        description="Run convolutions in channels-last memory format (faster on CPU and GPU; "
        "fp32 results then equal the reference up to float rounding). `false`: bit-exact.",
    )
    fold_batchnorm: bool = Field(
        True,
        description="Fold each eval-mode batch norm into the convolution before it (fewer "
        "passes over activations; results equal the reference up to float rounding). "
        "`false`, with channels_last off: bit-exact.",
    )
    torch_threads: Annotated[int, Field(ge=0)] = Field(
        0,
        description="Intra-op threads for torch; 0 = the CPUs this process may use (its "
        "affinity and cgroup CPU quota, as in a container), or OMP_NUM_THREADS when set.",
    )
    keep_freed_memory: bool = Field(
        True,
        description="Keep the memory a forward frees for the next one (glibc malloc, set by "
        "`segserve serve`: one heap, no mmap, no trimming) instead of faulting fresh zeroed "
        "pages in on every request (deeplabv3_resnet50: 62,500 a request). The process then "
        "keeps its peak heap. No effect without glibc.",
    )
    batch_autotune: bool = Field(
        True,
        description="At warm-up, measure each model's throughput per batch size (powers of 2 "
        "up to its max_batch_size) and keep the best as its cap; /models says what and why.",
    )
    warmup: bool = Field(True, description="Run one inference per model before turning ready.")
    seed: int = Field(0, description='Seed for models built with `weights = "none"`.')
    api_key: SecretStr | None = Field(
        None,
        description="When set, inference and /models need `Authorization: Bearer <key>` or "
        "`X-API-Key: <key>` (401 otherwise); health endpoints stay open. Unset: no auth.",
    )

    debug_faults: str = Field(
        "",
        description="Debugging only: make stages fail or stall, e.g. `infer_batch:delay=0.5` or "
        "`encode:error` (points: decode, preprocess, infer_batch, encode). Empty: off.",
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
