# segserve developer commands (GNU make).
#
#   make venv           create .venv (python3 -m venv) and install into it if needed (= install)
#   make serve          install if needed, then run the service (SEGSERVE_* settings apply)
#   make test           install if needed, lint, then the whole test suite (what CI runs)
#   make test-fast      the inner loop: all but integration/e2e tests, no lint (~100 s, 2 cores)
#   make docs           regenerate docs/configuration.md and .env.example from app/config.py
#   make lint / format  ruff check + ruff format --check + mypy / fix what ruff can
#   make lint-deploy    validate Dockerfile, docker-compose.yml, deploy/k8s offline (in lint)
#   make models         list the model repository and where each model's weights come from
#   make fetch-weights  download the torchvision weights the repository needs (MODELS="a b")
#   make bench          the benchmark suite, ~1 h on 2 cores (bench/run.py; BENCH_ARGS="--quick")
#   make gpu-check      on a CUDA machine: CUDA tests + GPU sweep into one folder, < 8 min, offline
#   make clean          remove caches and build files (keeps .venv and weights/)
#   make distclean      clean, and remove .venv too
#
# torch and torchvision are installed first, from TORCH_SPEC (plus TORCH_PIP_ARGS), so the
# right build is chosen before `pip install -e '.[dev]'` sees pyproject's open ranges
# (torch>=2.2). The default pins the versions this project is developed on. Elsewhere:
#   make test TORCH_SPEC="torch torchvision"                       # latest from PyPI
#   make serve TORCH_SPEC="torch==2.5.1 torchvision==0.20.1" \
#              TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu124"  # a CUDA build
# The install step runs only when needed: when .venv/.installed (the stamp) is missing, older
# than pyproject.toml, or records a different TORCH_SPEC / TORCH_PIP_ARGS. `make reinstall`
# forces it.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON         ?= python3
VENV           ?= .venv
TORCH_SPEC     ?= torch==2.14.1 torchvision==0.29.1
TORCH_PIP_ARGS ?=
PYTEST_ARGS    ?=
FAST_TESTS     ?= tests/unit tests/api tests/hostile tests/deploy tests/docs tests/bench tests/client \
                  tests/training
SERVE_ARGS     ?=
BENCH_ARGS     ?=
MODELS         ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
# What the stamp records; a different value means the venv was installed another way.
INSTALL_ID := $(strip $(TORCH_SPEC) $(TORCH_PIP_ARGS))

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv install reinstall serve test test-fast lint lint-deploy format docs bench models \
        fetch-weights clean distclean gpu-check FORCE

help:
	@sed -n '3,16p' $(firstword $(MAKEFILE_LIST)) | sed 's/^# \{0,1\}//'

# ----------------------------------------------------------------------------- install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Rebuild the stamp when the recorded install differs from the requested one.
ifneq ($(strip $(shell cat $(STAMP) 2>/dev/null)),$(strip $(INSTALL_ID)))
$(STAMP): FORCE
endif
FORCE: ;

# The Python client (clients/python) too: segserve predict and tests/client use it.
$(STAMP): pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH_PIP_ARGS) $(TORCH_SPEC)
	$(BIN)/python -m pip install -e '.[dev]' -e ./clients/python
	echo '$(INSTALL_ID)' > $@

venv install: $(STAMP)

reinstall:
	rm -f $(STAMP)
	$(MAKE) install

# --------------------------------------------------------------------------------- run

serve: $(STAMP)
	$(BIN)/segserve serve $(SERVE_ARGS)

models: $(STAMP)
	$(BIN)/segserve models

fetch-weights: $(STAMP)
	$(BIN)/segserve weights fetch $(MODELS)

# The bench extra (LitServe, matplotlib) goes on top of the dev install, once per install.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e '.[dev,bench]'
	touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# bench/gpu_check.sh: no install step (the GPU machine is offline), the .venv as it is.
gpu-check:
	PYTHON=$(abspath $(BIN))/python bash bench/gpu_check.sh $(GPU_CHECK_DIR)

# -------------------------------------------------------------------------------- checks

lint: $(STAMP) lint-deploy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Dockerfile (hadolint), docker-compose.yml (compose-spec schema) and deploy/k8s (Kubernetes
# schemas), all offline; see .ci/validate_deploy.py.
lint-deploy: $(STAMP)
	$(BIN)/python .ci/validate_deploy.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Lint first, then every test; -q keeps pytest's one-line summary ("N passed in ..."), -rs
# lists why each skipped test was skipped (tests/browser without Chromium says so).
test: $(STAMP) lint
	$(BIN)/pytest -q -rs $(PYTEST_ARGS)

# The loop to run while editing: every quick test directory, without the lint. Left out:
# tests/integration and tests/e2e (real torchvision networks, a real server process), which
# take longer than all of these together. `make test` stays the gate.
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not integration and not e2e" $(FAST_TESTS) $(PYTEST_ARGS)

# docs/configuration.md and .env.example are generated from the settings' fields in
# app/config.py; tests/unit/test_settings_docs.py fails while either is stale.
docs: $(STAMP)
	$(BIN)/segserve settings --write

# -------------------------------------------------------------------------------- clean

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
