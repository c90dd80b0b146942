#!/usr/bin/env bash
# Fill deploy/wheelhouse/<target>/ with the wheels of deploy/locks/<target>.txt, on the host,
# so `docker build --build-arg PIP_OFFLINE=1` needs no network inside the build:
#   bash deploy/docker/wheelhouse.sh serve-cpu [trainer-cpu ...]
# Wheels already there are kept (pip skips files it has), so a rerun is quick; they are also
# kept in $DLF_WHEEL_CACHE (default /var/cache/dlf-wheelhouse) for fresh clones on this host.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=${PIP:-python3 -m pip}
cache=${DLF_WHEEL_CACHE:-/var/cache/dlf-wheelhouse}
for target in "$@"; do
  lock=deploy/locks/$target.txt
  mkdir -p "deploy/wheelhouse/$target" "$cache/$target" 2>/dev/null || true
  cp -n "$cache/$target"/*.whl "deploy/wheelhouse/$target/" 2>/dev/null || true
  [ -f "$lock" ] || { echo "no lock $lock" >&2; exit 2; }
  extra=()
  # torch's CPU build is not on PyPI: a local folder holding it, else PyTorch's CPU wheel page.
  if [ "$target" = trainer-cpu ]; then
    if compgen -G "/opt/wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then extra=(--find-links /opt/wheels)
    else extra=(--find-links "${TORCH_CPU_WHEELS:-https://download.pytorch.org/whl/cpu/torch/}"); fi
  fi
  # --isolated: PyPI as the lock was compiled against, not this host's pip configuration.
  $PIP download --isolated --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
    "${extra[@]}" -r "$lock" -d "deploy/wheelhouse/$target"
  cp -n "deploy/wheelhouse/$target"/*.whl "$cache/$target/" 2>/dev/null || true
  # keep only the locked wheels, so the build context (and the image layer) does not grow
  python3 - "$lock" "deploy/wheelhouse/$target" <<'PY'
import pathlib, re, sys
lock = pathlib.Path(sys.argv[1]).read_text()
norm = lambda n: re.sub(r"[-_.]+", "_", n).lower()
want = {(norm(n), v) for n, v in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock, re.M)}
for wheel in pathlib.Path(sys.argv[2]).glob("*.whl"):
    name, version = wheel.name.split("-")[:2]
    if (norm(name), version) not in want:
        wheel.unlink()
PY
  echo "wheelhouse $target: $(ls deploy/wheelhouse/$target | grep -c '\.whl$') wheels"
done
