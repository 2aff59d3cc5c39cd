"""Settings: one typed object from ``SEGSERVE_*`` variables (and ``.env``), validated at boot.

Nothing reads the environment at import time: :func:`get_settings` builds the object when
the app is created, and tests inject their own through ``create_app(settings)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    png_compress_level: Annotated[int, Field(ge=0, le=9)] = Field(
        1, description="zlib level for PNG responses: 1 is fast and still small for masks."
    )
    warmup: bool = Field(True, description="Run one inference per model before turning ready.")
    seed: int = Field(0, description='Seed for models built with `weights = "none"`.')
    api_key: SecretStr | None = Field(
        None,
        description="When set, inference and /models need `Authorization: Bearer <key>` or "
        "`X-API-Key: <key>` (401 otherwise); health endpoints stay open. Unset: no auth.",
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: object) -> object:
        # `SEGSERVE_API_KEY=` (as left in a copied .env) means "no key", not "match nothing".
        return None if isinstance(value, str) and not value.strip() else value

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
