"""CPU threads from the cgroup quota (containers) and the process's affinity."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import threads


def _write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="ascii")


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("200000 100000", 2.0), ("150000 100000", 1.5), ("max 100000", None), ("junk", None)],
)
def test_cgroup_v2_cpu_max(tmp_path: Path, text: str, cpus: float | None) -> None:
    _write(tmp_path, "cpu.max", text)
    assert threads.cgroup_cpu_limit(tmp_path) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"), [("50000", "100000", 0.5), ("-1", "100000", None)]
)
def test_cgroup_v1_cfs_quota(tmp_path: Path, quota: str, period: str, cpus: float | None) -> None:
    _write(tmp_path, "cpu/cpu.cfs_quota_us", quota)
    _write(tmp_path, "cpu/cpu.cfs_period_us", period)
    assert threads.cgroup_cpu_limit(tmp_path) == cpus


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert threads.cgroup_cpu_limit(tmp_path) is None


def test_available_cpus_is_capped_by_the_quota_rounded_up(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    _write(tmp_path, "cpu.max", "50000 100000")  # half a CPU still needs one thread
    assert threads.available_cpus(tmp_path) == 1
    _write(tmp_path, "cpu.max", f"{(affinity + 3) * 100000} 100000")  # above affinity
    assert threads.available_cpus(tmp_path) == affinity


def test_setting_wins_then_omp_num_threads_then_the_cpus() -> None:
    assert threads.torch_threads(3, environ={"OMP_NUM_THREADS": "7"}) == 3
    assert threads.torch_threads(0, environ={"OMP_NUM_THREADS": "7"}) is None  # torch has it
    assert threads.torch_threads(0, environ={}) == threads.available_cpus()
