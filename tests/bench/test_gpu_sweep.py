"""bench/gpu_sweep.py on the CPU in --quick mode: every point of the grid is measured, or
skipped with its reason (fp16 needs CUDA), and the three result files are written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bench import gpu_sweep

# A fast semantic model (the standard ones take seconds an image on 2 cores at the preset's
# 520 pixels) and Mask R-CNN, made small by --quick.
MODELS = ("lraspp_mobilenet_v3_large", "maskrcnn_resnet50_fpn_v2")


@pytest.mark.timeout(120)
def test_a_quick_cpu_sweep_measures_every_point(tmp_path: Path) -> None:
    argv = ["--device", "cpu", "--quick", "--models", ",".join(MODELS), "--out", str(tmp_path)]
    assert gpu_sweep.main(argv) == 0
    result = json.loads((tmp_path / "sweep.json").read_text())
    points = result["points"]
    expected = {
        (m, p, mode, b)
        for m in MODELS
        for p in gpu_sweep.PRECISIONS
        for mode in gpu_sweep.MODES
        for b in (1, 2)
    }
    assert {(p["model"], p["precision"], p["mode"], p["batch_size"]) for p in points} == expected
    for p in points:
        if p["precision"] == "fp16":  # CUDA only
            assert p["status"] == "skipped" and "CUDA" in p["note"]
            continue
        assert p["status"] == "ok", p
        assert p["items_per_s"] > 0 and p["runs"] >= 1
        if p["mode"] == "untiled":
            assert (p["unit"], p["items_per_run"]) == ("images/s", p["batch_size"])
        else:
            assert p["unit"] == "windows/s" and p["items_per_run"] > p["batch_size"]
    assert result["meta"]["weights"] == {m: "none" for m in MODELS}
    assert result["meta"]["environment"]["torch"]
    with (tmp_path / "sweep.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(points)
    table = (tmp_path / "sweep.md").read_text()
    assert "| lraspp_mobilenet_v3_large | bf16 | tiled | windows/s |" in table


def test_the_budget_skips_what_is_left(tmp_path: Path) -> None:
    argv = ["--device", "cpu", "--quick", "--models", "lraspp_mobilenet_v3_large"]
    argv += ["--precisions", "fp32", "--budget-s", "1e-9", "--out", str(tmp_path)]
    assert gpu_sweep.main(argv) == 0
    points = json.loads((tmp_path / "sweep.json").read_text())["points"]
    assert points and all(p["status"] == "skipped" and "budget" in p["note"] for p in points)
