"""docs/configuration.md and .env.example: generated from app/config.py, complete, fresh."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
from pydantic import Field

from app import settings_docs
from app.cli import main
from app.config import GROUPS, Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("relative", list(settings_docs.FILES))
def test_the_committed_file_is_the_generated_text(relative: str) -> None:
    path = ROOT / relative
    committed = path.read_text(encoding="utf-8") if path.is_file() else ""
    generated = settings_docs.FILES[relative]()
    if committed != generated:
        diff = difflib.unified_diff(
            committed.splitlines(), generated.splitlines(), relative, "generated", lineterm=""
        )
        pytest.fail(
            f"{relative} is stale: run `make docs` (segserve settings --write) and commit it.\n"
            + "\n".join(list(diff)[:40])
        )


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_has_a_description_and_a_group(name: str) -> None:
    info = Settings.model_fields[name]
    assert (info.description or "").strip(), f"{name}: add a description to its Field"
    extra = info.json_schema_extra
    assert isinstance(extra, dict), f"{name}: json_schema_extra={{'group': ...}} is missing"
    assert extra.get("group") in GROUPS, f"{name}: group must be one of {list(GROUPS)}"


def test_every_group_has_settings() -> None:
    used = {doc.group for doc in settings_docs.setting_docs()}
    assert used == set(GROUPS)


@pytest.mark.parametrize("doc", settings_docs.setting_docs(), ids=lambda doc: doc.env)
def test_every_setting_appears_in_both_files(doc: settings_docs.SettingDoc) -> None:
    assert doc.env == f"SEGSERVE_{doc.field.upper()}"
    assert f"\n# {doc.env}={doc.default}\n" in settings_docs.env_example()
    assert f"\n| `{doc.env}` | " in settings_docs.configuration_markdown()


def test_a_setting_without_a_description_is_refused() -> None:
    class Undocumented(Settings):
        surprise: int = Field(0, json_schema_extra={"group": "debugging"})

    with pytest.raises(ValueError, match="setting surprise has no description"):
        settings_docs.setting_docs(Undocumented)


def test_the_example_uncommented_gives_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each default shown in .env.example is a value the settings read back as the default."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"SEGSERVE_{name.upper()}", raising=False)
    lines = settings_docs.env_example().splitlines()
    assignments = [line[2:] for line in lines if re.match(r"# SEGSERVE_[A-Z_]+=", line)]
    assert len(assignments) == len(Settings.model_fields)
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(assignments) + "\n", encoding="utf-8")
    loaded = Settings(_env_file=env_file)
    assert loaded == Settings(_env_file=None)


def test_bounds_and_choices_are_shown() -> None:
    docs = {doc.field: doc for doc in settings_docs.setting_docs()}
    assert docs["port"].accepts == "integer, 1 to 65535"
    assert docs["request_timeout_s"].accepts == "number, greater than 0"
    assert docs["log_level"].accepts == "`debug`, `info`, `warning`, `error`"
    assert docs["log_level"].env_note == "One of: debug, info, warning, error."
    assert docs["precision"].env_note == ""  # its description lists every choice already
    assert docs["api_key"].default == docs["cors_origins"].default == ""
    assert "`33554432` (32 MiB)" in settings_docs.configuration_markdown()


def test_settings_prints_the_env_form(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    assert capsys.readouterr().out == settings_docs.env_example()


def test_check_names_the_stale_file_and_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = ["--root", str(tmp_path)]
    assert main(["settings", "--check", *root]) == 1  # nothing written yet: both missing
    assert "docs/configuration.md, .env.example" in capsys.readouterr().err

    assert main(["settings", "--write", *root]) == 0
    for relative, render in settings_docs.FILES.items():
        assert (tmp_path / relative).read_text(encoding="utf-8") == render()
    assert main(["settings", "--check", *root]) == 0
    capsys.readouterr()

    example = tmp_path / ".env.example"
    example.write_text(example.read_text(encoding="utf-8") + "# SEGSERVE_PORT=1\n")
    assert main(["settings", "--check", *root]) == 1
    err = capsys.readouterr().err
    assert "stale: .env.example;" in err
    assert "docs/configuration.md" not in err
    assert "`make docs`" in err

    assert main(["settings", "--write", *root]) == 0
    assert capsys.readouterr().out == f"wrote {example}\n"  # only the stale one
    assert main(["settings", "--check", *root]) == 0
