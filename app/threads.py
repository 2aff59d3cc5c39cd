"""How many CPU threads torch should use: the CPUs this process may really run on.

torch sizes its intra-op pool from the host's core count. In a container limited by a CPU
quota (``docker run --cpus 2``, a Kubernetes CPU limit) that oversubscribes: 64 threads share
2 CPUs' worth of time slices and every forward pass gets slower. The quota lives in the cgroup
files read here (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in CPUs (``1.5`` for ``--cpus 1.5``), or None when there is none."""
    if (text := _read(root / "cpu.max")) is not None:  # cgroup v2: "<quota> <period>" or "max"
        quota, _, period = text.partition(" ")
        if quota != "max" and quota.isdigit() and period.isdigit() and int(period) > 0:
            return int(quota) / int(period)
        return None
    quota_text = _read(root / "cpu" / "cpu.cfs_quota_us") or _read(root / "cpu.cfs_quota_us")
    period_text = _read(root / "cpu" / "cpu.cfs_period_us") or _read(root / "cpu.cfs_period_us")
    try:  # cgroup v1: a quota of -1 means none
        quota_us, period_us = int(quota_text or "-1"), int(period_text or "0")
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity, capped by the cgroup quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(cpus, 1)


def torch_threads(setting: int, environ: Mapping[str, str] | None = None) -> int | None:
    """The intra-op thread count to set: the setting, else none when OMP_NUM_THREADS is set
    (torch already honours it), else :func:`available_cpus`."""
    environ = os.environ if environ is None else environ
    if setting > 0:
        return setting
    if environ.get("OMP_NUM_THREADS", "").strip():
        return None
    return available_cpus()


def configure_torch_threads(setting: int) -> int:
    """Apply :func:`torch_threads`; returns the count torch now uses."""
    threads = torch_threads(setting)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
        log.info("torch intra-op threads: %d", threads)
    return torch.get_num_threads()
