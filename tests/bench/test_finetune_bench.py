"""bench/finetune.py: its figures computed from what it measured, its reference loop as
torchvision's script writes it, and each mode's --quick run end to end (tiny sizes; the
converge modes run the real ``segserve finetune`` in a subprocess)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import finetune

# One torch thread: on a busy 2-core machine, spinning OpenMP threads make a step 10x slower.
THREADS = ["--torch-threads", "1"]


def blocks(refs: list[float], segs: list[float]) -> list[dict[str, Any]]:
    """A warm-up pair, then reference, segserve, reference, ..., reference."""
    out = [
        {"side": "reference", "warmup": True, "images_per_s": 1.0},
        {"side": "segserve", "warmup": True, "images_per_s": 99.0},
    ]
    for k, ref in enumerate(refs):
        out.append({"side": "reference", "warmup": False, "images_per_s": ref})
        if k < len(segs):
            out.append({"side": "segserve", "warmup": False, "images_per_s": segs[k]})
    return out


def test_each_segserve_block_is_held_to_the_reference_blocks_around_it() -> None:
    figures = finetune.throughput_figures(blocks([10.0, 14.0, 10.0], [11.0, 9.6]))
    assert [r["ratio"] for r in figures["rounds"]] == pytest.approx([11 / 12, 9.6 / 12])
    assert figures["ratio"] == pytest.approx(math.sqrt(11 / 12 * 9.6 / 12))  # geometric mean
    assert (figures["ratio_min"], figures["ratio_max"]) == pytest.approx((0.8, 11 / 12))
    assert figures["segserve_images_per_s_median"] == pytest.approx(10.3)
    assert figures["reference_images_per_s_median"] == 10.0  # the warm-up pair left out
    assert figures["met"] is False
    assert finetune.throughput_figures(blocks([10.0, 10.0], [9.5]))["met"] is True
    with pytest.raises(ValueError, match="reference blocks around"):
        finetune.throughput_figures(blocks([10.0], [10.0]))  # no reference block after it


def test_convergence_reads_first_reach_and_best_within_the_budget() -> None:
    rows = [
        {"epoch": 1, "val_miou": 0.5, "seconds": 50.0},
        {"epoch": 2, "val_miou": 0.9, "seconds": 50.0},
        {"epoch": 3, "val_miou": 0.8, "seconds": 50.0},
    ]
    ends = {1: 60.0, 2: 120.0, 3: 180.0}
    found = finetune.convergence(rows, ends, "val_miou", 0.85, None)
    assert found["reached"]["epoch"] == 2 and found["reached"]["wall_s"] == 120.0
    assert found["best"]["epoch"] == 2
    assert [e["train_s"] for e in found["epochs"]] == [50.0, 100.0, 150.0]
    within = finetune.convergence(rows, ends, "val_miou", 0.95, budget_s=100.0)
    assert within["reached"] is None and within["best"]["epoch"] == 1


def test_the_reference_loop_is_the_scripts() -> None:
    out, aux = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, 0, 0] = 255  # ignored
    ce = torch.nn.functional.cross_entropy
    expected = ce(out, target, ignore_index=255) + 0.5 * ce(aux, target, ignore_index=255)
    assert torch.allclose(finetune.reference_criterion({"out": out, "aux": aux}, target), expected)
    assert torch.allclose(
        finetune.reference_criterion({"out": out}, target), ce(out, target, ignore_index=255)
    )
    from app.training.build import build_trainable

    model = build_trainable(
        "deeplabv3_mobilenet_v3_large",
        4,
        start="scratch",
        weights_dir=Path("."),
        allow_download=False,
        seed=0,
    )
    loop = finetune.ReferenceLoop(
        model, lr=0.01, iters_per_epoch=10, epochs=2, device=torch.device("cpu"), amp=False
    )
    groups = loop.optimizer.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.01, 0.1])  # aux head at 10x
    assert all((g["momentum"], g["weight_decay"]) == (0.9, 1e-4) for g in groups)
    loop.optimizer.step()  # no gradients: nothing moves, but the scheduler may step now
    for _ in range(10):
        loop.lr_scheduler.step()
    assert groups[0]["lr"] == pytest.approx(0.01 * 0.5**0.9)  # poly, per iteration


def read(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "results.json").read_text())
    machine = result["meta"]["machine"]
    assert machine["lscpu"]["model"] and machine["lscpu"]["flags"]
    assert machine["torch"] == torch.__version__
    assert result["meta"]["process"]["torch_threads"] == 1
    assert (out / result["plot"]).stat().st_size > 1000  # a PNG with something drawn
    return result


@pytest.mark.timeout(300)
def test_quick_throughput_measures_both_sides(tmp_path: Path) -> None:
    assert finetune.main(["throughput", "--quick", *THREADS, "--out", str(tmp_path)]) == 0
    result = read(tmp_path)
    plan = finetune.QUICK_THROUGHPUT
    assert result["settings"]["batch"] == plan.batch
    sides = [(b["side"], b["warmup"]) for b in result["blocks"]]
    assert (
        sides
        == [("reference", True), ("segserve", True), ("reference", False)]
        + [
            ("segserve", False),
            ("reference", False),
        ]
        * plan.rounds
    )
    rates = [b["images_per_s"] for b in result["blocks"]]
    assert all(math.isfinite(r) and r > 0 for r in rates)
    t = result["throughput"]
    # The figures are the measured blocks' (recomputed here), not numbers of their own.
    again = finetune.throughput_figures(result["blocks"])
    for key in ("ratio", "ratio_min", "ratio_max", "ratio_of_medians"):
        assert t[key] == pytest.approx(again[key])
    timed = [b for b in result["blocks"] if not b["warmup"]]
    refs = [b["images_per_s"] for b in timed if b["side"] == "reference"]
    segs = [b["images_per_s"] for b in timed if b["side"] == "segserve"]
    assert t["ratio"] == pytest.approx(segs[0] / ((refs[0] + refs[1]) / 2))
    assert t["ratio_min"] <= t["ratio"] <= t["ratio_max"]
    assert t["met"] == (t["ratio"] >= finetune.THROUGHPUT_TARGET)
    assert any("segserve / reference" in line for line in result["summary"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["converge", "converge-instance"])
def test_quick_converge_runs_the_real_command(tmp_path: Path, mode: str) -> None:
    assert finetune.main([mode, "--quick", *THREADS, "--out", str(tmp_path)]) == 0
    result = read(tmp_path)
    plan = finetune.QUICK_CONVERGE[mode]
    metric = finetune.METRIC[mode]
    command = result["command"]
    assert command["returncode"] == 0 and not command["interrupted_at_budget"]
    assert command["epochs_done"] == plan.epochs
    assert "finetune" in result["finetune_command"]
    with (tmp_path / "run-results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    found = result["convergence"]
    assert [e["epoch"] for e in found["epochs"]] == [int(r["epoch"]) for r in rows]
    assert [e[metric] for e in found["epochs"]] == pytest.approx([float(r[metric]) for r in rows])
    walls = [e["wall_s"] for e in found["epochs"]]
    assert all(0 < w <= command["wall_s"] for w in walls) and walls == sorted(walls)
    assert 0 <= found["best"][metric] <= 1
    assert found["best"][metric] == max(e[metric] for e in found["epochs"])
    if mode == "converge":
        assert found["met"] == bool(found["reached"] and found["reached"]["wall_s"] <= 900)
    log = (tmp_path / "finetune.log").read_text()
    assert f"epoch {plan.epochs}/{plan.epochs}:" in log
