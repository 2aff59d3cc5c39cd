# syntax=docker/dockerfile:1
#
# segserve image. One worker per container: each worker loads every model, so scale out
# with containers (compose replicas, Kubernetes HPA), not with workers.
#
#   docker build -t segserve:cuda .                                   # GPU (CUDA 13.0)
#   docker build -t segserve:cpu --build-arg VARIANT=cpu .            # CPU only, smaller
#   docker build -t segserve:cuda --build-arg FETCH_WEIGHTS=1 .       # weights baked in
#
# Build arguments:
#   VARIANT         cuda (default) or cpu: picks the base image and the torch wheel index.
#   TORCH_SPEC      torch and torchvision requirements, as in the Makefile.
#   TORCH_PIP_ARGS  pip arguments for the torch install; empty = the index VARIANT implies.
#   FETCH_WEIGHTS   1 = run `segserve weights fetch` at build time (needs network, unless
#                   weights/ in the build context already holds the files), so the image
#                   serves offline; 0 (default) = mount weights/ at run time instead.
#   CUDA_IMAGE / CPU_IMAGE  the base images. The torch CUDA wheels bundle their own CUDA
#                   libraries, so nvidia/cuda:*-base-* also works and is smaller.

ARG VARIANT=cuda
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04
ARG CPU_IMAGE=ubuntu:24.04

# Both variants are Ubuntu 24.04 (Python 3.12 from apt), so the virtual environment built
# in `builder` runs unchanged in `runtime`: same interpreter, same path.
FROM ${CUDA_IMAGE} AS os-cuda
FROM ${CPU_IMAGE} AS os-cpu

# ------------------------------------------------------------------------------ python
# os-cuda or os-cpu: a stage above, whose tag is pinned there.
# hadolint ignore=DL3006
FROM os-${VARIANT} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# Distribution packages track the base image's release; pinning them breaks the build on
# every Ubuntu security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ----------------------------------------------------------------------------- builder
FROM python AS builder
ARG VARIANT
ARG TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
ARG TORCH_PIP_ARGS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-eu", "-o", "pipefail", "-c"]
# A compiler for any dependency that has no wheel for this Python; it stays in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /app

# The same two steps as `make install`: torch from TORCH_SPEC first, so the wanted build is
# in place before the project's open ranges (torch>=2.2) are resolved; then the project.
# TORCH_SPEC and TORCH_PIP_ARGS are word lists, split on purpose; TORCH_SPEC pins versions.
# hadolint ignore=SC2086,DL3013
RUN if [ -z "$TORCH_PIP_ARGS" ]; then \
        case "$VARIANT" in \
            cuda) TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu130" ;; \
            cpu) TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" ;; \
            *) echo "VARIANT must be cuda or cpu, got '$VARIANT'" >&2; exit 1 ;; \
        esac; \
    fi \
    && pip install $TORCH_PIP_ARGS $TORCH_SPEC

# The project's dependencies before its code, so editing app/ does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY README.md ./
COPY app ./app
# The Python client too (its dependencies are the service's already): `segserve predict`
# uses it, as `make install` installs it beside the service.
COPY clients/python ./clients/python
RUN pip install --no-deps . ./clients/python && segserve --help > /dev/null

# ----------------------------------------------------------------------------- weights
FROM builder AS weights
ARG FETCH_WEIGHTS=0
COPY models ./models
# weights/ from the build context is bind-mounted (not copied), so files already fetched on
# the host (`make fetch-weights`) are reused and checked instead of downloaded again.
RUN --mount=type=bind,source=weights,target=/context-weights \
    mkdir -p weights \
    && case "$FETCH_WEIGHTS" in \
        0) ;; \
        1) find /context-weights -maxdepth 1 -name '*.pth' -exec cp {} weights/ \; \
           && SEGSERVE_MODELS_DIR=models SEGSERVE_WEIGHTS_DIR=weights segserve weights fetch ;; \
        *) echo "FETCH_WEIGHTS must be 0 or 1, got '$FETCH_WEIGHTS'" >&2; exit 1 ;; \
    esac

# ----------------------------------------------------------------------------- runtime
FROM python AS runtime
ARG VARIANT
# segserve listens on all interfaces inside the container (its own default is loopback).
# Nothing may need to write outside /tmp: the root filesystem is read-only under compose and
# Kubernetes. Bytecode is compiled at install time; caches of torch, CUDA's kernel JIT and
# matplotlib (if a dependency imports it) go to /tmp.
ENV SEGSERVE_HOST=0.0.0.0 \
    SEGSERVE_PORT=8000 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/torch \
    CUDA_CACHE_PATH=/tmp/.nv/ComputeCache \
    MPLCONFIGDIR=/tmp/matplotlib
# A fixed numeric id (above the distribution's ranges), so Kubernetes' runAsNonRoot can verify
# it and host files can be made readable to it.
RUN groupadd --gid 10001 segserve \
    && useradd --uid 10001 --gid segserve --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin segserve
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY models ./models
COPY deploy/healthcheck.py /usr/local/bin/segserve-healthcheck
# Owned by the service user so that a plain `docker run` may download missing weights.
COPY --from=weights --chown=10001:10001 /app/weights ./weights
LABEL org.opencontainers.image.title="segserve" \
      org.opencontainers.image.description="REST image segmentation (torchvision DeepLabV3 / Mask R-CNN), ${VARIANT} build"
USER 10001:10001
EXPOSE 8000
# /healthz answers while the models load; /readyz says when to send traffic.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/segserve-healthcheck", "/healthz"]
# One worker: `segserve serve` runs a single uvicorn process and drains on SIGTERM.
CMD ["segserve", "serve"]
