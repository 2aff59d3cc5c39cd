import asyncio
from pathlib import Path

import httpx
import pytest

from bench import run
from bench.run import parse_args, plan_for, point_settings, request_for, server_command
from bench.servers import write_model_toml


def test_standard_plans_compare_bf16_for_resnet50_only() -> None:
    args = parse_args([])
    resnet = plan_for("deeplabv3_resnet50", args)
    assert resnet.concurrency == (1, 2, 4, 8, 16)
    assert resnet.compare_precision == "bf16"
    assert 8 in resnet.compare_concurrency
    assert plan_for("deeplabv3_mobilenet_v3_large", args).compare_precision is None
    maskrcnn = plan_for("maskrcnn_resnet50_fpn_v2", args)
    assert maskrcnn.concurrency == (1, 4, 8)
    assert maskrcnn.min_requests == 4


def test_command_line_overrides_the_plan() -> None:
    args = parse_args(
        ["--concurrency", "2,8", "--compare-precision", "none", "--min-requests", "3"]
    )
    plan = plan_for("maskrcnn_resnet50_fpn_v2", args)
    assert plan.concurrency == plan.compare_concurrency == (2, 8)
    assert plan.compare_precision is None
    assert plan.min_requests is None  # the command line's 3 applies, through point_settings
    assert point_settings(args).min_requests == 3


def test_comparing_a_precision_with_itself_is_dropped() -> None:
    args = parse_args(["--precision", "bf16"])
    assert plan_for("deeplabv3_resnet50", args).compare_precision is None


def test_quick_mode_is_short() -> None:
    args = parse_args(["--quick"])
    plan = plan_for("deeplabv3_resnet50", args)
    settings = point_settings(args)
    assert plan.concurrency == (1, 4)
    assert settings.duration_s <= 5
    assert settings.min_requests <= 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--image-size", "640"],
        ["--image-size", "0x480"],
        ["--concurrency", "0,2"],
        ["--servers", "raw,triton"],
        ["--models", "resnet50"],
        ["--env", "NOEQUALS"],
        ["--precision", "int8"],
    ],
)
def test_bad_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_parsed_values() -> None:
    args = parse_args(["--image-size", "1920x1080", "--env", "SEGSERVE_X=1=2", "--servers", "raw"])
    assert args.image_size == (1920, 1080)
    assert args.env == [("SEGSERVE_X", "1=2")]
    assert args.servers == ("raw",)


def test_instance_requests_ask_for_rle_at_the_threshold() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async def go() -> None:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(record), base_url="http://x"
        ) as client:
            await request_for("instance", b"img", 0.25)(client)
            await request_for("semantic", b"img", 0.25)(client)

    asyncio.run(go())
    assert seen[0].url.path == "/instances"
    assert dict(seen[0].url.params) == {
        "format": "json",
        "mask_encoding": "rle",
        "score_threshold": "0.25",
    }
    assert seen[1].url.path == "/segment"
    assert dict(seen[1].url.params) == {"format": "png"}
    assert b'name="image"' in seen[0].content


def test_server_commands_carry_the_runs_settings(tmp_path: Path) -> None:
    toml = write_model_toml(tmp_path, "maskrcnn_resnet50_fpn_v2")
    args = parse_args(
        [
            *("--torch-threads", "2", "--seed", "7", "--score-threshold", "0.3"),
            *("--env", "SEGSERVE_BATCH_AUTOTUNE=false", "--litserve-fast-queue"),
        ]
    )
    service = server_command("service", toml, "bf16", args, max_concurrency=40)
    assert service.health_path == "/readyz"
    assert service.env["SEGSERVE_PRECISION"] == "bf16"
    assert service.env["SEGSERVE_SEED"] == "7"
    assert service.env["SEGSERVE_TORCH_THREADS"] == "2"
    assert service.env["SEGSERVE_MODELS_DIR"] == str(tmp_path)
    assert int(service.env["SEGSERVE_MAX_QUEUE_SIZE"]) >= 80  # never sheds the sweep's load
    assert service.env["SEGSERVE_BATCH_AUTOTUNE"] == "false"
    assert service.argv[-1] == "serve"

    naive = server_command("naive", toml, "fp32", args, max_concurrency=8)
    assert naive.argv[1:3] == ["-m", "bench.baselines.naive_server"]
    flags = dict(zip(naive.argv[3::2], naive.argv[4::2], strict=False))
    assert flags["--model-toml"] == str(toml)
    assert flags["--seed"] == "7"
    assert flags["--score-threshold"] == "0.3"
    assert flags["--port"] == str(naive.port)

    litserve = server_command("litserve", toml, "fp32", args, max_concurrency=8)
    # The shipped Mask R-CNN batching: at most 4 images, 5 ms wait.
    joined = " ".join(litserve.argv)
    assert "--max-batch-size 4 --batch-timeout 0.005" in joined
    assert litserve.argv[-1] == "--fast-queue"
    assert litserve.health_path == "/health"
    assert len({service.port, naive.port, litserve.port}) == 3


@pytest.mark.parametrize("flag", [True, False])
def test_raw_can_keep_freed_memory_like_the_service(
    monkeypatch: pytest.MonkeyPatch, flag: bool
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(run, "keep_freed_memory", lambda: calls.append("kept") or True)
    args = parse_args(["--raw-keep-freed-memory"] if flag else [])
    assert run.setup_process(args) == {"raw_keeps_freed_memory": flag}
    assert calls == (["kept"] if flag else [])
