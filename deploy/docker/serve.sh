#!/bin/sh
# The one place that says how the API process is started (image CMD, compose
# and Kubernetes all run this script). Change the command here only.
# DLF_PROCESSES=1 (default): one uvicorn process; scale with replicas.
# DLF_PROCESSES=N > 1 (0 = one per core): N processes on one port via `serve --processes`
# (SO_REUSEPORT, Prometheus multiprocess mode, reloads followed by all: service/processes.py).
set -eu
if [ "${DLF_PROCESSES:-1}" != "1" ]; then
  export FORWARDED_ALLOW_IPS="${FORWARDED_ALLOW_IPS:-*}"
  exec python -m service.cli serve --host 0.0.0.0 --port "${DLF_PORT:-8000}" --processes "$DLF_PROCESSES"
fi
exec uvicorn --factory service.app:app_factory \
  --host 0.0.0.0 \
  --port "${DLF_PORT:-8000}" \
  --timeout-graceful-shutdown "${DLF_DRAIN_TIMEOUT_S:-25}" \
  --proxy-headers \
  --forwarded-allow-ips "*" \
  --no-access-log
