"""GET /metrics after real requests through the app: every series moves by what was sent.

The exposition is parsed with prometheus-client's own parser; each test compares a scrape
before with one after, so the scrapes themselves (counted under /metrics) do not interfere.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app, wait_until_started
from app.metrics import ServiceMetrics
from app.serving import ModelRegistry
from tests.api.conftest import Served, encode, make_settings, sample_image
from tests.fakes import SEM_CATEGORIES, FakeSemantic, fake_registry, fake_specs

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

PNG = {"Content-Type": "image/png"}
STAGES = ("decode", "queue", "infer", "encode")


async def scrape(served: Served) -> Samples:
    response = await served.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def server_timing(response: httpx.Response) -> dict[str, float]:
    """Seconds per stage from `decode;dur=0.43, queue;dur=1.24, ...`."""
    stages = {}
    for part in response.headers["server-timing"].split(","):
        name, dur = part.strip().split(";dur=")
        stages[name] = float(dur) / 1000
    return stages


async def post_segment(served: Served, query: str = "") -> httpx.Response:
    return await served.client.post(f"/segment{query}", content=encode(sample_image()), headers=PNG)


async def until_queued(served: Served, depth: int) -> None:
    for _ in range(500):
        if served.app_queue_depth() == depth:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"queue depth stayed {served.app_queue_depth()}, expected {depth}")


async def test_requests_are_counted_by_route_template_model_and_status(served: Served) -> None:
    before = await scrape(served)
    assert (await post_segment(served, "?format=png")).status_code == 200
    assert (await post_segment(served)).status_code == 200
    instances = await served.client.post("/instances", content=encode(sample_image()), headers=PNG)
    assert instances.status_code == 200
    assert (await served.client.get("/no/such/path")).status_code == 404
    after = await scrape(served)

    requests = "segserve_requests_total"
    assert delta(before, after, requests, endpoint="/segment", model="fake-sem", status="200") == 2
    assert (
        delta(before, after, requests, endpoint="/instances", model="fake-inst", status="200") == 1
    )
    assert delta(before, after, requests, endpoint="unmatched", model="", status="404") == 1
    assert value(after, requests, endpoint="/metrics", model="", status="200") >= 1
    # Labels hold templates, never raw paths or query strings.
    label_values = {v for (_, labels) in after for _, v in labels}
    assert not any("/no/such" in v or "?" in v for v in label_values)


async def test_latency_and_stage_histograms_hold_each_requests_server_timing(
    served: Served,
) -> None:
    before = await scrape(served)
    responses = [await post_segment(served) for _ in range(3)]
    after = await scrape(served)
    timings = [server_timing(r) for r in responses]

    latency = "segserve_request_duration_seconds"
    assert delta(before, after, f"{latency}_count", endpoint="/segment", model="fake-sem") == 3
    stage_total = 0.0
    for stage in STAGES:
        labels = {"model": "fake-sem", "stage": stage}
        assert delta(before, after, "segserve_stage_duration_seconds_count", **labels) == 3
        observed = delta(before, after, "segserve_stage_duration_seconds_sum", **labels)
        sent = sum(t[stage] for t in timings)
        # The header rounds each value to 0.01 ms.
        assert observed == pytest.approx(sent, abs=3 * 0.5e-5 + 1e-9)
        stage_total += observed
    end_to_end = delta(before, after, f"{latency}_sum", endpoint="/segment", model="fake-sem")
    assert end_to_end >= stage_total > 0
    # Cumulative buckets: the last finite one (the default request timeout) holds them all.
    bucket = f"{latency}_bucket"
    assert delta(before, after, bucket, endpoint="/segment", model="fake-sem", le="+Inf") == 3
    assert delta(before, after, bucket, endpoint="/segment", model="fake-sem", le="300.0") == 3


async def test_batch_sizes_are_observed_per_batch_and_queue_depth_at_scrape(
    served: Served,
) -> None:
    served.semantic.gate = threading.Event()
    before = await scrape(served)
    first = asyncio.create_task(post_segment(served))
    assert await asyncio.to_thread(served.semantic.entered.wait, 5)
    queued = [asyncio.create_task(post_segment(served)) for _ in range(2)]
    await until_queued(served, 2)

    during = await scrape(served)
    assert value(during, "segserve_queue_depth", model="fake-sem") == 2
    assert value(during, "segserve_queue_depth", model="fake-inst") == 0

    served.semantic.gate.set()
    responses = await asyncio.gather(first, *queued)
    assert [r.status_code for r in responses] == [200, 200, 200]
    after = await scrape(served)
    assert served.semantic.batches == [1, 2]  # the held one alone, then the two queued
    sizes = "segserve_batch_size"
    assert delta(before, after, f"{sizes}_count", model="fake-sem") == 2  # batches, not images
    assert delta(before, after, f"{sizes}_sum", model="fake-sem") == 3
    assert delta(before, after, f"{sizes}_bucket", model="fake-sem", le="1.0") == 1
    assert delta(before, after, f"{sizes}_bucket", model="fake-sem", le="2.0") == 2
    assert value(after, "segserve_queue_depth", model="fake-sem") == 0


async def test_error_answers_are_counted_by_status_and_rejection_reason(served: Served) -> None:
    before = await scrape(served)
    truncated = encode(sample_image())[:60]
    bad_image = await served.client.post("/segment", content=truncated, headers=PNG)
    assert bad_image.status_code == 422
    not_an_image = await served.client.post("/segment", content=b"not an image", headers=PNG)
    assert not_an_image.status_code == 415
    unknown_model = await post_segment(served, "?model=nope")
    assert unknown_model.status_code == 404
    bad_query = await post_segment(served, "?tolerance=-1")
    assert bad_query.status_code == 422
    served.semantic.fail_with = RuntimeError("the model broke")
    failed = await post_segment(served)
    assert failed.status_code == 500
    after = await scrape(served)

    requests = "segserve_requests_total"
    # The model is known once resolved: an undecodable image is counted against it.
    assert delta(before, after, requests, endpoint="/segment", model="fake-sem", status="422") == 2
    assert delta(before, after, requests, endpoint="/segment", model="fake-sem", status="415") == 1
    assert delta(before, after, requests, endpoint="/segment", model="", status="404") == 1
    assert delta(before, after, requests, endpoint="/segment", model="fake-sem", status="500") == 1
    rejections = "segserve_rejections_total"
    assert delta(before, after, rejections, reason="bad_image") == 1
    assert delta(before, after, rejections, reason="model_not_found") == 1
    assert delta(before, after, rejections, reason="invalid_parameter") == 1
    assert delta(before, after, rejections, reason="unsupported_media_type") == 1
    # A failure is not a refusal: the 500 is in the requests counter only.
    assert not any(name == rejections and ("reason", "internal_error") in labels
                   for name, labels in after)  # fmt: skip


@pytest.mark.parametrize("settings_overrides", [{"max_queue_size": 1}])
async def test_a_full_queue_counts_a_503_queue_full_rejection(served: Served) -> None:
    served.semantic.gate = threading.Event()
    before = await scrape(served)
    held = [asyncio.create_task(post_segment(served))]
    assert await asyncio.to_thread(served.semantic.entered.wait, 5)
    held.append(asyncio.create_task(post_segment(served)))
    await until_queued(served, 1)
    rejected = await post_segment(served)
    assert rejected.status_code == 503
    served.semantic.gate.set()
    assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
    after = await scrape(served)

    requests = "segserve_requests_total"
    assert delta(before, after, requests, endpoint="/segment", model="fake-sem", status="503") == 1
    assert delta(before, after, requests, endpoint="/segment", model="fake-sem", status="200") == 2
    assert delta(before, after, "segserve_rejections_total", reason="queue_full") == 1


@pytest.mark.parametrize("settings_overrides", [{"request_timeout_s": 0.3}])
async def test_a_504_counts_a_deadline_rejection(served: Served) -> None:
    served.semantic.gate = threading.Event()
    before = await scrape(served)
    try:
        late = await post_segment(served)
    finally:
        served.semantic.gate.set()
    assert late.status_code == 504
    after = await scrape(served)
    requests = "segserve_requests_total"
    assert delta(before, after, requests, endpoint="/segment", model="fake-sem", status="504") == 1
    assert delta(before, after, "segserve_rejections_total", reason="deadline") == 1


@pytest.mark.parametrize("settings_overrides", [{"api_key": "s3cret-key"}])
async def test_metrics_need_no_key_and_a_401_is_an_unauthorized_rejection(served: Served) -> None:
    before = await scrape(served)  # no key sent: scrapers carry none
    assert (await post_segment(served)).status_code == 401
    after = await scrape(served)
    assert delta(before, after, "segserve_rejections_total", reason="unauthorized") == 1
    requests = "segserve_requests_total"
    assert delta(before, after, requests, endpoint="/segment", model="", status="401") == 1


async def test_loaded_models_are_described(served: Served) -> None:
    samples = await scrape(served)
    info = "segserve_model_info"
    common = {"device": "cpu", "precision": "fp32", "weights": "untrained"}
    semantic = {"task": "semantic", "architecture": "deeplabv3_mobilenet_v3_large", **common}
    instance = {"task": "instance", "architecture": "maskrcnn_resnet50_fpn_v2", **common}
    assert value(samples, info, model="fake-sem", **semantic) == 1
    assert value(samples, info, model="fake-inst", **instance) == 1
    assert sum(1 for name, _ in samples if name == info) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
async def test_no_gpu_series_without_a_gpu(served: Served) -> None:
    samples = await scrape(served)
    assert not any(name.startswith("segserve_gpu_") for name, _ in samples)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
async def test_gpu_memory_of_the_models_devices_is_read_at_scrape(served: Served) -> None:
    served.semantic.device = "cuda:0"  # the collector asks the predictor where it runs
    held = torch.empty(64 * 1024 * 1024, dtype=torch.uint8, device="cuda:0")
    samples = await scrape(served)
    allocated = value(samples, "segserve_gpu_memory_allocated_bytes", device="cuda:0")
    reserved = value(samples, "segserve_gpu_memory_reserved_bytes", device="cuda:0")
    assert reserved >= allocated >= held.numel()


async def test_openmetrics_when_the_scraper_asks_for_it(served: Served) -> None:
    accept = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    response = await served.client.get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert "segserve_queue_depth" in response.text


async def test_each_app_has_its_own_registry(served: Served) -> None:
    other = ServiceMetrics(lambda: None)
    other.observe_request(
        endpoint="/segment", model="x", status=200, seconds=1.0, stages={}, error=None
    )
    samples = await scrape(served)
    assert (
        value(samples, "segserve_requests_total", endpoint="/segment", model="x", status="200") == 0
    )
    body, _ = other.render(None)
    assert b'segserve_requests_total{endpoint="/segment",model="x",status="200"} 1.0' in body


async def test_metrics_answer_while_models_load_and_describe_them_once_loaded() -> None:
    loading = threading.Event()
    sem_spec, _ = fake_specs()
    semantic = FakeSemantic(sem_spec, SEM_CATEGORIES)

    def loader(settings: Settings) -> ModelRegistry:
        assert loading.wait(10)  # the test decides when loading finishes
        return fake_registry(settings, semantic)

    app = create_app(make_settings(), loader=loader)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        app.router.lifespan_context(app),
    ):
        during = await client.get("/metrics")
        assert during.status_code == 200
        names = {f.name for f in text_string_to_metric_families(during.text)}
        assert "segserve_requests" in names  # declared from the start
        assert not names & {"segserve_queue_depth", "segserve_model_info"}  # nothing served yet
        loading.set()
        await wait_until_started(app)
        after = await client.get("/metrics")
        families = {f.name: f for f in text_string_to_metric_families(after.text)}
        assert [s.labels["model"] for s in families["segserve_queue_depth"].samples] == ["fake-sem"]
        assert [s.labels["model"] for s in families["segserve_model_info"].samples] == ["fake-sem"]
