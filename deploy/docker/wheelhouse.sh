#!/usr/bin/env bash
# Fill deploy/wheelhouse/<target>/ with the wheels of deploy/locks/<target>.txt, on the host,
# so `docker build --build-arg PIP_OFFLINE=1` needs no network inside the build:
#   bash deploy/docker/wheelhouse.sh serve-cpu [trainer-cpu ...]
# Wheels already there are kept (pip skips files it has), so a rerun is quick.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=${PIP:-python3 -m pip}
for target in "$@"; do
  lock=deploy/locks/$target.txt
  [ -f "$lock" ] || { echo "no lock $lock" >&2; exit 2; }
  extra=()
  # torch's CPU build is not on PyPI: a local folder holding it, else PyTorch's CPU wheel page.
  if [ "$target" = trainer-cpu ]; then
    if compgen -G "/opt/wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then extra=(--find-links /opt/wheels)
    else extra=(--find-links "${TORCH_CPU_WHEELS:-https://download.pytorch.org/whl/cpu/torch/}"); fi
  fi
  # --isolated: PyPI as the lock was compiled against, not this host's pip configuration.
  $PIP download --isolated --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
    "${extra[@]}" -r "$lock" -d "deploy/wheelhouse/$target"
  echo "wheelhouse $target: $(ls deploy/wheelhouse/$target | grep -c '\.whl$') wheels"
done
