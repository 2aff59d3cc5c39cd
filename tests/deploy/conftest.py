"""Shared helpers for the deployment tests: the repository's files and the .ci validators."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The validators are scripts in .ci/ (not a package); CI runs them as `python .ci/...`.
sys.path.insert(0, str(ROOT / ".ci"))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dockerfile_text() -> str:
    # Continuation lines joined, so each instruction is one line.
    return re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))


def runtime_stage() -> str:
    """The Dockerfile text from the final stage's FROM on."""
    text = dockerfile_text()
    return text[text.rindex("\nFROM ") :]


def image_env() -> dict[str, str]:
    """The ENV of the final image stage (what every container starts with)."""
    env = {}
    for args in re.findall(r"^ENV\s+(.*)$", runtime_stage(), re.MULTILINE):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    """A scratch copy of deploy/k8s (overlays included) that a test may break."""
    target = tmp_path / "k8s"
    for source in (ROOT / "deploy" / "k8s").rglob("*"):
        if source.is_file():
            dest = target / source.relative_to(ROOT / "deploy" / "k8s")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read_bytes())
    return target
