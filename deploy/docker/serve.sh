#!/bin/sh
# The one place that says how the API process is started (image CMD, compose
# and Kubernetes all run this script). Change the command here only.
# One uvicorn worker per container is the default: scale with replicas, because
# every worker holds its own ONNX Runtime session and Prometheus registry.
set -eu
exec uvicorn --factory service.app:app_factory \
  --host 0.0.0.0 \
  --port "${DLF_PORT:-8000}" \
  --workers "${DLF_WORKERS:-1}" \
  --timeout-graceful-shutdown "${DLF_DRAIN_TIMEOUT_S:-25}" \
  --proxy-headers \
  --forwarded-allow-ips "*" \
  --no-access-log
