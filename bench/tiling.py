"""Tiled inference (issue 14): throughput against the raw model, peak memory, agreement.

Three figures, each from the real service (``segserve serve`` in its own process, as
bench/servers.py starts it, on a one-model repository of untrained seeded weights):

- **Throughput**: windows per second of one tiled ``/segment`` request (upload, decode, the
  windows through the batcher, stitching, PNG, HTTP) against the raw model running the same
  windows in this process: cropped, normalised with the preset's mean and std
  (``window_preprocess``), batches of the service's ``max_batch_size`` under
  ``torch.inference_mode``, the model built by segserve's own loader (batch norms folded,
  channels_last, the same precision), on one worker thread with the service's malloc options
  and torch threads. Raw and service blocks alternate in this run (raw, service, raw, ...,
  raw), each service block divided by the mean of the raw blocks around it (bench/paired.py),
  so the drift of a shared machine cancels. Target: service >= 0.9 x raw.
- **Memory**: a fresh service per variant (MEMORY_VARIANTS), idle after its warm-up; its
  high-water mark is reset (``5`` to ``/proc/<pid>/clear_refs``) and one 50-megapixel tiled
  request sent; peak = VmHWM - the idle VmRSS. VmRSS is also sampled every 20 ms (the figure
  where the reset is refused). Target: under 1.5 GB with a 21-class model.
- **Agreement**: the service's class map for a smaller image against this module's own loop
  of the rule (docs/api.md, "Tiling"): every window through the unfolded NCHW fp32 network
  one at a time, logits summed in float64, argmax. The network is the same architecture and
  seed with its batch norms calibrated (:func:`calibrate`), served from a checkpoint: untrained
  as built it predicts one class everywhere. Target: >= 99.9% of pixels equal.

    .venv/bin/python -m bench.tiling                       # ~10 min on 2 cores
    .venv/bin/python -m bench.tiling --quick               # tiny images, a smoke run (~30 s)
    .venv/bin/python -m bench.tiling --batch-size 8 --memory-size 0x0   # no autotune, no 50 MP
    .venv/bin/python -m bench.tiling --size 2000x1500 --tile 256 --overlap 32 --repeats 3

Prints the figures and writes ``bench/results/tiling-<model>.json`` (``--out`` to choose).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

from bench.agreement import class_map_agreement
from bench.images import jpeg_bytes, photo_like
from bench.paired import summarise
from bench.report import RESULTS_DIR, save_json
from bench.run import env_pair, server_command
from bench.servers import RunningServer, shipped_batching, task_of, write_model_toml

DEFAULT_MODEL = "deeplabv3_mobilenet_v3_large"
THROUGHPUT_TARGET = 0.9  # tiled windows/s >= 0.9 x raw's
MEMORY_TARGET_BYTES = 1.5e9  # peak RSS above idle for a 50 MP request
AGREEMENT_TARGET = 99.9  # % of class-map pixels equal to the reference loop's
RSS_SAMPLE_S = 0.02


@dataclass(frozen=True)
class Plan:
    """Image sizes (width, height), the tiling, and how many paired rounds."""

    size: tuple[int, int]  # the throughput request
    memory_size: tuple[int, int]  # the peak-memory request (0x0: skipped)
    agreement_size: tuple[int, int]
    tile: int
    overlap: int
    repeats: int


STANDARD = Plan((4000, 3000), (8660, 5773), (1200, 900), 512, 64, 4)
QUICK = Plan((160, 120), (320, 240), (150, 100), 64, 16, 1)


# ---------------------------------------------------------------------------- the rule


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Window starts along one axis, written from docs/api.md's words (not app.tiling's code):
    every ``tile - overlap`` pixels while the window ends before the edge, then one window
    ending at the edge; an axis no longer than the tile is one window."""
    if length <= tile:
        return [0]
    starts: list[int] = []
    start = 0
    while start + tile < length:
        starts.append(start)
        start += tile - overlap
    starts.append(length - tile)
    return starts


def windows_of(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(y, x) of every window, row-major."""
    xs = axis_starts(width, tile, overlap)
    return [(y, x) for y in axis_starts(height, tile, overlap) for x in xs]


def reference_class_map(
    model: torch.nn.Module,
    mean: Sequence[float],
    std: Sequence[float],
    image: np.ndarray,
    tile: int,
    overlap: int,
) -> np.ndarray:
    """The rule, one window at a time: argmax over classes of the summed window logits."""
    height, width = image.shape[:2]
    h, w = min(tile, height), min(tile, width)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    sums: np.ndarray | None = None
    with torch.inference_mode():
        for y, x in windows_of(height, width, tile, overlap):
            crop = torch.from_numpy(np.array(image[y : y + h, x : x + w]))  # a writable copy
            pixels = crop.permute(2, 0, 1).float() / 255.0
            logits = model(((pixels - mean_t) / std_t).unsqueeze(0))["out"][0]
            if sums is None:
                sums = np.zeros((logits.shape[0], height, width), dtype=np.float64)
            sums[:, y : y + h, x : x + w] += logits.double().numpy()
    assert sums is not None
    return sums.argmax(axis=0).astype(np.uint8)


# --------------------------------------------------------------------------- the raw side


class RawWindows:
    """The windows of one image through the model as the service builds it, in batches."""

    def __init__(self, predictor: Any, image: np.ndarray, tile: int, overlap: int) -> None:
        self.predictor = predictor
        height, width = image.shape[:2]
        h, w = min(tile, height), min(tile, width)
        self.crops = [
            image[y : y + h, x : x + w] for y, x in windows_of(height, width, tile, overlap)
        ]
        # One thread for every forward, as the service's batcher has one inference thread.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw")

    def _batch(self, crops: Sequence[np.ndarray]) -> None:
        p = self.predictor
        with torch.inference_mode():
            batch = torch.stack(
                [
                    p.window_preprocess(torch.from_numpy(c).to(p.device).permute(2, 0, 1))
                    for c in crops
                ]
            ).to(p.compute_dtype)
            if p.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with p.forward_context():
                logits = p.model(batch)["out"].float()
            logits.cpu()  # on CUDA: the results reach the host, as the service's do

    def run(self, batch_size: int) -> float:
        """Seconds for every window in batches of ``batch_size`` (on the worker thread)."""

        def work() -> float:
            started = time.perf_counter()
            for i in range(0, len(self.crops), batch_size):
                self._batch(self.crops[i : i + batch_size])
            return time.perf_counter() - started

        return self.executor.submit(work).result()

    def close(self) -> None:
        self.executor.shutdown()


def build_raw_predictor(toml: Path, args: argparse.Namespace) -> Any:
    from app.config import Settings
    from app.predictors import load_predictor
    from app.predictors.repository import load_spec

    settings = Settings(
        _env_file=None,
        device=args.device,
        precision=args.precision,
        seed=args.seed,
        weights_dir=toml.parent,
        allow_download=False,
    )
    return load_predictor(load_spec(toml), settings)


# ----------------------------------------------------------------------------- the service


def service_env(args: argparse.Namespace, jpeg_size: int, pixels: int) -> list[tuple[str, str]]:
    """Settings a tiled benchmark needs on top of bench.run's service command."""
    return [
        ("SEGSERVE_MAX_TILED_PIXELS", str(max(100_000_000, pixels))),
        ("SEGSERVE_MAX_BODY_BYTES", str(max(32 * 1024 * 1024, 2 * jpeg_size))),
        ("SEGSERVE_REQUEST_TIMEOUT_S", "3600"),
        # --quick: no batch-size autotune at startup (15 s of a 20 s start on 2 cores);
        # --batch-size: that size, not autotune's pick.
        *([("SEGSERVE_BATCH_AUTOTUNE", "false")] if args.quick or args.batch_size else []),
        *args.env,
    ]


@contextlib.contextmanager
def service(
    toml: Path, args: argparse.Namespace, env: list[tuple[str, str]], log: Path, scratch: Path
) -> Iterator[tuple[RunningServer, httpx.Client]]:
    options = SimpleNamespace(
        seed=args.seed, device=args.device, torch_threads=args.torch_threads, env=env
    )
    command = server_command("service", toml, args.precision, options, 1)  # type: ignore[arg-type]
    print(f"  starting the service: {shlex.join(command.argv)}", flush=True)
    timeout = httpx.Timeout(3600, connect=30)
    with (
        RunningServer(command, workdir=scratch, log_path=log, start_timeout_s=600) as server,
        httpx.Client(base_url=command.base_url, timeout=timeout) as client,
    ):
        yield server, client


def server_timing(header: str) -> dict[str, float]:
    """``Server-Timing`` as {name: seconds}, with ``windows`` (a count) as a number."""
    out: dict[str, float] = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if dur := re.search(r"dur=([0-9.]+)", rest):
            out[name] = float(dur.group(1)) / 1000
        elif desc := re.search(r'desc="?([0-9.]+)"?', rest):
            out[name] = float(desc.group(1))
    return out


def batch_size_totals(client: httpx.Client) -> tuple[float, float]:
    """(batches, items) the service's batchers ran so far, from /metrics."""
    text = client.get("/metrics").text
    count = sum(
        float(v) for v in re.findall(r"^segserve_batch_size_count\{[^}]*\} (\S+)", text, re.M)
    )
    items = sum(
        float(v) for v in re.findall(r"^segserve_batch_size_sum\{[^}]*\} (\S+)", text, re.M)
    )
    return count, items


def tiled_request(
    client: httpx.Client, body: bytes, content_type: str, tile: int, overlap: int
) -> tuple[float, httpx.Response]:
    """One tiled /segment (PNG class map); its wall time and response (checked)."""
    started = time.perf_counter()
    response = client.post(
        "/segment",
        params={"tile": tile, "overlap": overlap, "format": "png"},
        files={"image": ("image", body, content_type)},
    )
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"tiled request: {response.status_code} {response.text[:500]}")
    return seconds, response


def model_entry(client: httpx.Client, model: str) -> dict[str, Any]:
    body = client.get("/models").json()
    entries = body.get("models", body) if isinstance(body, dict) else body
    entry = next(e for e in entries if e.get("name") == model)
    return {k: v for k, v in entry.items() if k != "categories"} | {
        "classes": len(entry.get("categories", []))
    }


# ------------------------------------------------------------------------------- memory


def proc_status_kb(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    if match is None:
        raise RuntimeError(f"no {field} in /proc/{pid}/status")
    return int(match.group(1))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (/proc/<pid>/stat)."""
    # Fields after "pid (comm)": state is the 3rd field of the line, utime the 14th, stime 15th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_high_water_mark(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``5`` to clear_refs); False where it is refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    # Kernels without the reset accept the write and do nothing: check it took.
    return proc_status_kb(pid, "VmHWM") <= proc_status_kb(pid, "VmRSS") + 1024


class RssSampler:
    """VmRSS of a process every ``every_s`` seconds on a thread; the largest seen."""

    def __init__(self, pid: int, every_s: float = RSS_SAMPLE_S) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid, "VmRSS"))
                self.samples += 1
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_jpeg_file(size: tuple[int, int], seed: int, path: Path) -> bytes:
    """A photo-like JPEG, made in a child process: a 50 MP one takes ~4 GB of float arrays
    there, which this process (with the malloc options that keep freed memory) would keep."""
    width, height = size
    code = (
        "import sys; from pathlib import Path; from bench.images import jpeg_bytes, photo_like; "
        f"Path(sys.argv[1]).write_bytes(jpeg_bytes(photo_like({width}, {height}, {seed})))"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return path.read_bytes()


# --------------------------------------------------------------------------------- parts


def decoded(body: bytes) -> np.ndarray:
    """The pixels the service decodes (Pillow, RGB)."""
    with Image.open(io.BytesIO(body)) as image:
        return np.array(image.convert("RGB"))  # writable: torch.from_numpy warns otherwise


def measure_throughput(
    client: httpx.Client,
    service_pid: int,
    raw: RawWindows,
    batch_size: int,
    body: bytes,
    tile: int,
    overlap: int,
    repeats: int,
) -> dict[str, Any]:
    """Paired rounds: raw, service, raw, ..., service, raw (one whole image per block).

    Besides windows per second of wall time, windows per CPU second: the CPU time the service
    process spent on the request (every thread: HTTP, decoding, the forwards, stitching,
    encoding) against this process's during a raw block. CPU time does not count the time
    the machine gave to others, which moves wall-time figures from round to round on a
    shared machine."""
    windows = len(raw.crops)
    # Warm-up: kernels pick their algorithms per shape (the last batch may be smaller).
    raw.run(batch_size)
    seconds, response = tiled_request(client, body, "image/jpeg", tile, overlap)
    timing = server_timing(response.headers.get("server-timing", ""))
    if int(timing.get("windows", windows)) != windows:
        raise RuntimeError(f"the service made {timing['windows']} windows, this bench {windows}")
    print(f"  warm-up: service {windows / seconds:.2f} windows/s", flush=True)

    def raw_block() -> tuple[float, float]:
        """(windows per second, windows per CPU second) of one raw block."""
        cpu = time.process_time()
        seconds = raw.run(batch_size)
        return windows / seconds, windows / (time.process_time() - cpu)

    before, before_cpu = raw_block()
    rounds: list[dict[str, Any]] = []
    cpu_rounds: list[dict[str, Any]] = []
    for index in range(repeats):
        batches_before = batch_size_totals(client)
        cpu = process_cpu_s(service_pid)
        seconds, response = tiled_request(client, body, "image/jpeg", tile, overlap)
        service_cpu_s = process_cpu_s(service_pid) - cpu
        batches_after = batch_size_totals(client)
        after, after_cpu = raw_block()
        batches = batches_after[0] - batches_before[0]
        items = batches_after[1] - batches_before[1]
        service_wps, service_wpc = windows / seconds, windows / service_cpu_s
        rounds.append(
            {
                "raw_before": {"raw": before},
                "server_ips": service_wps,
                "raw_after": {"raw": after},
                "request_s": seconds,
                "service_cpu_s": service_cpu_s,
                "server_timing_s": server_timing(response.headers.get("server-timing", "")),
                "batches": batches,
                "mean_batch_size": items / batches if batches else None,
            }
        )
        cpu_rounds.append(
            {
                "raw_before": {"raw": before_cpu},
                "server_ips": service_wpc,
                "raw_after": {"raw": after_cpu},
            }
        )
        print(
            f"  round {index + 1}: raw {before:.2f}, service {service_wps:.2f}, raw {after:.2f} "
            f"windows/s ({batches:.0f} batches, {seconds:.1f} s); per CPU second: raw "
            f"{before_cpu:.2f}, service {service_wpc:.2f}, raw {after_cpu:.2f}",
            flush=True,
        )
        before, before_cpu = after, after_cpu
    raws = [rounds[0]["raw_before"]["raw"], *(r["raw_after"]["raw"] for r in rounds)]
    services = [r["server_ips"] for r in rounds]
    ratio = summarise(rounds).get("raw")
    cpu_ratio = summarise(cpu_rounds).get("raw")
    stages: dict[str, float] = {}
    for r in rounds:
        for name, value in r["server_timing_s"].items():
            if name != "windows":
                stages[name] = stages.get(name, 0.0) + value / len(rounds)
    return {
        "windows": windows,
        "batch_size": batch_size,
        "repeats": repeats,
        "rounds": rounds,
        "raw_windows_per_s_median": statistics.median(raws),
        "service_windows_per_s_median": statistics.median(services),
        "ratio": ratio,
        "ratio_how": "geometric mean over rounds of service / mean(raw before, raw after)",
        "cpu_rounds": cpu_rounds,
        "cpu_ratio": cpu_ratio,
        "cpu_ratio_how": "the same, of windows per CPU second (the service process's CPU "
        "time for the request; this process's for a raw block)",
        "target": THROUGHPUT_TARGET,
        "met": None if ratio is None else ratio >= THROUGHPUT_TARGET,
        "server_timing_mean_s": stages,
    }


def calibrate(model: torch.nn.Module, architecture: str, seed: int) -> None:
    """Give an untrained network the activation statistics of a trained one, as
    tests/integration/reference.py does: batch norms take two photo-like images' statistics
    and the head's bias is centred on their mean logits. Untrained as built, the network
    predicts one class everywhere, and a one-class map agrees with anything."""
    from torchvision.models import get_model_weights

    preset = get_model_weights(architecture).DEFAULT.transforms()
    mean = torch.tensor(preset.mean).view(3, 1, 1)
    std = torch.tensor(preset.std).view(3, 1, 1)
    pixels = [np.array(photo_like(347, 260, seed=seed + 100 + i)) for i in range(2)]
    inputs = torch.stack(
        [(torch.from_numpy(p).permute(2, 0, 1).float() / 255 - mean) / std for p in pixels]
    )
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # running statistics = this batch's
        norm.train()
    with torch.no_grad():
        model(inputs)
    for norm in norms:
        norm.momentum = 0.1
        norm.eval()
    head = getattr(model, "classifier", None)
    if isinstance(head, torch.nn.Sequential) and isinstance(head[-1], torch.nn.Conv2d):
        with torch.no_grad():
            head[-1].bias -= model(inputs)["out"].mean(dim=(0, 2, 3))


def calibrated_model(
    toml: Path, args: argparse.Namespace, directory: Path
) -> tuple[torch.nn.Module, Path]:
    """The untrained model of ``toml``, calibrated, and a one-model repository serving it (a
    checkpoint with the same categories)."""
    import json

    from app.predictors.loading import build_model
    from app.predictors.repository import load_spec
    from app.predictors.weights import resolve_weights

    spec = load_spec(toml)
    weights = resolve_weights(spec, toml.parent, allow_download=False)
    model = build_model(spec, weights, seed=args.seed)
    calibrate(model, spec.architecture, args.seed)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "calibrated.pt")
    lines = [
        'task = "semantic"',
        f'architecture = "{spec.architecture}"',
        'checkpoint = "calibrated.pt"',
        f"categories = {json.dumps(weights.categories)}",
        "default = true",
    ]
    served = directory / f"{spec.name}.toml"
    served.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return model, served


def measure_agreement(
    toml: Path, args: argparse.Namespace, size: tuple[int, int], logs: Path, scratch: Path
) -> dict[str, Any]:
    """The service's class map against the reference loop, on a calibrated network."""
    from torchvision.models import get_model_weights

    width, height = size
    model, served = calibrated_model(toml, args, scratch / "agreement")
    image = np.array(photo_like(width, height, seed=args.image_seed + 1))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")  # lossless: every decoder agrees
    env = [*service_env(args, len(buffer.getvalue()), width * height)]
    env.insert(0, ("SEGSERVE_BATCH_AUTOTUNE", "false"))  # speed does not matter here
    with service(served, args, env, logs / "agreement.log", scratch) as (_, client):
        _, response = tiled_request(client, buffer.getvalue(), "image/png", args.tile, args.overlap)
    preset = get_model_weights(args.model).DEFAULT.transforms()
    reference = reference_class_map(model, preset.mean, preset.std, image, args.tile, args.overlap)
    found = class_map_agreement(response.content, reference)
    percent = 100 * found["pixels_equal"]
    return {
        "size": f"{width}x{height}",
        "windows": len(windows_of(height, width, args.tile, args.overlap)),
        "model": "the same architecture and seed, batch norms calibrated (bench.tiling.calibrate)",
        "reference": "own loop: unfolded NCHW fp32 network, one window at a time, float64 sums",
        "service_precision": args.precision,
        "pixels_equal_pct": percent,
        "reference_classes": found.get("reference_classes"),
        "summary": found["summary"],
        "target_pct": AGREEMENT_TARGET,
        "met": percent >= AGREEMENT_TARGET,
    }


# The service as shipped keeps freed memory for the next request (SEGSERVE_KEEP_FREED_MEMORY):
# its idle heap then holds what its warm-up freed, which a request reuses before the process
# grows. With glibc's defaults freed memory goes back, so the peak above idle is closer to the
# request's own footprint. Both are measured, each in a fresh service.
MEMORY_VARIANTS: dict[str, list[tuple[str, str]]] = {
    "shipped": [],  # the service's defaults
    "glibc": [("SEGSERVE_KEEP_FREED_MEMORY", "false")],  # glibc's malloc as it comes
}


def measure_memory_once(
    toml: Path,
    args: argparse.Namespace,
    env: list[tuple[str, str]],
    body: bytes,
    log: Path,
    scratch: Path,
) -> dict[str, Any]:
    """Peak RSS of a fresh, idle service for one tiled request of ``body``."""
    with service(toml, args, env, log, scratch) as (server, client):
        assert server.process is not None
        pid = server.process.pid
        time.sleep(1.0)  # let the startup's last allocations settle
        idle_kb = proc_status_kb(pid, "VmRSS")
        reset = reset_high_water_mark(pid)
        with RssSampler(pid) as sampler:
            seconds, response = tiled_request(client, body, "image/jpeg", args.tile, args.overlap)
        hwm_kb = proc_status_kb(pid, "VmHWM")
        after_kb = proc_status_kb(pid, "VmRSS")
        classes = model_entry(client, toml.stem)["classes"]
    peak_kb = hwm_kb if reset else sampler.peak_kb
    above = (peak_kb - idle_kb) * 1024
    timing = server_timing(response.headers.get("server-timing", ""))
    print(
        f"  peak {above / 1e6:.0f} MB above the idle {idle_kb * 1024 / 1e6:.0f} MB "
        f"({seconds:.1f} s, {int(timing.get('windows', 0))} windows)",
        flush=True,
    )
    return {
        "windows": int(timing.get("windows", 0)),
        "classes": classes,
        "request_s": seconds,
        "server_timing_s": timing,
        "method": "VmHWM after clear_refs=5" if reset else f"VmRSS sampled every {RSS_SAMPLE_S} s",
        "idle_rss_bytes": idle_kb * 1024,
        "peak_rss_bytes": peak_kb * 1024,
        "sampled_peak_rss_bytes": sampler.peak_kb * 1024,
        "rss_samples": sampler.samples,
        "rss_after_bytes": after_kb * 1024,
        "peak_above_idle_bytes": above,
        "met": above < MEMORY_TARGET_BYTES,
    }


def measure_memory(
    toml: Path,
    args: argparse.Namespace,
    body: bytes,
    size: tuple[int, int],
    logs: Path,
    scratch: Path,
) -> dict[str, Any]:
    """Each of ``args.memory_variants``; the figures at the top are the first one's."""
    width, height = size
    variants: dict[str, Any] = {}
    for name in args.memory_variants:
        print(f"  memory, service {name}:", flush=True)
        env = [*service_env(args, len(body), width * height), *MEMORY_VARIANTS[name]]
        log = logs / f"memory-{name}.log"
        variants[name] = measure_memory_once(toml, args, env, body, log, scratch)
    first = variants[args.memory_variants[0]]
    return {
        "size": f"{width}x{height}",
        "megapixels": width * height / 1e6,
        "jpeg_bytes": len(body),
        "variant": args.memory_variants[0],
        **first,
        "target_bytes": MEMORY_TARGET_BYTES,
        "met": all(v["met"] for v in variants.values()),
        "variants": variants,
    }


# -------------------------------------------------------------------------------- machine


def cpu_info() -> dict[str, Any]:
    """The CPU model and its flags (lscpu), with the ones that matter for torch picked out."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in text.splitlines())
    )
    flags = fields.get("Flags", "").split()
    if not flags:  # no lscpu: the kernel's list
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    wanted = (
        "avx2",
        "avx512f",
        "avx512_bf16",
        "avx512_fp16",
        "avx512_vnni",
        "amx_bf16",
        "amx_tile",
        "amx_int8",
    )
    return {
        "model": fields.get("Model name", ""),
        "cpus": fields.get("CPU(s)", ""),
        "relevant_flags": [f for f in wanted if f in flags],
        "flags": " ".join(flags),
    }


def machine() -> dict[str, Any]:
    from bench.run import machine as run_machine

    return {**run_machine(), "lscpu": cpu_info()}


# ----------------------------------------------------------------------------------- main


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"want WIDTHxHEIGHT like 4000x3000; got {text!r}"
        ) from None
    if width < 0 or height < 0:
        raise argparse.ArgumentTypeError(f"image sides must not be negative; got {text!r}")
    return width, height


def _variants(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if not names or any(n not in MEMORY_VARIANTS for n in names):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(MEMORY_VARIANTS)}; got {text!r}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tiling",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a semantic architecture")
    parser.add_argument("--tile", type=int, help=f"window side (default {STANDARD.tile})")
    parser.add_argument("--overlap", type=int, help=f"default {STANDARD.overlap}")
    parser.add_argument("--size", type=_size, help="throughput image, WIDTHxHEIGHT (4000x3000)")
    parser.add_argument(
        "--memory-size", type=_size, help="peak-memory image (8660x5773); 0x0: skip"
    )
    parser.add_argument(
        "--memory-variants",
        type=_variants,
        help="comma-separated: shipped (the service's defaults), glibc "
        "(SEGSERVE_KEEP_FREED_MEMORY=false); default both, --quick: shipped",
    )
    parser.add_argument("--agreement-size", type=_size, help="agreement image (1200x900)")
    parser.add_argument("--repeats", type=int, help="paired rounds (service requests), default 4")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="the model's max_batch_size, autotune off (default 0: as shipped, autotuned at "
        "startup; raw runs whatever size the service reports)",
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N], both sides")
    parser.add_argument("--seed", type=int, default=0, help="SEGSERVE_SEED for the weights")
    parser.add_argument("--image-seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=0, help="0: as the service picks")
    parser.add_argument(
        "--env",
        type=env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the service",
    )
    parser.add_argument(
        "--out", type=Path, help="result JSON (default bench/results/tiling-<model>.json)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny images, one round: a smoke run")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else STANDARD
    for name in ("size", "memory_size", "agreement_size", "tile", "overlap", "repeats"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(base, name))
    if args.memory_variants is None:
        args.memory_variants = ("shipped",) if args.quick else tuple(MEMORY_VARIANTS)
    if task_of(args.model) != "semantic":
        parser.error(f"--model: {args.model} is not a semantic model (tiled logits are semantic)")
    if not 0 <= args.overlap < args.tile:
        parser.error(f"need 0 <= overlap < tile; got {args.overlap}, {args.tile}")
    if args.repeats < 1:
        parser.error("--repeats: at least 1")
    return args


def setup_process(args: argparse.Namespace) -> dict[str, Any]:
    """The service's process conditions here: its malloc options and torch threads."""
    from app.memory import keep_freed_memory
    from app.threads import configure_torch_threads

    kept = keep_freed_memory()
    return {
        "keeps_freed_memory": kept,
        "torch_threads": configure_torch_threads(args.torch_threads),
    }


def report_lines(result: dict[str, Any]) -> list[str]:
    t, a, m = result["throughput"], result["agreement"], result.get("memory")

    def met(value: bool | None) -> str:
        return {True: "met", False: "NOT met", None: "-"}[value]

    ratio = t["ratio"]
    lines = [
        f"{result['model']}, tile {result['tile']} overlap {result['overlap']}, "
        f"{result['precision']}:",
        f"  throughput {t['size']} ({t['windows']} windows, batch {t['batch_size']}, "
        f"{t['repeats']} paired rounds): service {t['service_windows_per_s_median']:.2f} "
        f"windows/s, raw {t['raw_windows_per_s_median']:.2f} windows/s (medians); "
        f"service / raw {ratio:.3f} (target >= {THROUGHPUT_TARGET}: {met(t['met'])}); "
        f"per CPU second, service / raw {t['cpu_ratio']:.3f}",
        "  service's Server-Timing, mean s a request: "
        + ", ".join(f"{k} {v:.2f}" for k, v in t["server_timing_mean_s"].items()),
        f"  agreement {a['size']} ({a['windows']} windows): {a['pixels_equal_pct']:.4f}% of "
        f"pixels equal to the reference loop ({a['reference_classes']} classes in it) "
        f"(target >= {AGREEMENT_TARGET}%: {met(a['met'])})",
    ]
    if m:
        lines.append(
            f"  memory {m['size']} ({m['megapixels']:.1f} MP, {m['windows']} windows, "
            f"{m['classes']} classes): peak RSS {m['peak_above_idle_bytes'] / 1e6:.0f} MB above "
            f"the idle {m['idle_rss_bytes'] / 1e6:.0f} MB ({m['method']}; sampled peak "
            f"{(m['sampled_peak_rss_bytes'] - m['idle_rss_bytes']) / 1e6:.0f} MB) "
            f"(target < {MEMORY_TARGET_BYTES / 1e9:g} GB: {met(m['met'])})"
        )
    return lines


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS_DIR / f"tiling-{args.model}{'-quick' if args.quick else ''}.json"
    result: dict[str, Any] = {
        "meta": {
            "command": shlex.join(["python", "-m", "bench.tiling", *argv]),
            "started": stamp,
            "machine": machine(),
        },
        "model": args.model,
        "tile": args.tile,
        "overlap": args.overlap,
        "precision": args.precision,
        "device": args.device,
    }
    with tempfile.TemporaryDirectory(prefix="segserve-tiling-") as tmp:
        scratch = Path(tmp)
        # Images first, before this process takes the service's malloc options.
        memory_body = None
        if min(args.memory_size) > 0:
            print(f"making the {args.memory_size[0]}x{args.memory_size[1]} JPEG", flush=True)
            memory_body = make_jpeg_file(args.memory_size, args.image_seed, scratch / "big.jpg")
        width, height = args.size
        body = jpeg_bytes(photo_like(width, height, args.image_seed))
        image = decoded(body)
        result["meta"]["process"] = setup_process(args)
        batching = None  # the shipped model file's [batching], autotuned at startup
        if args.batch_size:
            batching = {**shipped_batching(args.model), "max_batch_size": args.batch_size}
        toml = write_model_toml(scratch / "models", args.model, batching)
        predictor = build_raw_predictor(toml, args)
        raw = RawWindows(predictor, image, args.tile, args.overlap)
        logs = out.parent / f"{out.stem}-logs"  # each service's log
        env = service_env(args, len(body), width * height)
        try:
            print(
                f"== throughput and agreement, {width}x{height} JPEG of {len(body)} bytes",
                flush=True,
            )
            with service(toml, args, env, logs / "service.log", scratch) as (server, client):
                assert server.process is not None
                entry = model_entry(client, args.model)
                result["service_models_entry"] = entry
                batch_size = int(entry["batching"]["max_batch_size"])
                result["throughput"] = {
                    "size": f"{width}x{height}",
                    "jpeg_bytes": len(body),
                    **measure_throughput(
                        client,
                        server.process.pid,
                        raw,
                        batch_size,
                        body,
                        args.tile,
                        args.overlap,
                        args.repeats,
                    ),
                }
        finally:
            raw.close()
        del raw, predictor
        save_json(result, out)
        print(f"== agreement, {args.agreement_size[0]}x{args.agreement_size[1]} PNG", flush=True)
        result["agreement"] = measure_agreement(toml, args, args.agreement_size, logs, scratch)
        save_json(result, out)
        if memory_body is not None:
            print(f"== memory, {args.memory_size[0]}x{args.memory_size[1]}", flush=True)
            result["memory"] = measure_memory(
                toml, args, memory_body, args.memory_size, logs, scratch
            )
    lines = report_lines(result)
    result["summary"] = lines
    print("\n".join(lines))
    print(f"wrote {save_json(result, out)}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run(parse_args(argv), argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
