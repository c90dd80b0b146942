# Images of the DLF CTR service, all on Debian bookworm (Python 3.11 from Debian):
#   serve-cpu    the API on ONNX Runtime (CPU); no torch            (<= 400 MB, checked in CI)
#   serve-gpu    the API on onnxruntime-gpu + ORT's own CUDA 13 / cuDNN 9 wheels; refuses to be
#                ready unless CUDAExecutionProvider is active (DLF_REQUIRE_PROVIDER)
#   trainer      training + retrain job, torch CUDA 13 build (same CUDA major as serve-gpu)
#   trainer-cpu  training + retrain job, torch CPU build
# Build (docs/deploy.md):  docker build --target serve-cpu -t dlf-ctr:serve-cpu .
# Works with the legacy builder (DOCKER_BUILDKIT=0) and BuildKit. Offline builds: fill
# deploy/wheelhouse/<target>/ with `pip download` and pass --build-arg PIP_OFFLINE=1;
# hosts without Docker Hub pass --build-arg BASE_IMAGE=dlf-base:bookworm
# (deploy/docker/debian-base.sh makes it from Debian packages).
# Dependencies come from the hash-locked sets in deploy/locks/ and install in their own
# stage before any code is copied, so a code change rebuilds only the last layers.

ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- Python 3.11 + user app
FROM ${BASE_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
      /usr/share/doc/* /usr/share/man/* /usr/share/locale/* \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --create-home app \
 && mkdir -p /registry /data \
 && chown app:app /registry

# Stage order matters for the legacy builder (DOCKER_BUILDKIT=0), which builds every stage
# above the target: CPU images first, so building them never fetches the CUDA wheels.

# Each image: a deps stage makes /opt/venv from its hash-locked set deploy/locks/<name>.txt
# (+ deploy/wheelhouse/<name>/ when offline) before any code is copied, then the final stage
# copies that venv and the code. pip/setuptools are removed: not needed at run time.
# ---------------------------------------------------------------- serve-cpu
FROM python AS serve-cpu-deps
ARG PIP_OFFLINE=
COPY deploy/locks/serve-cpu.txt /tmp/lock.txt
COPY deploy/wheelhouse/serve-cpu/ /wheelhouse/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install ${PIP_OFFLINE:+--no-index} --find-links /wheelhouse --no-deps -r /tmp/lock.txt \
 && rm -rf /opt/venv/lib/python3.11/site-packages/pip* /opt/venv/lib/python3.11/site-packages/setuptools* \
      /opt/venv/lib/python3.11/site-packages/_distutils_hack /opt/venv/lib/python3.11/site-packages/pkg_resources \
      /opt/venv/lib/python3.11/site-packages/distutils-precedence.pth

FROM python AS serve-cpu
COPY --from=serve-cpu-deps /opt/venv /opt/venv
COPY deploy/docker/serve.sh /usr/local/bin/dlf-serve
COPY service /app/service
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    DLF_REGISTRY=/registry \
    DLF_PORT=8000 \
    DLF_PROCESSES=1 \
    DLF_SHUTDOWN_GRACE_S=3
WORKDIR /app
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DLF_PORT', '8000'), timeout=4)"]
CMD ["dlf-serve"]

# ---------------------------------------------------------------- trainer-cpu
FROM python AS trainer-cpu-deps
ARG PIP_OFFLINE=
COPY deploy/locks/trainer-cpu.txt /tmp/lock.txt
COPY deploy/wheelhouse/trainer-cpu/ /wheelhouse/
# torch's CPU build is not on PyPI: PyTorch's CPU wheel index as a find-links page.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install ${PIP_OFFLINE:+--no-index} --find-links /wheelhouse \
      $([ -n "$PIP_OFFLINE" ] || echo --find-links https://download.pytorch.org/whl/cpu/torch/) \
      --no-deps -r /tmp/lock.txt \
 && rm -rf /opt/venv/lib/python3.11/site-packages/pip* /opt/venv/lib/python3.11/site-packages/setuptools* \
      /opt/venv/lib/python3.11/site-packages/_distutils_hack /opt/venv/lib/python3.11/site-packages/pkg_resources \
      /opt/venv/lib/python3.11/site-packages/distutils-precedence.pth

# Built on its deps stage instead of copying a 1.2 GB venv into a fresh stage: halves the
# build time; the price is the wheelhouse layer (empty unless PIP_OFFLINE builds filled it).
FROM trainer-cpu-deps AS trainer-cpu
COPY model /app/model
COPY training /app/training
COPY service /app/service
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app DLF_REGISTRY=/registry MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
USER app
CMD ["python", "-m", "training.cli", "--help"]

# ---------------------------------------------------------------- serve-gpu
FROM python AS serve-gpu-deps
ARG PIP_OFFLINE=
COPY deploy/locks/serve-gpu.txt /tmp/lock.txt
COPY deploy/wheelhouse/serve-gpu/ /wheelhouse/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install ${PIP_OFFLINE:+--no-index} --find-links /wheelhouse --no-deps -r /tmp/lock.txt \
 && rm -rf /opt/venv/lib/python3.11/site-packages/pip* /opt/venv/lib/python3.11/site-packages/setuptools* \
      /opt/venv/lib/python3.11/site-packages/_distutils_hack /opt/venv/lib/python3.11/site-packages/pkg_resources \
      /opt/venv/lib/python3.11/site-packages/distutils-precedence.pth

FROM python AS serve-gpu
COPY --from=serve-gpu-deps /opt/venv /opt/venv
COPY deploy/docker/serve.sh /usr/local/bin/dlf-serve
COPY service /app/service
# The CUDA/cuDNN libraries are ORT's nvidia-* wheels in the venv (preloaded by the service);
# the host needs only the NVIDIA driver (CUDA 13: R580 or newer) and the container toolkit.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    DLF_REQUIRE_PROVIDER=CUDAExecutionProvider \
    DLF_REGISTRY=/registry \
    DLF_PORT=8000 \
    DLF_PROCESSES=1 \
    DLF_SHUTDOWN_GRACE_S=3
WORKDIR /app
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DLF_PORT', '8000'), timeout=4)"]
CMD ["dlf-serve"]

# ---------------------------------------------------------------- trainer (GPU)
FROM python AS trainer-gpu-deps
ARG PIP_OFFLINE=
COPY deploy/locks/trainer-gpu.txt /tmp/lock.txt
COPY deploy/wheelhouse/trainer-gpu/ /wheelhouse/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install ${PIP_OFFLINE:+--no-index} --find-links /wheelhouse --no-deps -r /tmp/lock.txt \
 && rm -rf /opt/venv/lib/python3.11/site-packages/pip* /opt/venv/lib/python3.11/site-packages/setuptools* \
      /opt/venv/lib/python3.11/site-packages/_distutils_hack /opt/venv/lib/python3.11/site-packages/pkg_resources \
      /opt/venv/lib/python3.11/site-packages/distutils-precedence.pth

# Default target (last): the GPU trainer.
FROM python AS trainer
COPY --from=trainer-gpu-deps /opt/venv /opt/venv
COPY model /app/model
COPY training /app/training
COPY service /app/service
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app DLF_REGISTRY=/registry MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /app
USER app
CMD ["python", "-m", "training.cli", "--help"]
