"""bench.dataset_check in a small size: every broken file is named, the figures are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import dataset_check


def test_every_breakage_is_named_and_timed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = dataset_check.main(
        [
            "--images",
            "12",
            "--size",
            "48",
            "--per-kind",
            "2",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["problems_made"] == 10 == result["broken_files_named"]
    assert result["problems_reported"] >= 10
    assert 0 < result["seconds_best"] == min(result["seconds_all"])
    text = " ".join(result["problems"])
    for hint in ("no mask", "255", "RGB"):
        assert hint in text
    assert "10 broken files named" in capsys.readouterr().out
