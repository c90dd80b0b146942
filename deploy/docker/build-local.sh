#!/usr/bin/env bash
# Build every CPU image on a host that cannot pull from Docker Hub (what .ci/run does):
#   bash deploy/docker/build-local.sh
# 1. dlf-base:bookworm from Debian packages (debootstrap; skipped when it exists)
# 2. wheelhouses from PyPI on the host (pip download; kept between runs)
# 3. dlf-ctr:serve-cpu, dlf-ctr:trainer-cpu, dlf-infra:bookworm with the legacy builder,
#    offline (--build-arg PIP_OFFLINE=1); unchanged layers come from the cache.
# Prints the seconds each step took.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DOCKER_BUILDKIT=0
step() {  # step NAME COMMAND...
  local name=$1 start=$SECONDS; shift
  echo "== $name"
  "$@"
  echo "== $name: $((SECONDS - start))s"
}
build() {  # build TARGET TAG
  docker build -q --build-arg BASE_IMAGE=dlf-base:bookworm --build-arg PIP_OFFLINE=1 \
    --target "$1" -t "$2" . >/dev/null
}
step base bash deploy/docker/debian-base.sh dlf-base:bookworm
step wheelhouse bash deploy/docker/wheelhouse.sh serve-cpu trainer-cpu
step serve-cpu build serve-cpu dlf-ctr:serve-cpu
step infra docker build -q -f deploy/docker/infra.Dockerfile --build-arg BASE_IMAGE=dlf-base:bookworm \
  -t dlf-infra:bookworm deploy/docker
step trainer-cpu build trainer-cpu dlf-ctr:trainer-cpu
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^dlf-(ctr|infra|base):' || true
