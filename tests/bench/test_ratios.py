from typing import Any

import pytest

from bench.ratios import common_concurrency, compute_ratios


def closed(concurrency: int, ips: float, p99: float) -> dict[str, Any]:
    return {"concurrency": concurrency, "throughput_ips": ips, "latency_s": {"p99": p99}}


def server(*points: dict[str, Any], precision: str = "fp32") -> dict[str, Any]:
    return {"precision": precision, "closed": list(points)}


def by_name(ratios: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in ratios}


SERVERS = {
    "raw": {"precision": "fp32", "best_ips": 1.0, "best_batch_size": 1},
    "service": server(closed(1, 0.5, 2.0), closed(8, 0.97, 9.0)),
    "naive": server(closed(1, 0.5, 2.0), closed(8, 0.5, 20.0)),
    "litserve": server(closed(1, 0.5, 2.0), closed(8, 1.0, 8.0)),
    "service@bf16": server(closed(8, 1.5, 6.0), precision="bf16"),
    "raw@bf16": {"precision": "bf16", "best_ips": 2.0, "best_batch_size": 2},
}


def test_every_target_is_computed_at_concurrency_8() -> None:
    ratios = by_name(compute_ratios(SERVERS, precision="fp32", compared="bf16"))
    assert ratios["service / raw throughput"]["value"] == pytest.approx(0.97)
    assert ratios["service / raw throughput"]["met"] is True
    assert ratios["service / naive throughput"]["value"] == pytest.approx(1.94)
    assert ratios["service / naive p99"]["value"] == pytest.approx(0.45)
    assert ratios["service / naive p99"]["met"] is True
    assert ratios["service / litserve throughput"]["value"] == pytest.approx(0.97)
    assert ratios["service / litserve throughput"]["met"] is False
    assert ratios["service / litserve p99"]["value"] == pytest.approx(9 / 8)
    assert ratios["service / litserve p99"]["met"] is False
    assert ratios["service@bf16 / naive fp32 throughput"]["value"] == pytest.approx(3.0)
    assert ratios["service@bf16 / naive fp32 throughput"]["met"] is True
    assert ratios["service@bf16 / raw@bf16 throughput"]["value"] == pytest.approx(0.75)
    assert ratios["service@bf16 / raw@bf16 throughput"]["met"] is False
    assert "batch 2" in ratios["service@bf16 / raw@bf16 throughput"]["how"]
    assert "c=8" in ratios["service / naive throughput"]["how"]


def test_without_a_common_8_the_highest_common_level_below_is_used() -> None:
    servers = {
        "service": server(closed(1, 1.0, 1.0), closed(4, 2.0, 3.0)),
        "naive": server(closed(1, 1.0, 1.0), closed(4, 1.0, 3.0), closed(8, 9.0, 9.0)),
    }
    assert common_concurrency(servers["service"], servers["naive"], 8) == 4
    ratios = by_name(compute_ratios(servers, precision="fp32", compared=None))
    assert ratios["service / naive throughput"]["value"] == 2.0
    assert "c=4" in ratios["service / naive throughput"]["how"]
    assert "service@bf16 / naive fp32 throughput" not in ratios


def test_service_against_raw_falls_back_below_8() -> None:
    servers = {"raw": SERVERS["raw"], "service": server(closed(1, 0.4, 1.0), closed(4, 0.9, 2.0))}
    ratio = by_name(compute_ratios(servers, precision="fp32", compared=None))[
        "service / raw throughput"
    ]
    assert ratio["value"] == pytest.approx(0.9)
    assert "c=4" in ratio["how"]


def test_missing_servers_leave_ratios_empty_not_wrong() -> None:
    ratios = by_name(
        compute_ratios({"service": SERVERS["service"]}, precision="fp32", compared=None)
    )
    assert ratios["service / raw throughput"]["value"] is None
    assert ratios["service / raw throughput"]["met"] is None
    assert ratios["service / litserve p99"]["value"] is None
    assert "not measured" in ratios["service / litserve p99"]["how"]


def test_bf16_target_needs_naive_at_fp32() -> None:
    ratios = by_name(compute_ratios(SERVERS, precision="bf16", compared="fp32"))
    assert ratios["service@fp32 / naive fp32 throughput"]["value"] is None


def paired(over: dict[str, float]) -> dict[str, Any]:
    return {"paired": {"concurrency": 8, "rounds": [], "over": over}}


def test_paired_targets_divide_each_servers_figure_against_raw() -> None:
    servers = {
        **SERVERS,
        "service": {**SERVERS["service"], **paired({"raw": 1.1})},
        "naive": {**SERVERS["naive"], **paired({"raw": 0.8})},
        "litserve": {**SERVERS["litserve"], **paired({"raw": 0.5})},
        "service@bf16": {**SERVERS["service@bf16"], **paired({"raw": 2.2, "raw@bf16": 0.9})},
    }
    ratios = by_name(compute_ratios(servers, precision="fp32", compared="bf16"))
    assert ratios["service / raw throughput, paired"]["value"] == pytest.approx(1.1)
    assert ratios["service / naive throughput, paired"]["value"] == pytest.approx(1.1 / 0.8)
    assert ratios["service / naive throughput, paired"]["met"] is True
    assert ratios["service / litserve throughput, paired"]["value"] == pytest.approx(2.2)
    bf16 = ratios["service@bf16 / raw@bf16 throughput, paired"]
    assert bf16["value"] == pytest.approx(0.9) and bf16["met"] is False
    naive_fp32 = ratios["service@bf16 / naive fp32 throughput, paired"]
    assert naive_fp32["value"] == pytest.approx(2.2 / 0.8) and naive_fp32["met"] is True
    # The unpaired figures are still there, computed from the sweep as before.
    assert ratios["service / raw throughput"]["value"] == pytest.approx(0.97)


def test_no_pairing_no_paired_targets() -> None:
    ratios = compute_ratios(SERVERS, precision="fp32", compared="bf16")
    assert not [r for r in ratios if r["name"].endswith(", paired")]


def test_the_compared_precisions_pairing_stands_without_the_services() -> None:
    # The fp32 service run failed (no pairing); service@bf16 was paired: its targets remain.
    servers = {**SERVERS, "service@bf16": {**SERVERS["service@bf16"], **paired({"raw@bf16": 1.0})}}
    ratios = by_name(compute_ratios(servers, precision="fp32", compared="bf16"))
    assert ratios["service@bf16 / raw@bf16 throughput, paired"]["value"] == pytest.approx(1.0)
    assert "service / raw throughput, paired" not in ratios
