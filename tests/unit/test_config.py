"""Settings validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


def settings(**fields: object) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[arg-type]


def test_an_empty_api_key_means_no_authentication() -> None:
    assert settings(api_key="").api_key is None
    assert settings(api_key="  ").api_key is None
    key = settings(api_key="k").api_key
    assert key is not None
    assert key.get_secret_value() == "k"


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", " CPU "])
def test_device_forms(device: str) -> None:
    assert settings(device=device).device == device.strip().lower()


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N; got 'tpu'"),
        ({"port": 0}, "greater than or equal to 1"),
        ({"request_timeout_s": 0}, "greater than 0"),
        ({"png_compress_level": 10}, "less than or equal to 9"),
    ],
)
def test_bad_values_name_the_rule_and_value(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        settings(**fields)


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSERVE_PORT", "9123")
    monkeypatch.setenv("SEGSERVE_MAX_QUEUE_SIZE", "7")
    loaded = Settings(_env_file=None)
    assert (loaded.port, loaded.max_queue_size) == (9123, 7)
