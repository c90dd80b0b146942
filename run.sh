#!/usr/bin/env bash
# One entry point for a fresh machine:
#   bash run.sh          install, train a small DLF on generated data if the registry is empty, serve it
#   bash run.sh test     install, make sure Redis answers, run the test suite
#   bash run.sh install  only create/refresh the virtual environment
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
export DLF_REGISTRY=${DLF_REGISTRY:-registry}
HOST=${DLF_HOST:-127.0.0.1}
PORT=${DLF_PORT:-8000}

install() {
  if [ ! -x "$PY" ]; then
    py=$(command -v python3.11 || true)
    if [ -z "$py" ]; then
      echo "Python 3.11 is required (python3.11 not found); e.g. apt-get install python3.11 python3.11-venv" >&2
      exit 1
    fi
    "$py" -m venv "$VENV"
  fi
  # Re-install only when the dependency list changed.
  stamp="$VENV/.installed-$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    "$PY" -m pip install -q --upgrade pip
    # torch pinned to the CPU build: a wheel already on disk (pip's find-links) when there is one,
    # else PyTorch's CPU wheel index; plain PyPI would pull the multi-GB CUDA build.
    if "$PY" -m pip install -q --no-index --no-deps torch==2.13.0 2>/dev/null; then
      "$PY" -m pip install -q torch==2.13.0      # its dependencies from the ordinary index
    else
      "$PY" -m pip install -q torch==2.13.0 --index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
    fi
    "$PY" -m pip install -q -e ".[serve,train,dev]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
}

ensure_redis() {
  if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    return
  fi
  if ! command -v redis-server >/dev/null; then
    echo "redis-server is not installed; the tests need a real Redis. Install it with:" >&2
    echo "  sudo apt-get install redis-server     # Debian/Ubuntu" >&2
    echo "  brew install redis                    # macOS" >&2
    exit 1
  fi
  echo "starting redis-server on 127.0.0.1:6379"
  mkdir -p /tmp/dlf-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/dlf-redis --logfile /tmp/dlf-redis/redis.log
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis-server did not answer" >&2; exit 1
}

serve() {
  if ! "$PY" -c "import sys; from service.contract import resolve_current; sys.exit(resolve_current('$DLF_REGISTRY') is None)"; then
    echo "no model bundle in $DLF_REGISTRY: generating data and training a small DLF"
    "$PY" -m training.cli demo --registry "$DLF_REGISTRY" --rows 20000 --epochs 5
  fi
  "$PY" -m service.cli example --registry "$DLF_REGISTRY" --url "http://$HOST:$PORT"
  exec "$PY" -m service.cli serve --host "$HOST" --port "$PORT"
}

case "${1:-serve}" in
  install) install ;;
  test) install; ensure_redis; shift || true; exec "$PY" -m pytest "$@" ;;
  serve) install; serve ;;
  *) echo "usage: bash run.sh [serve|test|install]" >&2; exit 2 ;;
esac
