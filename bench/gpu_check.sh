#!/usr/bin/env bash
# One check of segserve on a CUDA machine, in under 8 minutes, offline (installs nothing):
#
#   1. the environment: nvidia-smi, torch / CUDA / cuDNN versions, the GPU torch sees;
#   2. the tests that skip without CUDA (tests/integration/test_device.py, the GPU metrics
#      test in tests/api/test_metrics.py, fine-tuning on CUDA with AMP in
#      tests/training/test_finetune.py), with pytest's report;
#   3. a short throughput sweep (bench/gpu_sweep.py): deeplabv3_resnet50,
#      deeplabv3_mobilenet_v3_large and maskrcnn_resnet50_fpn_v2 (untrained unless their
#      weights are in weights/), batch sizes 1, 4, 8, precisions fp32, bf16, fp16, untiled
#      and tiled;
#   4. summary.md: each step's exit status, pytest's summary line and the sweep's table.
#
# Everything goes into ONE folder, the first argument (default:
# bench/results/gpu-check-<UTC time>). Python: $PYTHON, else the repository's .venv (built
# with `make install` and a CUDA build of torch). Each step runs under `timeout`, so the
# whole stays under 8 minutes even when a step hangs. Exit status: 0 when every step passed,
# 1 when a step failed or timed out (the folder still holds what it got), 2 without CUDA.
#
#   bash bench/gpu_check.sh                  # or: make gpu-check
#   bash bench/gpu_check.sh /tmp/gpu-check   # a folder of your choice
#   PYTHON=/opt/venv/bin/python bash bench/gpu_check.sh
#   GPU_CHECK_ON_CPU=1 bash bench/gpu_check.sh /tmp/rehearsal  # the script's own rehearsal on a
#                                           # CPU: no CUDA needed, a --quick sweep of one model

set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

OUT="${1:-bench/results/gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
# Seconds per step, at most: versions 20, nvidia-smi 2 x 15, tests 170, sweep 200, each
# killed 10 s after its timeout at worst: 460 s, under 8 minutes with the summary.
VERSIONS_TIMEOUT=20
ENV_TIMEOUT=15
PYTEST_TIMEOUT=170
SWEEP_TIMEOUT=200
# The sweep starts no new point after this many seconds, so it ends before its timeout.
SWEEP_BUDGET=160

DEVICE=cuda
SWEEP_ARGS=()
if [ "${GPU_CHECK_ON_CPU:-0}" = 1 ]; then
    DEVICE=cpu
    SWEEP_ARGS=(--quick --models deeplabv3_mobilenet_v3_large)
fi
export GPU_CHECK_ON_CPU="${GPU_CHECK_ON_CPU:-0}"

# The tests and the sweep must not fetch anything (the machine is offline).
export SEGSERVE_ALLOW_DOWNLOAD=false HF_HUB_OFFLINE=1 PIP_NO_INDEX=1

mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/summary.md"
FAILED=0

say() { printf '%s\n' "$*" | tee -a "$OUT/gpu_check.log"; }

# step NAME SECONDS LOGFILE COMMAND...: run under timeout, log its output, record its status.
step() {
    local name="$1" seconds="$2" log="$3"
    shift 3
    local started=$SECONDS rc
    say "== $name (at most ${seconds} s): $*"
    timeout --kill-after=10 "$seconds" "$@" >"$log" 2>&1
    rc=$?
    local took=$((SECONDS - started))
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        say "   $name: TIMED OUT after ${took} s (exit $rc); see $log"
        FAILED=1
    elif [ "$rc" -ne 0 ]; then
        say "   $name: FAILED (exit $rc, ${took} s); see $log"
        FAILED=1
    else
        say "   $name: ok (${took} s)"
    fi
    printf '| %s | %s | %s s | %s |\n' "$name" "$rc" "$took" "$(basename "$log")" >>"$OUT/steps.md"
    return "$rc"
}

if [ ! -x "$PYTHON" ]; then
    say "no Python at $PYTHON: build the venv with 'make install' (a CUDA build of torch), or set PYTHON"
    exit 2
fi

say "gpu check of $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'unknown commit') into $OUT"
printf '| step | exit | took | log |\n|---|---:|---:|---|\n' >"$OUT/steps.md"

# 1. The environment. CUDA first: without it nothing below means anything.
if ! timeout "$VERSIONS_TIMEOUT" "$PYTHON" - >"$OUT/versions.txt" 2>&1 <<'EOF'
import os
import sys
import torch
import torchvision

print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("torchvision", torchvision.__version__)
print("cudnn", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
if not torch.cuda.is_available():
    print("CUDA is not available to torch")
    sys.exit(0 if os.environ["GPU_CHECK_ON_CPU"] == "1" else 3)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}", p.name, f"capability {p.major}.{p.minor}", f"{p.total_memory / 1e9:.1f} GB")
print("bf16 supported", torch.cuda.is_bf16_supported())
EOF
then
    cat "$OUT/versions.txt"
    say "CUDA is not available to $PYTHON (torch $("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null)):"
    say "this check needs a GPU and a CUDA build of torch; nothing was run. Details: $OUT/versions.txt"
    exit 2
fi
tee -a "$OUT/gpu_check.log" <"$OUT/versions.txt"
if command -v nvidia-smi >/dev/null 2>&1; then
    step "nvidia-smi" "$ENV_TIMEOUT" "$OUT/nvidia-smi.txt" nvidia-smi
    timeout "$ENV_TIMEOUT" nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm \
        --format=csv >"$OUT/nvidia-smi.csv" 2>&1
else
    say "   nvidia-smi: not on PATH"
fi

# 2. Every test that needs CUDA (grep -rn "cuda.is_available" tests/ lists them).
step "pytest (CUDA tests)" "$PYTEST_TIMEOUT" "$OUT/pytest.txt" \
    "$PYTHON" -m pytest -rA -p no:cacheprovider \
    --junitxml="$OUT/pytest.xml" \
    tests/integration/test_device.py \
    "tests/api/test_metrics.py::test_gpu_memory_of_the_models_devices_is_read_at_scrape" \
    "tests/training/test_finetune.py::test_finetune_on_cuda_with_mixed_precision_resumes_and_serves"

# 3. The sweep.
step "throughput sweep" "$SWEEP_TIMEOUT" "$OUT/sweep.log" \
    "$PYTHON" -m bench.gpu_sweep --device "$DEVICE" --budget-s "$SWEEP_BUDGET" --out "$OUT" \
    "${SWEEP_ARGS[@]}"

# 4. The summary.
{
    echo "# GPU check"
    echo
    echo "- commit: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "- when: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- python: $PYTHON"
    [ "$DEVICE" = cpu ] && echo "- REHEARSAL on the CPU (GPU_CHECK_ON_CPU=1): not a GPU check"
    sed 's/^/- /' "$OUT/versions.txt"
    echo
    echo "## Steps"
    echo
    cat "$OUT/steps.md"
    echo
    echo "## Tests"
    echo
    echo '```'
    grep -E '^(PASSED|FAILED|ERROR|SKIPPED)|(passed|failed|error|skipped)' "$OUT/pytest.txt" | tail -n 20
    echo '```'
    echo
    echo "## Throughput"
    echo
    if [ -f "$OUT/sweep.md" ]; then
        sed -n '3,$p' "$OUT/sweep.md"
    else
        echo "(no sweep results; see sweep.log)"
    fi
} >"$SUMMARY"

say "summary: $SUMMARY"
cat "$SUMMARY"
exit "$FAILED"
