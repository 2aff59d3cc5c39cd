"""The baselines' pipeline on a small real architecture (seeded, untrained), and the naive app."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from starlette.datastructures import UploadFile

from app.predictors.loading import build_model
from app.predictors.repository import load_spec
from app.predictors.weights import resolve_weights
from bench.baselines.naive_server import create_app
from bench.baselines.pipeline import ReferencePipeline, add_pipeline_arguments, decode
from bench.images import jpeg_bytes, photo_like
from bench.servers import write_model_toml

ARCH = "lraspp_mobilenet_v3_large"  # the cheapest semantic architecture torchvision has


@pytest.fixture(scope="module")
def toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_toml(tmp_path_factory.mktemp("repo"), ARCH)


@pytest.fixture(scope="module")
def pipeline(toml: Path) -> ReferencePipeline:
    return ReferencePipeline(toml, seed=5)


def test_the_pipeline_holds_the_services_weights(toml: Path, pipeline: ReferencePipeline) -> None:
    spec = load_spec(toml)
    service_model = build_model(
        spec, resolve_weights(spec, toml.parent, allow_download=False), seed=5
    )
    ours = pipeline.model.state_dict()
    for key, value in service_model.state_dict().items():
        assert torch.equal(ours[key], value), key


def test_precision_must_be_known(toml: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        ReferencePipeline(toml, precision="int8")


def test_naive_server_answers_the_pipelines_class_map(pipeline: ReferencePipeline) -> None:
    data = jpeg_bytes(photo_like(64, 48, seed=2))
    expected = pipeline.infer([decode(data)])[0]
    assert expected.shape == (48, 64)
    with TestClient(create_app(lambda: pipeline)) as client:
        response = client.post(
            "/segment", params={"format": "png"}, files={"image": ("a.jpg", data, "image/jpeg")}
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(response.content)) as image:
            assert np.array_equal(np.array(image), expected)
        wrong_task = client.post("/instances", files={"image": ("a.jpg", data, "image/jpeg")})
        assert wrong_task.status_code == 404


def test_litserve_api_batches_to_the_pipelines_class_maps(toml: Path) -> None:
    pytest.importorskip("litserve")  # the bench extra
    from bench.baselines.litserve_server import SegmentationAPI

    parser = argparse.ArgumentParser()
    add_pipeline_arguments(parser)
    args = parser.parse_args(["--model-toml", str(toml), "--seed", "5", "--port", "1"])
    args.max_batch_size, args.batch_timeout = 4, 0.01
    api = SegmentationAPI(args)
    assert api.api_path == "/segment"
    api.setup("cpu")
    files = [jpeg_bytes(photo_like(64, 48, seed=s)) for s in (1, 2)]
    # For a `Request`-annotated decode_request LitServe passes the parsed form, not the Request.
    forms = [{"image": UploadFile(io.BytesIO(f))} for f in files]
    decoded = [api.decode_request(form) for form in forms]  # type: ignore[arg-type]
    outputs = api.unbatch(api.predict(api.batch(decoded)))
    assert len(outputs) == 2
    reference = ReferencePipeline(toml, seed=5)
    for data, output in zip(files, outputs, strict=True):
        response = api.encode_response(output)
        assert response.media_type == "image/png"
        with Image.open(io.BytesIO(response.body)) as image:
            assert np.array_equal(np.array(image), reference.infer([decode(data)])[0])


def test_channels_last_raw_computes_the_same_class_map(
    toml: Path, pipeline: ReferencePipeline
) -> None:
    nhwc = ReferencePipeline(toml, seed=5, channels_last=True)
    conv = next(m for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    image = decode(jpeg_bytes(photo_like(64, 48, seed=4)))
    # NHWC sums in another order: a pixel may flip only where two logits tie within rounding.
    assert (nhwc.infer([image])[0] == pipeline.infer([image])[0]).mean() >= 0.999
