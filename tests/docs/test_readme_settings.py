"""The README's table of the settings people change first agrees with app/config.py."""

from __future__ import annotations

import re
from pathlib import Path

from app import settings_docs

README = Path(__file__).resolve().parents[2] / "README.md"
# | `SEGSERVE_A`, `SEGSERVE_B` | `a`, `b` | meaning |   ("unset" for no default)
_ROW = re.compile(r"^\| (`SEGSERVE_\w+`(?:, `SEGSERVE_\w+`)*) \| ([^|]+) \|", re.MULTILINE)


def _same(shown: str, expected: str) -> bool:
    """Equal, or the same number written another way (300 for 300.0)."""
    if shown == expected:
        return True
    try:
        return float(shown) == float(expected)
    except ValueError:
        return False


def test_readme_settings_exist_with_their_defaults() -> None:
    defaults = {doc.env: doc.default for doc in settings_docs.setting_docs()}
    rows = _ROW.findall(README.read_text())
    assert len(rows) >= 6, "the README's settings table was not found"
    for names_cell, defaults_cell in rows:
        names = re.findall(r"`(SEGSERVE_\w+)`", names_cell)
        shown = [d.strip().strip("`") for d in defaults_cell.split(",")]
        assert len(shown) == len(names), f"one default per setting in {names_cell}"
        for name, value in zip(names, shown, strict=True):
            assert name in defaults, f"README.md names {name}, which is not a setting"
            expected = defaults[name] or "unset"
            assert _same(value, expected), (
                f"README.md shows {name} = {value!r}; app/config.py's default is {expected!r}"
            )
