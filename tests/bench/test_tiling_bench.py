"""bench/tiling.py: its own reading of the grid rule, and a --quick run end to end (a real
service, tiny images; ~30 s on 2 cores) whose result file holds every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from app.tiling import axis_starts as service_axis_starts
from bench import tiling
from bench.servers import REPO_ROOT


def test_the_bench_reads_the_grid_rule_as_the_service_does() -> None:
    assert tiling.axis_starts(300, 512, 64) == [0]  # shorter than a tile: one window
    assert tiling.axis_starts(1000, 512, 64) == [0, 448, 488]  # the last one ends at the edge
    assert tiling.axis_starts(960, 512, 64) == [0, 448]  # 448 + 512 = 960: already at the edge
    for length in range(16, 700, 7):
        for tile, overlap in ((64, 0), (64, 16), (100, 99), (512, 64)):
            assert tiling.axis_starts(length, tile, overlap) == service_axis_starts(
                length, tile, overlap
            )
    assert tiling.windows_of(100, 150, 64, 16) == [(y, x) for y in (0, 36) for x in (0, 48, 86)]


class Doubling(torch.nn.Module):
    """A 'network' whose class-1 logit is the input's first channel and class 0's its negation."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": torch.cat([-x[:, :1], x[:, :1]], dim=1)}


def test_the_reference_loop_sums_the_covering_windows() -> None:
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    image[:, 25:] = 255  # right half bright: class 1 there, class 0 on the left
    class_map = tiling.reference_class_map(
        Doubling(), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), image, tile=32, overlap=8
    )
    assert class_map.shape == (40, 50) and class_map.dtype == np.uint8
    assert (class_map[:, :25] == 0).all() and (class_map[:, 25:] == 1).all()


def test_server_timing_is_read_with_counts() -> None:
    header = 'decode;dur=12.50, infer;dur=1500.00, stitch;dur=30.00, windows;desc="63"'
    assert tiling.server_timing(header) == {
        "decode": 0.0125,
        "infer": 1.5,
        "stitch": 0.03,
        "windows": 63.0,
    }


@pytest.mark.timeout(120)
def test_process_cpu_time_is_read_from_proc() -> None:
    started, cpu = tiling.process_cpu_s(os.getpid()), time.process_time()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn CPU time
        pass
    spent = tiling.process_cpu_s(os.getpid()) - started
    # /proc counts in clock ticks (10 ms): the same time to within a few ticks.
    assert spent == pytest.approx(time.process_time() - cpu, abs=0.05)


def test_a_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "tiling.json"
    # Its own process: the bench takes the service's malloc options, which are process-wide.
    done = subprocess.run(
        [sys.executable, "-m", "bench.tiling", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["model"] == tiling.DEFAULT_MODEL
    assert (result["tile"], result["overlap"]) == (tiling.QUICK.tile, tiling.QUICK.overlap)
    machine = result["meta"]["machine"]
    assert machine["lscpu"]["model"] and "flags" in machine["lscpu"]
    assert result["meta"]["process"]["torch_threads"] >= 1

    throughput = result["throughput"]
    width, height = tiling.QUICK.size
    assert throughput["windows"] == len(
        tiling.windows_of(height, width, tiling.QUICK.tile, tiling.QUICK.overlap)
    )
    assert throughput["batch_size"] >= 1 and len(throughput["rounds"]) == tiling.QUICK.repeats
    assert throughput["raw_windows_per_s_median"] > 0
    assert throughput["service_windows_per_s_median"] > 0
    assert throughput["ratio"] > 0 and throughput["met"] == (throughput["ratio"] >= 0.9)
    assert {"infer", "stitch"} <= set(throughput["server_timing_mean_s"])
    for r in throughput["rounds"]:
        assert r["server_timing_s"]["windows"] == throughput["windows"]
        assert r["batches"] >= 1
        assert r["service_cpu_s"] > 0
    assert len(throughput["cpu_rounds"]) == tiling.QUICK.repeats
    assert throughput["cpu_ratio"] > 0

    agreement = result["agreement"]
    assert agreement["windows"] > 1  # the rule's sums over overlaps are exercised
    assert 0 <= agreement["pixels_equal_pct"] <= 100
    assert agreement["pixels_equal_pct"] >= tiling.AGREEMENT_TARGET  # fp32 both sides
    assert agreement["reference_classes"] >= 2  # calibrated: not one class everywhere

    memory = result["memory"]
    assert memory["classes"] == 21 and memory["windows"] > 1
    assert memory["idle_rss_bytes"] > 0 and memory["peak_rss_bytes"] >= memory["idle_rss_bytes"]
    assert memory["peak_above_idle_bytes"] == memory["peak_rss_bytes"] - memory["idle_rss_bytes"]
    assert memory["method"] and memory["rss_samples"] >= 1
    assert set(memory["variants"]) == {"shipped"}
    assert any("service / raw" in line for line in result["summary"])
    logs = tmp_path / "tiling-logs"
    assert {p.name for p in logs.iterdir()} >= {
        "service.log",
        "agreement.log",
        "memory-shipped.log",
    }
