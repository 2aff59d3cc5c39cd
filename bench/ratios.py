"""The issue's targets as ratios between servers measured in the same run.

Servers are keyed by label: ``service``, ``naive``, ``litserve`` at the run's precision,
``service@bf16`` (and the like) at a compared precision, and ``raw`` / ``raw@bf16``.
Closed-loop points are compared at concurrency 8, or at the highest concurrency below it
that both sides measured (the ratio's ``how`` says which).

Where the servers' points were paired with raw blocks (bench/paired.py), the throughput
targets are also computed from those figures, marked "paired": the drift between the minutes
each server ran cancels out of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

TARGET_CONCURRENCY = 8


def closed_point(server: Mapping[str, Any], concurrency: int) -> Mapping[str, Any] | None:
    for point in server.get("closed", []):
        if point["concurrency"] == concurrency:
            return point
    return None


def common_concurrency(a: Mapping[str, Any], b: Mapping[str, Any], target: int) -> int | None:
    """``target`` if both measured it, else the highest concurrency below it both measured."""
    levels = {p["concurrency"] for p in a.get("closed", [])} & {
        p["concurrency"] for p in b.get("closed", [])
    }
    below = [c for c in levels if c <= target]
    return max(below) if below else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _entry(
    name: str, value: float | None, target: float, higher_is_better: bool, how: str
) -> dict[str, Any]:
    met = None
    if value is not None:
        met = value >= target if higher_is_better else value <= target
    op = ">=" if higher_is_better else "<="
    return {"name": name, "value": value, "target": f"{op} {target:g}", "met": met, "how": how}


def _compare_servers(
    servers: Mapping[str, Mapping[str, Any]],
    a: str,
    b: str,
    metric: str,
    pick: Callable[[Mapping[str, Any]], float | None],
) -> tuple[float | None, str]:
    if a not in servers or b not in servers:
        return None, f"not measured ({a} or {b} missing)"
    level = common_concurrency(servers[a], servers[b], TARGET_CONCURRENCY)
    if level is None:
        return None, f"no common concurrency <= {TARGET_CONCURRENCY}"
    point_a = closed_point(servers[a], level)
    point_b = closed_point(servers[b], level)
    assert point_a is not None
    assert point_b is not None
    return _ratio(pick(point_a), pick(point_b)), f"{a} / {b} {metric}, closed loop c={level}"


def _throughput(point: Mapping[str, Any]) -> float | None:
    return float(point["throughput_ips"])


def _p99(point: Mapping[str, Any]) -> float | None:
    value = point["latency_s"]["p99"]
    return None if value is None else float(value)


def _versus_raw(
    servers: Mapping[str, Mapping[str, Any]], service_label: str, raw_label: str
) -> dict[str, Any]:
    """The service's closed-loop images/s at concurrency 8 over raw's best, same precision."""
    name = f"{service_label} / {raw_label} throughput"
    service, raw = servers.get(service_label), servers.get(raw_label)
    if not service or not raw:
        return _entry(name, None, 0.95, True, f"not measured ({service_label} or {raw_label})")
    levels = [p["concurrency"] for p in service.get("closed", [])]
    level = max((c for c in levels if c <= TARGET_CONCURRENCY), default=None)
    point = closed_point(service, level) if level is not None else None
    value = _ratio(_throughput(point) if point else None, raw.get("best_ips"))
    how = (
        f"{service_label} c={level} images/s over {raw_label}'s best "
        f"(batch {raw.get('best_batch_size')})"
    )
    return _entry(name, value, 0.95, True, how)


def _over_raw(server: Mapping[str, Any] | None, raw_label: str) -> float | None:
    over = (server or {}).get("paired", {}).get("over", {})
    value = over.get(raw_label)
    return None if value is None else float(value)


def _paired_ratios(
    servers: Mapping[str, Mapping[str, Any]], *, precision: str, compared: str | None
) -> list[dict[str, Any]]:
    """The throughput targets from the paired figures (none for servers without pairing)."""

    def paired(name: str, value: float | None, target: float, how: str) -> dict[str, Any]:
        return _entry(f"{name}, paired", value, target, True, how)

    ratios = []
    service = _over_raw(servers.get("service"), "raw")
    if service is not None:
        how = "service / raw, paired rounds"
        ratios.append(paired("service / raw throughput", service, 0.95, how))
        for peer, target in (("naive", 1.3), ("litserve", 1.0)):
            value = _ratio(service, _over_raw(servers.get(peer), "raw"))
            how = f"(service / raw) / ({peer} / raw), each paired with its own raw blocks"
            ratios.append(paired(f"service / {peer} throughput", value, target, how))
    if compared is not None and servers.get(f"service@{compared}", {}).get("paired"):
        label, raw_label = f"service@{compared}", f"raw@{compared}"
        value = _over_raw(servers.get(label), raw_label)
        how = f"{label} / {raw_label}, paired rounds"
        ratios.append(paired(f"{label} / {raw_label} throughput", value, 0.95, how))
        value = _ratio(_over_raw(servers.get(label), "raw"), _over_raw(servers.get("naive"), "raw"))
        how = f"({label} / raw) / (naive / raw), each paired with raw {precision} blocks"
        if precision != "fp32":
            value, how = None, f"naive ran at {precision}, not fp32"
        ratios.append(paired(f"{label} / naive fp32 throughput", value, 2.5, how))
    return ratios


def compute_ratios(
    servers: Mapping[str, Mapping[str, Any]], *, precision: str, compared: str | None
) -> list[dict[str, Any]]:
    """Every target the run can check; a server that was not run leaves its ratios empty."""
    ratios = [_versus_raw(servers, "service", "raw")]
    for peer, throughput_target in (("naive", 1.3), ("litserve", 1.0)):
        value, how = _compare_servers(servers, "service", peer, "images/s", _throughput)
        ratios.append(_entry(f"service / {peer} throughput", value, throughput_target, True, how))
        value, how = _compare_servers(servers, "service", peer, "p99", _p99)
        ratios.append(_entry(f"service / {peer} p99", value, 1.0, False, how))
    if compared is not None:
        label = f"service@{compared}"
        ratios.append(_versus_raw(servers, label, f"raw@{compared}"))
        value, how = _compare_servers(servers, label, "naive", "images/s", _throughput)
        if precision != "fp32":
            value, how = None, f"naive ran at {precision}, not fp32"
        ratios.append(_entry(f"{label} / naive fp32 throughput", value, 2.5, True, how))
    return ratios + _paired_ratios(servers, precision=precision, compared=compared)
