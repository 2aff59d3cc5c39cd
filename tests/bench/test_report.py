import json
from pathlib import Path
from typing import Any

from bench.ratios import compute_ratios
from bench.report import markdown, write_results


def point(concurrency: int, ips: float, p99: float, errors: dict[str, int]) -> dict[str, Any]:
    return {
        "mode": "closed",
        "concurrency": concurrency,
        "requests": 10,
        "ok": 10 - sum(errors.values()),
        "window_s": 5.0,
        "throughput_rps": ips,
        "throughput_ips": ips,
        "latency_s": {"p50": 1.0, "p90": 1.5, "p99": p99, "mean": 1.1, "max": p99},
        "errors": errors,
    }


def results() -> dict[str, Any]:
    servers: dict[str, dict[str, Any]] = {
        "raw": {
            "precision": "fp32",
            "batches": [
                {"batch_size": 1, "batches": 4, "s_per_batch": 0.5, "images_per_s": 2.0},
                {"batch_size": 2, "batches": 2, "s_per_batch": 1.2, "images_per_s": 1.667},
            ],
            "batch1_ips": 2.0,
            "best_batch_size": 1,
            "best_ips": 2.0,
        },
        "service": {
            "precision": "fp32",
            "agreement": {"summary": "class map: 100.000% of pixels equal"},
            "closed": [point(1, 1.9, 0.6, {}), point(8, 1.95, 4.25, {"503": 1})],
            "open": [
                {
                    **point(0, 1.4, 0.9, {}),
                    "mode": "open",
                    "offered_rps": 1.4,
                    "arrivals": "poisson",
                }
            ],
        },
    }
    return {
        "meta": {
            "name": "unit",
            "command": "python -m bench.run --quick",
            "machine": {"cpu": "test cpu", "cores usable": 2},
            "settings": {"duration_s": 5.0},
        },
        "models": {
            "deeplabv3_resnet50": {
                "servers": servers,
                "ratios": compute_ratios(servers, precision="fp32", compared=None),
            }
        },
    }


def test_results_are_written_as_json_markdown_and_a_png(tmp_path: Path) -> None:
    data = results()
    write_results(data, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == data
    assert (tmp_path / "deeplabv3_resnet50.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["models"]["deeplabv3_resnet50"]["plot"] == "deeplabv3_resnet50.png"
    text = (tmp_path / "results.md").read_text()
    assert "![deeplabv3_resnet50](deeplabv3_resnet50.png)" in text


def test_markdown_has_a_row_per_point_and_the_ratios() -> None:
    text = markdown(results())
    assert (
        "| service | fp32 | closed c=8 | 10 | 9 | 1.950 | 1.950 | 1.00 | 1.50 | 4.25 | 503: 1 |"
        in text
    )
    assert "| service | fp32 | open 1.40/s (poisson) |" in text
    assert "| raw | fp32 | in-process batch 1 (best) | 4 | 4 | - | 2.000 | 0.50 |" in text
    assert "| service / raw throughput | 0.97 | >= 0.95 | yes |" in text
    assert "- service: class map: 100.000% of pixels equal" in text
    assert "Command: `python -m bench.run --quick`" in text
    assert "- cpu: test cpu" in text


def test_no_plot_without_closed_loop_points(tmp_path: Path) -> None:
    data = results()
    servers = data["models"]["deeplabv3_resnet50"]["servers"]
    del servers["service"]
    write_results(data, tmp_path)
    assert not (tmp_path / "deeplabv3_resnet50.png").exists()
    assert data["models"]["deeplabv3_resnet50"]["plot"] is None


def test_markdown_lists_each_servers_paired_rounds() -> None:
    data = results()
    data["models"]["deeplabv3_resnet50"]["servers"]["service"]["paired"] = {
        "concurrency": 8,
        "rounds": [
            {"raw_before": {"raw": 2.0}, "server_ips": 1.9, "raw_after": {"raw": 1.8}},
            {"raw_before": {"raw": 1.8}, "server_ips": 1.8, "raw_after": {"raw": 1.9}},
        ],
        "over": {"raw": 0.9737},
    }
    text = markdown(data)
    assert (
        "- service at c=8 (img/s): raw 2.000 | service 1.900 | raw 1.800; "
        "raw 1.800 | service 1.800 | raw 1.900. service / raw 0.974"
    ) in text
