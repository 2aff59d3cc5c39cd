"""``segserve predict``: segment images and folders, one result file per image.

With ``--url`` the images go to that service through the Python client
(clients/python, ``segserve_client``); without it, the models of this repository are started
in this process (``SEGSERVE_*`` settings, as ``segserve serve`` reads them) and the same
client calls the same app over an in-process ASGI transport, so every image takes the
service's own path: decode, queue, batch, infer, encode. Results go to ``--out`` as
``<stem>.png`` (png), ``<stem>.json`` (json) or ``<stem>.overlay.png`` (overlay), with a
``summary.json``; exit status 1 when any image failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

from app.config import Settings
from app.errors import ConfigError

if TYPE_CHECKING:  # imported where used: `segserve --help` works without the client
    from segserve_client import AsyncClient, Prediction, Result

T = TypeVar("T")

DEFAULT_OUT = "predictions"
DEFAULT_FORMAT = {"semantic": "png", "instance": "json"}  # the endpoints' own defaults
SUFFIX = {"png": ".png", "json": ".json", "overlay": ".overlay.png"}
IN_PROCESS_URL = "http://segserve.in-process"


class StartupFailed(Exception):
    """The models of the repository did not start in this process."""


def require_client() -> None:
    """ConfigError unless the Python client (clients/python) is importable."""
    try:
        import segserve_client  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "segserve_client":
            raise
        raise ConfigError(
            "segserve predict needs the Python client: pip install ./clients/python "
            "(make install does it)"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``segserve predict``."""
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="images, folders")
    parser.add_argument(
        "--url", help="a running service (default: start the models here, from SEGSERVE_*)"
    )
    parser.add_argument("--task", choices=("semantic", "instance"), default="semantic")
    parser.add_argument(
        "--format",
        choices=("png", "json", "overlay"),
        help="result format (default: png for semantic, json for instance)",
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--model", help="a served model (default: the task's default)")
    parser.add_argument("--tile", type=int, help="tile side in pixels (0: no tiling)")
    parser.add_argument("--overlap", type=int, help="pixels neighbouring tiles share")
    parser.add_argument(
        "--mask-encoding",
        choices=("polygons", "rle", "both"),
        help="instance json: how masks are sent (default: the service's, polygons)",
    )
    parser.add_argument(
        "--api-key", help="the service's API key (default: SEGSERVE_API_KEY, if set)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per request (default: 8)")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight (default: 4)"
    )
    parser.add_argument("--recursive", action="store_true", help="also the images in subfolders")


# ---------------------------------------------------------------------------- progress


@dataclass
class Progress:
    """A bar redrawn in place on a terminal; one line per image otherwise."""

    total: int
    stream: IO[str]
    done: int = 0
    failed: int = 0
    tty: bool = field(init=False)

    def __post_init__(self) -> None:
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, source: str, error: str | None, output: str | None) -> None:
        self.done += 1
        self.failed += error is not None
        if self.tty:
            width = 30
            filled = width * self.done // max(self.total, 1)
            failed = f", {self.failed} failed" if self.failed else ""
            name = source if len(source) <= 40 else "..." + source[-37:]
            line = (
                f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}{failed} {name}"
            )
            self.stream.write(f"\r\033[K{line}")
            if self.done == self.total:
                self.stream.write("\n")
        else:
            status = f"error {error}" if error is not None else f"ok -> {output}"
            self.stream.write(f"[{self.done}/{self.total}] {source}: {status}\n")
        self.stream.flush()


# ----------------------------------------------------------------------------- outputs


def output_names(sources: Sequence[str], fmt: str) -> list[str]:
    """``<stem><suffix>`` per image; a stem seen before gets ``-2``, ``-3``, ..."""
    names, taken = [], set()
    for source in sources:
        stem = Path(source).stem or "image"
        name, n = f"{stem}{SUFFIX[fmt]}", 1
        while name in taken or name == "summary.json":
            n += 1
            name = f"{stem}-{n}{SUFFIX[fmt]}"
        taken.add(name)
        names.append(name)
    return names


def _result_bytes(result: Result | None, fmt: str) -> bytes:
    """The body as the service sent it: the PNG, or the JSON object."""
    body = None
    if result is not None:
        body = (
            json.dumps(result.raw, separators=(",", ":")).encode() if fmt == "json" else result.png
        )
    if body is None:
        raise ValueError(f"no {fmt} body in the result")
    return body


@dataclass
class Options:
    """What to ask the service for, and where to write it."""

    task: Literal["semantic", "instance"]
    fmt: str
    out: Path
    params: dict[str, Any]
    batch_size: int = 8
    concurrency: int = 4
    recursive: bool = False


async def _run(
    client: AsyncClient, inputs: Sequence[str], options: Options, stdout: IO[str]
) -> list[Prediction]:
    from segserve_client import SegserveError, expand_inputs

    images = expand_inputs(list(inputs), recursive=options.recursive)
    if not images:
        raise ConfigError(f"no images in {', '.join(inputs)} (.jpg, .jpeg, .png, .webp, .bmp)")
    names = output_names([str(i) for i in images], options.fmt)
    options.out.mkdir(parents=True, exist_ok=True)
    progress = Progress(len(images), stdout)

    def write(prediction: Prediction) -> None:
        error, output = None, None
        if prediction.ok:
            output = str(options.out / names[prediction.index])
            try:
                Path(output).write_bytes(_result_bytes(prediction.result, options.fmt))
            except OSError as exc:
                prediction.error = SegserveError(f"cannot write it: {exc}", code="write_error")
                output = None
        if prediction.error is not None:
            error = str(prediction.error)
        progress.update(prediction.source, error, output)

    params = dict(options.params)
    if options.task == "instance":  # None: the service's default (polygons), not the client's
        params.setdefault("mask_encoding", None)
    predictions = await client.predict_many(
        images,
        task=options.task,
        concurrency=options.concurrency,
        batch_size=options.batch_size,
        on_result=write,
        format=options.fmt,
        **params,
    )
    _write_summary(predictions, names, options)
    return predictions


def _write_summary(
    predictions: Sequence[Prediction], names: Sequence[str], options: Options
) -> None:
    from segserve_client import SegserveError

    entries = []
    for prediction, name in zip(predictions, names, strict=True):
        entry: dict[str, Any] = {"file": prediction.source}
        if prediction.error is None and prediction.result is not None:
            entry |= {"status": "ok", "output": name, "message": None}
            entry["timing"] = prediction.result.timing
        else:
            error = prediction.error or SegserveError("no result")
            entry |= {"status": "error", "output": None, "message": str(error)}
            entry |= {"code": error.code, "http_status": error.status, "timing": None}
        entries.append(entry)
    failed = sum(1 for p in predictions if not p.ok)
    summary = {
        "task": options.task,
        "format": options.fmt,
        "params": options.params,
        "images": entries,
        "ok": len(entries) - failed,
        "failed": failed,
    }
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


# ------------------------------------------------------------------------------ running

Loader = Callable[[Settings], Any]


async def _in_process(
    settings: Settings, loader: Loader | None, work: Callable[[AsyncClient], Awaitable[T]]
) -> T:
    """Start the app of this repository in this process (the same lifespan as ``segserve
    serve``: load, warm up, start the batchers) and call it through the client."""
    import httpx
    from segserve_client import AsyncClient

    from app.main import create_app, wait_until_started

    app = create_app(settings) if loader is None else create_app(settings, loader=loader)
    logging.getLogger("segserve.access").setLevel(logging.WARNING)  # not a line per request
    async with app.router.lifespan_context(app):
        try:
            await wait_until_started(app)
        except ConfigError:
            raise
        except Exception as exc:
            raise StartupFailed(str(exc)) from exc
        key = settings.api_key.get_secret_value() if settings.api_key else None
        transport = httpx.ASGITransport(app=app)
        async with AsyncClient(IN_PROCESS_URL, key, transport=transport) as client:
            return await work(client)


async def _remote(url: str, api_key: str | None, work: Callable[[AsyncClient], Awaitable[T]]) -> T:
    from segserve_client import AsyncClient

    async with AsyncClient(url, api_key) as client:
        return await work(client)


def predict(
    inputs: Sequence[str],
    options: Options,
    *,
    settings: Settings,
    url: str | None = None,
    api_key: str | None = None,
    loader: Loader | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Predict every image of ``inputs``, write the results and ``summary.json`` to
    ``options.out``; 0 when every image succeeded, 1 when any failed (each named on
    ``stderr``), 3 when the models failed to start in process. Without ``url``, ``loader``
    replaces how the app loads its models (tests)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request

    async def work(client: AsyncClient) -> list[Prediction]:
        return await _run(client, inputs, options, out)

    if url is not None:
        key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
        predictions = asyncio.run(_remote(url, key, work))
    else:
        try:
            predictions = asyncio.run(_in_process(settings, loader, work))
        except StartupFailed as exc:
            print(f"segserve: error: startup failed: {exc}", file=err)
            return 3
    failures = [p for p in predictions if not p.ok]
    for prediction in failures:
        print(f"segserve: error: {prediction.source}: {prediction.error}", file=err)
    print(
        f"{len(predictions)} images: {len(predictions) - len(failures)} ok, "
        f"{len(failures)} failed; results and summary.json in {options.out}",
        file=out,
    )
    return 1 if failures else 0


def predict_command(settings: Settings, args: argparse.Namespace) -> int:
    """``segserve predict`` with its parsed arguments."""
    if args.batch_size < 1 or args.concurrency < 1:
        raise ConfigError("--batch-size and --concurrency must be at least 1")
    if args.task != "instance" and args.mask_encoding is not None:
        raise ConfigError("--mask-encoding is for --task instance")
    given = {
        "model": args.model,
        "tile": args.tile,
        "overlap": args.overlap,
        "mask_encoding": args.mask_encoding,
    }
    params = {key: value for key, value in given.items() if value is not None}
    options = Options(
        task=args.task,
        fmt=args.format or DEFAULT_FORMAT[args.task],
        out=Path(args.out),
        params=params,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        recursive=args.recursive,
    )
    return predict(args.inputs, options, settings=settings, url=args.url, api_key=args.api_key)
