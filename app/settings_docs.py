"""docs/configuration.md and .env.example, generated from the fields of :class:`Settings`.

Each field's description, default, type, bounds and group (``app/config.py``) is the one
source: the render functions here are pure, and :func:`write_files` / :func:`stale_files`
keep the two files at a repository root in step with them (``segserve settings --write``,
which ``make docs`` runs; ``--check`` and tests/unit/test_settings_docs.py catch a stale one).
"""

from __future__ import annotations

import re
import textwrap
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from app.config import GROUPS, Settings

COMMAND = "make docs"  # what to run when a generated file is stale
WRITE_COMMAND = "segserve settings --write"  # what COMMAND runs
ENV_WIDTH = 92  # .env.example's comment lines, as they were written by hand
MD_WIDTH = 95  # docs/configuration.md's paragraphs, as the other docs are wrapped

_GENERATED_BY = f"Generated from the settings in app/config.py by `{COMMAND}`: do not edit by hand."

_ENV_HEADER = """\
# segserve settings: copy to .env (read from the directory segserve starts in) and edit.
# Real environment variables override .env. Every line below shows the default, and all are
# commented out: uncomment only what you change. The same, as tables: docs/configuration.md.
"""


@dataclass(frozen=True)
class SettingDoc:
    """One setting as the generated files show it."""

    field: str  # the Settings attribute, e.g. max_queue_size
    env: str  # the variable, e.g. SEGSERVE_MAX_QUEUE_SIZE
    group: str  # a key of app.config.GROUPS
    default: str  # the default as written in a .env file; "" when unset
    accepts: str  # what the variable takes, in Markdown (type, bounds or choices)
    env_note: str  # the bounds or choices that .env.example adds to the description; or ""
    description: str  # Markdown (inline code only), one paragraph


def setting_docs(model: type[BaseModel] = Settings) -> list[SettingDoc]:
    """Every field of ``model``, group by group in :data:`GROUPS` order, then in field order.

    Raises ValueError for a field without a description or with an unknown group: the
    generated files would otherwise leave it out or say nothing about it.
    """
    prefix = str(model.model_config.get("env_prefix", ""))
    docs = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        group = str(extra.get("group", ""))
        if group not in GROUPS:
            raise ValueError(f"setting {name}: group {group!r} is not one of {list(GROUPS)}")
        if not (info.description or "").strip():
            raise ValueError(f"setting {name} has no description")
        annotation = _unwrap_optional(info.annotation)
        accepts, env_note = _accepts(annotation, info, str(info.description))
        if "values" in extra:
            accepts = str(extra["values"])
        docs.append(
            SettingDoc(
                field=name,
                env=f"{prefix}{name}".upper(),
                group=group,
                default=_env_value(_default(info)),
                accepts=accepts,
                env_note=env_note,
                description=" ".join(str(info.description).split()),
            )
        )
    order = list(GROUPS)
    return sorted(docs, key=lambda doc: order.index(doc.group))  # stable: field order within


# ------------------------------------------------------------------------------- .env.example


def env_example(model: type[BaseModel] = Settings) -> str:
    """The text of .env.example: every setting commented out at its default."""
    lines = [*_ENV_HEADER.splitlines(), f"# {_GENERATED_BY}"]
    docs = setting_docs(model)
    for group, title in GROUPS.items():
        members = [doc for doc in docs if doc.group == group]
        if not members:
            continue
        lines += ["", f"# --- {title} ".ljust(ENV_WIDTH, "-")]
        for doc in members:
            text = f"{doc.description} {doc.env_note}".strip()
            lines += [*_comment(text), f"# {doc.env}={doc.default}"]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    return _wrap(text, ENV_WIDTH, indent="# ")


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    """``text`` in lines of at most ``width``, broken at spaces outside `code` only."""
    keep = "\0"  # stands for a space inside `code` while wrapping (never in a description)
    joined = re.sub(r"`[^`]*`", lambda m: m.group().replace(" ", keep), text)
    lines = textwrap.wrap(
        joined,
        width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return [line.replace(keep, " ") for line in lines]


# ------------------------------------------------------------------------ configuration.md


def configuration_markdown(model: type[BaseModel] = Settings) -> str:
    """The text of docs/configuration.md: how settings are read, then a table per group."""
    docs = setting_docs(model)
    groups = [(g, t) for g, t in GROUPS.items() if any(d.group == g for d in docs)]
    example = next((d.env for d in docs if d.field == "max_queue_size"), docs[0].env)
    prefix = str(model.model_config.get("env_prefix", ""))
    intro = [
        f"<!-- {_GENERATED_BY} -->",
        f"segserve reads its settings once, at startup, from environment variables named "
        f"`{prefix}` plus the setting's name (e.g. `{example}`), and from a `.env` file in the "
        "directory it starts in. Where both set a variable, the environment wins; `segserve "
        "serve --host` and `--port` win over both; a variable set nowhere takes the default "
        "below. To start a `.env`, copy [.env.example](../.env.example) (`cp .env.example "
        ".env`): it lists every setting, commented out at its default.",
        "Every value is validated at startup: an invalid one stops the service with a message "
        f"naming the setting and the rule. `{prefix}*` names that match no setting are "
        "ignored, so check the spelling against the tables below. Booleans accept "
        "`true`/`false`, `1`/`0`, `yes`/`no` and `on`/`off`.",
        "This file and .env.example are generated from the settings' fields in "
        "`app/config.py` (description, default, bounds, group): do not edit them by hand. "
        f"Change the field and run `{COMMAND}` (`{WRITE_COMMAND}`); `make test` fails while "
        "either file is stale (`segserve settings --check` names it).",
    ]
    parts = ["# Configuration"]
    for paragraph in intro:
        parts += ["", *_wrap(paragraph, MD_WIDTH)]
    parts += ["", " | ".join(f"[{_title(title)}](#{_anchor(title)})" for _, title in groups)]
    for group, title in groups:
        parts += [
            "",
            f"## {_title(title)}",
            "",
            "| variable | default | accepts | meaning |",
            "|---|---|---|---|",
        ]
        for doc in docs:
            if doc.group == group:
                meaning = _link_docs(doc.description)
                cells = (f"`{doc.env}`", _default_cell(doc), doc.accepts, meaning)
                parts.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(parts) + "\n"


def _link_docs(text: str) -> str:
    """Mentions of another file under docs/ made links relative to docs/configuration.md."""
    return re.sub(r"\bdocs/([\w.-]+\.md)\b", r"[docs/\1](\1)", text)


def _title(title: str) -> str:
    return title[:1].upper() + title[1:]


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _default_cell(doc: SettingDoc) -> str:
    if not doc.default:
        return "unset"
    cell = f"`{doc.default}`"
    if doc.field.endswith("_bytes") and doc.default.isdigit():
        size = int(doc.default)
        for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if size >= scale and size % scale == 0:
                return f"{cell} ({size // scale} {unit})"
    return cell


# ------------------------------------------------------------------------- types and values


def _unwrap_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _accepts(annotation: Any, info: FieldInfo, description: str) -> tuple[str, str]:
    """(What the variable takes, for the table; the part of it .env.example adds, or "")."""
    if typing.get_origin(annotation) is Literal:
        choices = [str(c) for c in typing.get_args(annotation)]
        listed = all(f"`{c}`" in description for c in choices)
        note = "" if listed else f"One of: {', '.join(choices)}."
        return ", ".join(f"`{c}`" for c in choices), note
    if annotation is bool:
        return "`true` or `false`", ""
    if annotation in (int, float):
        kind = "integer" if annotation is int else "number"
        bounds = _bounds(info)
        if not bounds:
            return kind, ""
        return f"{kind}, {bounds}", _title(f"{'from ' if ' to ' in bounds else ''}{bounds}.")
    if annotation is SecretStr:
        return "text (a secret)", ""
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path", ""
    if typing.get_origin(annotation) is list:
        return "list", ""
    return "text", ""


def _bounds(info: FieldInfo) -> str:
    low: Any = None
    high: Any = None
    low_open = False
    for rule in info.metadata:
        if isinstance(rule, annotated_types.Ge):
            low = rule.ge
        elif isinstance(rule, annotated_types.Gt):
            low, low_open = rule.gt, True
        elif isinstance(rule, annotated_types.Le):
            high = rule.le
    if low is not None and high is not None and not low_open:
        return f"{low} to {high}"
    words = []
    if low is not None:
        words.append(f"{'greater than' if low_open else 'at least'} {low}")
    if high is not None:
        words.append(f"at most {high}")
    return ", ".join(words)


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default


def _env_value(value: Any) -> str:
    """``value`` as a .env file writes it; "" for none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


# -------------------------------------------------------------------------------- the files

#: The generated files, relative to the repository root, and what renders each.
FILES: dict[str, Callable[[], str]] = {
    "docs/configuration.md": configuration_markdown,
    ".env.example": env_example,
}


def stale_files(root: Path) -> list[str]:
    """The generated files under ``root`` that are missing or differ from their rendering."""
    stale = []
    for relative, render in FILES.items():
        path = root / relative
        if not path.is_file() or path.read_text(encoding="utf-8") != render():
            stale.append(relative)
    return stale


def write_files(root: Path) -> list[str]:
    """(Re)write the stale generated files under ``root``; returns those written."""
    written = stale_files(root)
    for relative in written:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(FILES[relative](), encoding="utf-8", newline="\n")
    return written


def stale_message(stale: list[str]) -> str:
    """What ``--check`` says about stale files."""
    return (
        f"generated from app/config.py but stale: {', '.join(stale)}; "
        f"run `{COMMAND}` ({WRITE_COMMAND}) and commit the result"
    )
