"""``segserve serve | weights fetch | models | settings`` (also ``python -m app``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from torchvision.models import WeightsEnum

from app.config import Settings
from app.errors import ConfigError
from app.evaluate import add_arguments as add_evaluate_arguments
from app.memory import keep_freed_memory
from app.predict import add_arguments as add_predict_arguments
from app.predictors.loading import check_options, resolve_device
from app.predictors.repository import ModelSpec, load_repository
from app.predictors.weights import (
    CheckpointFile,
    TorchvisionWeights,
    fetch_torchvision_weights,
    locate_torchvision_weights,
    model_file,
    weights_file_name,
    weights_source,
)
from app.state import AppState, app_state
from app.training.command import add_arguments as add_finetune_arguments
from app.training.command import finetune_command

log = logging.getLogger(__name__)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535; got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service (settings from SEGSERVE_* variables)")
    serve.add_argument("--host", help="bind address (default: SEGSERVE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default: SEGSERVE_PORT or 8000)")
    weights = sub.add_parser("weights", help="manage torchvision weights files")
    wsub = weights.add_subparsers(dest="weights_command", required=True)
    fetch = wsub.add_parser("fetch", help="download the weights the model repository needs")
    fetch.add_argument("models", nargs="*", help="model names (default: all)")
    fetch.add_argument(
        "--finetune",
        metavar="ARCH",
        help="instead: the file `segserve finetune --model ARCH --start START` starts from",
    )
    fetch.add_argument(
        "--start", choices=("pretrained", "backbone"), default="pretrained", help="with --finetune"
    )
    sub.add_parser("models", help="list the model repository and where weights come from")
    settings_parser = sub.add_parser(
        "settings",
        help="print every setting as a .env file; or write / check the files generated "
        "from them (docs/configuration.md, .env.example)",
    )
    mode = settings_parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="(re)write the generated files")
    mode.add_argument("--check", action="store_true", help="exit 1 if one is stale")
    settings_parser.add_argument("--root", default=".", help="the repository root (default: .)")
    predict = sub.add_parser(
        "predict",
        help="segment images and folders into result files (docs/client.md), through a "
        "service (--url) or the models started here",
    )
    add_predict_arguments(predict)
    evaluate = sub.add_parser(
        "evaluate",
        help="a model's metrics on a dataset split (mIoU, or COCO mask/box AP), in this "
        "process or through a service (--url)",
    )
    add_evaluate_arguments(evaluate)
    finetune = sub.add_parser(
        "finetune",
        help="train a model on your own classes (docs/training.md) and install it into the "
        "model repository",
    )
    add_finetune_arguments(finetune)
    return parser


def _selected(specs: list[ModelSpec], names: Sequence[str]) -> list[ModelSpec]:
    known = {s.name: s for s in specs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names] if names else specs


def preflight(settings: Settings) -> None:
    """Fail fast, with a clear message, on a bad repository, device or missing weights."""
    resolve_device(settings.device)
    problems = []  # every model's, so that one run tells the operator everything to fix
    for spec in load_repository(settings.models_dir):
        try:
            check_options(spec)
            # Present and matching its hashes: a bad file stops startup before the port opens.
            model_file(spec, settings.weights_dir, allow_download=settings.allow_download)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))


_SHED_MARGIN_S = 0.5  # slack for answering and closing connections before the grace ends


def _drain_models(state: AppState, grace_s: float) -> None:
    if state.registry is not None:
        deadline = asyncio.get_running_loop().time() + max(0.0, grace_s - _SHED_MARGIN_S)
        state.registry.drain_by(deadline)


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising SIGTERM/SIGINT after a graceful shutdown.

    uvicorn re-raises the captured signal once it has drained, so the process ends with
    status 143; for process managers (Kubernetes, compose) a clean, drained stop is exit 0.
    """

    def __init__(self, config: uvicorn.Config, grace_s: float) -> None:
        super().__init__(config)
        self.grace_s = grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Readiness turns 503 at the signal, not only once connections have drained.
        app = self.config.app
        if isinstance(app, FastAPI) and not self.should_exit:
            state = app_state(app)
            state.begin_draining()
            # uvicorn cancels whatever still runs when the grace runs out, which a client
            # sees as a 500. So the batchers start only batches that can finish in time
            # and answer the rest 503 + Retry-After. (This is a signal handler: it only
            # schedules that on the loop.)
            loop = asyncio.get_running_loop()
            loop.call_soon_threadsafe(_drain_models, state, self.grace_s)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def cmd_serve(settings: Settings, host: str | None, port: int | None) -> int:
    # First, while this is the only thread that has allocated: the malloc options put every
    # thread on one heap, which a thread that already has a heap of its own would not join.
    if settings.keep_freed_memory and not keep_freed_memory():
        log.info("SEGSERVE_KEEP_FREED_MEMORY: malloc is not glibc's or refused the options")
    from app.main import create_app

    preflight(settings)
    server: _Server | None = None

    def stop(exc: BaseException) -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_startup_failure=stop)
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
        # The request log (app.request_log) writes one line per request, with the request id
        # and stage timings; uvicorn's own access line would say the same thing twice.
        access_log=False,
        # One process: a GPU model must not be copied into N workers that split its batches.
        workers=1,
        # On SIGTERM uvicorn stops accepting, lets in-flight requests finish for this long,
        # then cancels what is left (their queued entries are skipped, never run).
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]
    )
    server = _Server(config, settings.shutdown_grace_s)
    server.run()
    # The process ends next. Python's final garbage collection walks every object torch
    # and friends created, which takes seconds on a busy CPU and would eat into the
    # orchestrator's grace period: freeze them so it skips them (docs/PERFORMANCE.md,
    # "Shutdown").
    gc.freeze()
    startup_error = app_state(app).startup_error
    if startup_error is not None:
        print(f"segserve: error: startup failed: {startup_error}", file=sys.stderr)
        return 3
    return 0


def cmd_fetch(settings: Settings, args: argparse.Namespace) -> int:
    if args.finetune is not None:
        from app.training.build import starting_weights

        member = starting_weights(args.finetune, args.start)
        assert member is not None  # pretrained and backbone starts have a file
        _fetch_one(f"{args.finetune} ({args.start} start)", member, settings.weights_dir)
        return 0
    for spec in _selected(load_repository(settings.models_dir), args.models):
        source = weights_source(spec)
        if not isinstance(source, TorchvisionWeights):
            kind = "checkpoint" if isinstance(source, CheckpointFile) else "untrained"
            print(f"{spec.name}: nothing to fetch ({kind})")
            continue
        _fetch_one(spec.name, source.member, settings.weights_dir)
    return 0


def _fetch_one(label: str, member: WeightsEnum, weights_dir: Path) -> None:
    target = weights_dir / weights_file_name(member)
    if target.is_file():
        # The hash in the file name, as a download is checked (not a `sha256` pin).
        locate_torchvision_weights(member, weights_dir, allow_download=False, name=label)
        print(f"{label}: {target} present, hash ok")
        return
    try:
        path = fetch_torchvision_weights(member, weights_dir)
    except Exception as exc:
        raise ConfigError(f"{label}: download of {member.url} failed: {exc}") from None
    print(f"{label}: fetched {path}")


def cmd_models(settings: Settings) -> int:
    for spec in load_repository(settings.models_dir):
        where = weights_source(spec).describe(settings.weights_dir)
        default = " [default]" if spec.default else ""
        print(f"{spec.name}{default}\t{spec.task}\t{spec.architecture}\t{where}")
    return 0


def cmd_settings(write: bool, check: bool, root: str) -> int:
    """The settings as a .env file on stdout, or the files generated from them kept fresh."""

    from app import settings_docs

    if check:
        stale = settings_docs.stale_files(Path(root))
        if stale:
            print(f"segserve: {settings_docs.stale_message(stale)}", file=sys.stderr)
            return 1
        print(f"up to date: {', '.join(settings_docs.FILES)}")
    elif write:
        for relative in settings_docs.write_files(Path(root)):
            print(f"wrote {Path(root) / relative}")
    else:
        print(settings_docs.env_example(), end="")
    return 0


def cmd_predict(settings: Settings, args: argparse.Namespace) -> int:
    """``segserve predict`` (app/predict.py); without --url, preflight as ``serve`` does."""
    from app.predict import predict_command, require_client

    require_client()
    if args.url is None:
        preflight(settings)
    return predict_command(settings, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "settings":  # needs no valid settings: it documents them
        return cmd_settings(args.write, args.check, args.root)
    try:
        settings = Settings()
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if args.command == "serve":
            return cmd_serve(settings, args.host, args.port)
        if args.command == "weights":
            return cmd_fetch(settings, args)
        if args.command == "predict":
            return cmd_predict(settings, args)
        if args.command == "evaluate":
            from app.evaluate import evaluate_command

            return evaluate_command(settings, args)
        if args.command == "finetune":
            from app.threads import configure_torch_threads

            configure_torch_threads(settings.torch_threads)
            return finetune_command(settings, args)
        return cmd_models(settings)
    except ConfigError as exc:
        print(f"segserve: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:  # a bad SEGSERVE_* value
        print(f"segserve: error: invalid settings:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
