"""The naive FastAPI server: how most tutorials serve a torchvision model.

The model loads at startup; each request runs in a sync ``def`` endpoint, i.e. in FastAPI's
thread pool, and does its own decode, one forward pass of batch 1, and encode. Concurrent
requests therefore run concurrent forward passes that compete for the same cores. Same
routes and bodies as the service (``POST /segment`` -> PNG class map, ``POST /instances`` ->
JSON with RLE masks; multipart field ``image``); query parameters are accepted and ignored
(thresholds come from the command line, the same for every request).

    python -m bench.baselines.naive_server --model-toml models/x.toml --port 8100
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import Response

from bench.baselines.pipeline import (
    ReferencePipeline,
    add_pipeline_arguments,
    pipeline_from_arguments,
)


def create_app(pipeline_factory: Callable[[], ReferencePipeline]) -> FastAPI:
    state: dict[str, ReferencePipeline] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["pipeline"] = pipeline_factory()
        yield

    app = FastAPI(title="naive baseline", lifespan=lifespan)

    def run(image: UploadFile, task: str) -> Response:
        pipeline = state["pipeline"]
        if pipeline.task != task:
            raise HTTPException(404, f"this server runs a {pipeline.task} model")
        body, media_type = pipeline.handle(image.file.read())
        return Response(body, media_type=media_type)

    @app.post("/segment")
    def segment(image: UploadFile = File(...)) -> Response:
        return run(image, "semantic")

    @app.post("/instances")
    def instances(image: UploadFile = File(...)) -> Response:
        return run(image, "instance")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pipeline_arguments(parser)
    args = parser.parse_args()
    app = create_app(lambda: pipeline_from_arguments(args))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
