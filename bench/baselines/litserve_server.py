"""LitServe serving the same model with its dynamic batching switched on.

``decode_request`` reads the multipart upload and decodes it; ``batch`` keeps the images as a
list (Mask R-CNN takes a list; the semantic pipeline stacks them after the preset);
``predict`` runs one forward pass for the whole batch; ``unbatch`` splits the results;
``encode_response`` returns the same bodies as the service (PNG class map, JSON instances).
Images of one batch must share a size for the semantic stack: the benchmark sends one image.

    python -m bench.baselines.litserve_server --model-toml models/x.toml --port 8200 \
        --max-batch-size 8 --batch-timeout 0.005
"""

# No `from __future__ import annotations` here: LitServe reads decode_request's annotation at
# runtime, and only the class `Request` (not the string "Request") makes it parse the form.
import argparse
from typing import Any

import litserve as ls
import torch
from fastapi import Request
from fastapi.responses import Response

from app.predictors.repository import load_spec
from bench.baselines.pipeline import (
    ReferencePipeline,
    add_pipeline_arguments,
    decode,
    pipeline_from_arguments,
)


class SegmentationAPI(ls.LitAPI):
    def __init__(self, args: argparse.Namespace) -> None:
        # The service's routes, so the load generator sends the same request to every server.
        task = load_spec(args.model_toml).task
        super().__init__(
            max_batch_size=args.max_batch_size,
            batch_timeout=args.batch_timeout,
            api_path="/segment" if task == "semantic" else "/instances",
        )
        self.args = args
        self.pipeline: ReferencePipeline | None = None

    def setup(self, device: str) -> None:
        # LitServe picks the device from its accelerator; the pipeline was told the same one.
        self.pipeline = pipeline_from_arguments(self.args)

    def decode_request(self, request: Request) -> torch.Tensor:
        upload = request["image"]  # the parsed multipart form
        return decode(upload.file.read())

    def batch(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return inputs

    def predict(self, images: list[torch.Tensor]) -> list[tuple[Any, int, int]]:
        assert self.pipeline is not None
        results = self.pipeline.infer(images)
        return [
            (r, int(i.shape[-2]), int(i.shape[-1])) for r, i in zip(results, images, strict=True)
        ]

    def unbatch(self, output: list[tuple[Any, int, int]]) -> list[tuple[Any, int, int]]:
        return output

    def encode_response(self, output: tuple[Any, int, int]) -> Response:
        assert self.pipeline is not None
        body, media_type = self.pipeline.encode(*output)
        return Response(body, media_type=media_type)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pipeline_arguments(parser)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds")
    parser.add_argument(
        "--fast-queue", action="store_true", help="LitServe's ZeroMQ queue instead of its default"
    )
    args = parser.parse_args()
    accelerator = "cuda" if args.device.startswith("cuda") else "cpu"
    # timeout=False: a long queue on a slow CPU must not turn into LitServe's own 504s.
    server = ls.LitServer(
        SegmentationAPI(args),
        accelerator=accelerator,
        devices=1,
        timeout=False,
        fast_queue=args.fast_queue,
    )
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
