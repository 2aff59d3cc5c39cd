"""Write a run's results: JSON (everything), a markdown table, and one PNG plot per model."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt

HEADER = (
    "| server | precision | load | requests | ok | req/s | img/s | p50 s | p90 s | p99 s | errors |"
)
RULE = "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _load(point: Mapping[str, Any]) -> str:
    if point["mode"] == "closed":
        return f"closed c={point['concurrency']}"
    return f"open {point['offered_rps']:.2f}/s ({point['arrivals']})"


def point_row(server: str, precision: str, point: Mapping[str, Any]) -> str:
    latency = point["latency_s"]
    errors = ", ".join(f"{k}: {v}" for k, v in point["errors"].items()) or "0"
    cells = [
        server,
        precision,
        _load(point),
        str(point["requests"]),
        str(point["ok"]),
        _num(point["throughput_rps"], 3),
        _num(point["throughput_ips"], 3),
        _num(latency["p50"]),
        _num(latency["p90"]),
        _num(latency["p99"]),
        errors,
    ]
    return "| " + " | ".join(cells) + " |"


def raw_rows(server: str, precision: str, raw: Mapping[str, Any]) -> list[str]:
    rows = []
    for batch in raw["batches"]:
        best = " (best)" if batch["batch_size"] == raw["best_batch_size"] else ""
        images = batch["batches"] * batch["batch_size"]
        ips = _num(batch["images_per_s"], 3)
        cells = [server, precision, f"in-process batch {batch['batch_size']}{best}", str(images)]
        cells += [str(images), "-", ips, _num(batch["s_per_batch"]), "-", "-", "0"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def model_table(servers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = [HEADER, RULE]
    for label, server in servers.items():
        precision = server.get("precision", "?")
        if "error" in server:
            lines.append(f"| {label} | {precision} | failed: {server['error'].splitlines()[0]} |")
        if "batches" in server:
            lines += raw_rows(label, precision, server)
        for point in [*server.get("closed", []), *server.get("open", [])]:
            lines.append(point_row(label, precision, point))
    return lines


def ratio_table(ratios: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| ratio | value | target | met | measured as |", "|---|---:|---|---|---|"]
    for r in ratios:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        lines.append(f"| {r['name']} | {_num(r['value'])} | {r['target']} | {met} | {r['how']} |")
    return lines


def agreement_lines(servers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = []
    for label, server in servers.items():
        if agreement := server.get("agreement"):
            lines.append(f"- {label}: {agreement['summary']}")
    return lines


def paired_lines(servers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Each server's paired rounds: raw before, the server, raw after, and its figures."""
    lines = []
    for label, server in servers.items():
        if not (paired := server.get("paired")):
            continue
        rounds = "; ".join(
            ", ".join(f"{k} {r['raw_before'][k]:.3f}" for k in r["raw_before"])
            + f" | {label} {r['server_ips']:.3f} | "
            + ", ".join(f"{k} {r['raw_after'][k]:.3f}" for k in r["raw_after"])
            for r in paired["rounds"]
        )
        figures = ", ".join(f"{label} / {k} {v:.3f}" for k, v in paired["over"].items())
        lines.append(f"- {label} at c={paired['concurrency']} (img/s): {rounds}. {figures}")
    return lines


def server_notes(servers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What each service run reported about itself, and how busy the machine was meanwhile."""
    lines = []
    for label, server in servers.items():
        if info := server.get("model_info"):
            shown = {k: v for k, v in info.items() if k != "categories"}
            lines.append(f"- {label} /models: `{json.dumps(shown, sort_keys=True)}`")
        if load := server.get("load_average"):
            lines.append(
                f"- {label}: 1-min load average {load['before']:.2f} before, "
                f"{load['after']:.2f} after"
            )
    return lines


def markdown(results: Mapping[str, Any]) -> str:
    meta = results["meta"]
    out = [f"# Benchmark {meta['name']}", "", f"Command: `{meta['command']}`", ""]
    out += [f"- {key}: {value}" for key, value in meta["machine"].items()]
    out += [f"- settings: {json.dumps(meta['settings'], sort_keys=True)}", ""]
    out += [
        "Latency is per request (one image), over successful requests; throughput counts "
        "successes only. Raw rows are the in-process pipeline (no HTTP, no encoding): their "
        "p50 column is seconds per batch.",
        "",
    ]
    for model, result in results["models"].items():
        out += [f"## {model}", "", *model_table(result["servers"]), ""]
        if result.get("ratios"):
            out += ["Targets (issue 3), within this run:", "", *ratio_table(result["ratios"]), ""]
        if paired := paired_lines(result["servers"]):
            out += ["Paired rounds (bench/paired.py), raw blocks around each server block:", ""]
            out += [*paired, ""]
        if agreement := agreement_lines(result["servers"]):
            out += ["Agreement of one response with the raw fp32 pipeline:", "", *agreement, ""]
        if notes := server_notes(result["servers"]):
            out += ["Servers:", "", *notes, ""]
        if result.get("plot"):
            out += [f"![{model}]({result['plot']})", ""]
    return "\n".join(out)


def plot_model(model: str, servers: Mapping[str, Mapping[str, Any]], path: Path) -> bool:
    """Throughput and p99 against concurrency, one line per server; False if nothing to plot."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    drew = False
    for label, server in servers.items():
        closed = server.get("closed", [])
        if closed:
            levels = [p["concurrency"] for p in closed]
            left.plot(levels, [p["throughput_ips"] for p in closed], marker="o", label=label)
            p99 = [p["latency_s"]["p99"] for p in closed]
            right.plot(
                levels, [float("nan") if v is None else v for v in p99], marker="o", label=label
            )
            drew = True
        if "best_ips" in server:
            left.axhline(server["best_ips"], linestyle="--", color="grey", linewidth=1)
            left.annotate(
                f"{label} (batch {server['best_batch_size']})",
                (0.01, server["best_ips"]),
                xycoords=("axes fraction", "data"),
                fontsize=8,
                va="bottom",
            )
    levels = sorted({p["concurrency"] for s in servers.values() for p in s.get("closed", [])})
    for axis, ylabel in ((left, "throughput (images/s)"), (right, "p99 latency (s)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.minorticks_off()
        axis.set_xlabel("concurrency (closed loop)")
        axis.set_ylabel(ylabel)
        axis.grid(True, alpha=0.3)
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    if drew:
        left.legend(fontsize=8)
    figure.suptitle(model)
    figure.tight_layout()
    if drew:
        figure.savefig(path, dpi=110)
    plt.close(figure)
    return drew


RESULTS_DIR = Path(__file__).resolve().parent / "results"


def save_json(data: Any, path: Path) -> Path:
    """``data`` as indented JSON at ``path`` (its folder made as needed); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def write_results(results: dict[str, Any], directory: Path) -> None:
    """results.json, results.md and <model>.png in ``directory`` (rewritten as a run goes)."""
    directory.mkdir(parents=True, exist_ok=True)
    for model, result in results["models"].items():
        name = f"{model}.png"
        result["plot"] = name if plot_model(model, result["servers"], directory / name) else None
    save_json(results, directory / "results.json")
    (directory / "results.md").write_text(markdown(results) + "\n")
