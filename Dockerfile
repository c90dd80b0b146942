# syntax=docker/dockerfile:1.7
#
# One image for the API and the trainer, in two flavours:
#   docker build -t dlf-ctr:gpu .                 # default (last) target: CUDA + onnxruntime-gpu
#   docker build --target cpu -t dlf-ctr:cpu .    # python:3.11-slim + CPU torch + onnxruntime
# Builder stages create /opt/venv; final stages copy only the venv (no compilers).
# The serve command lives in deploy/docker/serve.sh (installed as /usr/local/bin/dlf-serve).

ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# CUDA wheel index matching the CUDA major of the base image (CUDA 12.x, cuDNN 9).
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
ARG PYTHON_SLIM_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- CPU flavour
FROM ${PYTHON_SLIM_IMAGE} AS cpu-builder
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU index, so the project install finds it satisfied.
RUN pip install --upgrade pip wheel \
 && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CPU_INDEX}"
WORKDIR /src
COPY pyproject.toml ./
COPY model ./model
COPY training ./training
COPY service ./service
RUN pip install ".[cpu]"

FROM ${PYTHON_SLIM_IMAGE} AS cpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DLF_REGISTRY=/registry \
    DLF_PORT=8000 \
    DLF_WORKERS=1
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --create-home app \
 && mkdir -p /registry /data \
 && chown app:app /registry
COPY --from=cpu-builder /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/serve.sh /usr/local/bin/dlf-serve
WORKDIR /app
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DLF_PORT', '8000'), timeout=4)"]
CMD ["dlf-serve"]

# ---------------------------------------------------------------- GPU flavour
# Python 3.11 from the deadsnakes PPA, shared by builder and final so the venv's
# interpreter path (/usr/bin/python3.11) is identical in both.
FROM ${CUDA_IMAGE} AS gpu-base
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y --auto-remove software-properties-common gpg-agent \
 && rm -rf /var/lib/apt/lists/*

FROM gpu-base AS gpu-builder
ARG TORCH_VERSION
ARG TORCH_CUDA_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential python3.11-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip wheel \
 && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CUDA_INDEX}"
WORKDIR /src
COPY pyproject.toml ./
COPY model ./model
COPY training ./training
COPY service ./service
RUN pip install ".[gpu]"

# Default target: keep it last.
FROM gpu-base AS gpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    DLF_REGISTRY=/registry \
    DLF_PORT=8000 \
    DLF_WORKERS=1
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --create-home app \
 && mkdir -p /registry /data \
 && chown app:app /registry
COPY --from=gpu-builder /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/serve.sh /usr/local/bin/dlf-serve
WORKDIR /app
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DLF_PORT', '8000'), timeout=4)"]
CMD ["dlf-serve"]
