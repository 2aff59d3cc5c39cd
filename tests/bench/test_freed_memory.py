import json
import sys
from pathlib import Path

import pytest

from bench import freed_memory


def test_each_variant_runs_in_its_own_process_with_its_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(freed_memory, "RESULTS_DIR", tmp_path)
    argv = ["freed_memory", "--model", "lraspp_mobilenet_v3_large", "--rounds", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--forwards", "1", "--size", "40x30"])
    freed_memory.main()
    summary = json.loads((tmp_path / "freed_memory-lraspp_mobilenet_v3_large.json").read_text())
    default, kept = (summary["rounds"][v] for v in freed_memory.VARIANTS)
    assert [r["kept"] for r in default] == [0.0]  # glibc as it comes
    assert [r["kept"] for r in kept] == [1.0]  # the options took, in that process only
    for run in (*default, *kept):
        assert 0 < run["min_s"] <= run["median_s"]
        assert run["faults_per_forward"] >= 0
    assert summary["speedup"] == pytest.approx(
        summary["glibc default"]["median_s"] / summary["keep freed memory"]["median_s"]
    )
    assert "speed-up" in capsys.readouterr().out
