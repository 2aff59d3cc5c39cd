"""Installing a fine-tuned model: its checkpoint into the weights directory and a
``models/NAME.toml`` that ``segserve serve`` loads with no edit."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

from app.errors import ConfigError
from app.predictors.repository import ModelSpec, load_spec
from app.predictors.weights import sha256_of
from app.training.files import replacing


def _toml_value(value: Any) -> str:
    # JSON strings, numbers, booleans and flat lists are valid TOML values.
    if isinstance(value, bool | int | float | str) or (
        isinstance(value, list) and all(isinstance(v, bool | int | float | str) for v in value)
    ):
        return json.dumps(value)
    raise TypeError(f"cannot write {value!r} as a TOML value")


def model_toml(spec: ModelSpec, comment: str) -> str:
    """The model file of ``spec``: the keys ``finetune`` sets, in the order docs/models.md uses."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [
        f"task = {_toml_value(spec.task)}",
        f"architecture = {_toml_value(spec.architecture)}",
        f"checkpoint = {_toml_value(spec.checkpoint)}",
        f"sha256 = {_toml_value(spec.sha256)}",
        f"categories = {_toml_value(spec.categories)}",
    ]
    if spec.preprocessing.resize is not None:
        lines += ["", "[preprocessing]", f"resize = {spec.preprocessing.resize}"]
    if spec.options:
        lines += ["", "[options]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in spec.options.items()]
    return "\n".join(lines) + "\n"


def check_installable(name: str, models_dir: Path, *, overwrite: bool) -> None:
    """Refuse, before training, to end a run by replacing someone's model file."""
    target = models_dir / f"{name}.toml"
    if target.exists() and not overwrite:
        raise ConfigError(
            f"{target} exists: choose another --name, pass --overwrite to replace it, or "
            "--no-install to leave the model repository alone"
        )
    if not models_dir.is_dir():
        raise ConfigError(
            f"model repository {models_dir} is not a directory (SEGSERVE_MODELS_DIR); create "
            "it, or pass --no-install"
        )


def install(
    spec: ModelSpec, checkpoint: Path, *, weights_dir: Path, models_dir: Path, source: str
) -> tuple[Path, Path]:
    """Copy ``checkpoint`` into ``weights_dir`` (named by its hash, so versions never
    collide) and write ``models_dir/NAME.toml``; returns both paths. The TOML is read back
    with the service's own loader before it replaces anything."""
    digest = sha256_of(checkpoint)
    file_name = f"{spec.name}-{digest[:8]}.pt"
    weights_dir.mkdir(parents=True, exist_ok=True)
    installed = weights_dir / file_name
    if not installed.exists():
        with replacing(installed) as temporary:
            shutil.copyfile(checkpoint, temporary)
    final = spec.model_copy(update={"checkpoint": file_name, "sha256": digest})
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = model_toml(final, f"Written by `segserve finetune` on {stamp} from {source}.")
    target = models_dir / f"{spec.name}.toml"
    with replacing(target) as temporary:
        temporary.write_text(text, encoding="utf-8")
        load_spec(temporary)  # what serve will read: it must validate before it replaces
    return installed, target
