#!/usr/bin/env bash
# The GPU checks in one sitting, for a lent GPU machine (this workplace's `device` tool; any
# CUDA 13 host with PyTorch works the same). docs/gpu.md holds the results and how to run it.
#
# Expects, beside the repo: .gpu/frappe.dev.libfm (the Frappe rows; never committed), .whl/
# (cp312 wheels the host lacks: docs/gpu.md lists them) and, unless ORT_GPU_DIR is set, the
# onnxruntime-gpu wheel's package unpacked in /tmp/ortgpu (the device tool carries 64 MiB per
# call, so it travels as xz or zstd parts of one tar: ORT_GPU_PARTS=/tmp/ortparts is reassembled here).
#   1. CUDA + AMP training of the Frappe recipe (automatic device choice), then 1 epoch on
#      CUDA, on CPU (all cores) and under torchrun (DDP, NCCL, 1 process): samples/s side by side;
#      then the recipe again with bf16 reported unsupported (the fp16 + GradScaler branch)
#   2. ONNX Runtime CUDA vs CPU provider on the CUDA-trained bundle (bench/ort_providers.py), and
#      which session load_model keeps for lone 1-row calls (bench/single_row_choice.py)
#   3. the service on the CUDA provider (DLF_REQUIRE_PROVIDER=cuda, embedded ids) vs the same
#      service on the CPU provider, a few closed-loop cells each (bench/serving_cells.py)
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
# SKIP="1b 1c 1d" leaves those sections out (a short lease: the recipe, the providers and the
# service are what a code change can break; the epoch timings are docs/gpu.md's training table)
wanted() { case " ${SKIP:-} " in *" $1 "*) echo "(skipped: $1)"; return 1 ;; esac; }

step "host"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
BASE="/tmp/site:$PWD"
ORT_GPU_DIR=${ORT_GPU_DIR:-/tmp/ortgpu}
if [ ! -d "$ORT_GPU_DIR/onnxruntime" ] && [ -d "${ORT_GPU_PARTS:-/tmp/ortparts}" ]; then
    mkdir -p "$ORT_GPU_DIR"
    unzstd() { if command -v zstd >/dev/null; then zstd "$@"; else LD_LIBRARY_PATH=/tmp/zstd /tmp/zstd/zstd "$@"; fi; }
    # xz parts (tar | xz -9) unpack with Python's own lzma, so the host needs no xz or zstd
    unpack() { if [ "$(head -c 5 "$(ls "${ORT_GPU_PARTS:-/tmp/ortparts}"/part-* | head -n1)" | od -An -tx1 | tr -d ' ')" = fd377a585a ]; then
        python3 -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall('$ORT_GPU_DIR', filter='data')"
        else unzstd -q -d --long=27 | tar -x -C "$ORT_GPU_DIR"; fi; }
    cat "${ORT_GPU_PARTS:-/tmp/ortparts}"/part-* | unpack || echo "onnxruntime-gpu parts incomplete"
fi
GPU="$ORT_GPU_DIR:$BASE"
PYTHONPATH="$GPU" python3 -c "
import torch, onnxruntime as ort, platform
print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
      'bf16', torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None)
print('onnxruntime', ort.__version__, ort.get_available_providers())"
export DLF_BENCH_FRAPPE=${DLF_BENCH_FRAPPE:-$PWD/.gpu/frappe.dev.libfm}
DATA=$DLF_BENCH_FRAPPE
# train prints {"bundle": ...} as JSON; the bundle's metrics.json has the timings
summary() { python3 -c "
import json, sys, pathlib
out = sys.stdin.read()
m = json.loads((pathlib.Path(json.loads(out[out.index('{'):])['bundle']) / 'metrics.json').read_text())
print({k: m.get(k) for k in ('device', 'amp', 'torch', 'epochs', 'best_epoch', 'samples_per_second', 'train_wall_seconds', 'seconds_per_epoch')}, 'valid', m['valid'])"; }

step "1a. Frappe recipe, device chosen automatically"
PYTHONPATH="$GPU" python3 -m training.cli train $DATA --format frappe --registry /tmp/reg --set-current ${TRAIN_ARGS:-} \
    >"$OUT/train-gpu.json" 2>"$OUT/train-gpu.log"; echo "rc $?"
summary <"$OUT/train-gpu.json"
wanted 1b && for how in "cuda:" "cpu:--cpu --threads $(nproc)"; do
    step "1b. one epoch, ${how%%:*}"
    PYTHONPATH="$GPU" python3 -m training.cli train $DATA --format frappe --registry /tmp/reg-epoch \
        --epochs 1 --eval-every 1 ${how#*:} 2>>"$OUT/train-epoch.log" | summary
done
step "1c. one epoch under torchrun (DDP, 1 process)"
wanted 1c && PYTHONPATH="$GPU" torchrun --standalone --nproc_per_node 1 -m training.cli train $DATA --format frappe \
    --registry /tmp/reg-ddp --epochs 1 --eval-every 1 2>"$OUT/train-ddp.log" | summary

step "1d. Frappe recipe with fp16 + GradScaler (what a GPU without bf16, a T4 or V100, gets)"
wanted 1d && PYTHONPATH="$GPU" python3 -c "
import runpy, sys
import torch
torch.cuda.is_bf16_supported = lambda *a, **k: False
sys.argv = ['training.cli', 'train', '$DATA', '--format', 'frappe', '--registry', '/tmp/reg16', '--set-current', *'${TRAIN_ARGS:-}'.split()]
runpy.run_module('training.cli', run_name='__main__')" 2>"$OUT/train-fp16.log" | summary

BUNDLE=/tmp/reg/$(PYTHONPATH="$BASE" python3 -c "from service.contract import resolve_current; print(resolve_current('/tmp/reg'))")
step "2. ONNX Runtime providers on $BUNDLE"
PYTHONPATH="$GPU" python3 -m bench.ort_providers --bundle "$BUNDLE" --out "$OUT/ort-providers.md" ${PROVIDER_ARGS:-} \
    >"$OUT/ort-providers.txt" 2>&1
head -n -1 "$OUT/ort-providers.txt"
step "2b. which session serves a lone row (faster_single_row at load)"
PYTHONPATH="$GPU" python3 -m bench.single_row_choice "$BUNDLE" 2>&1 | tee "$OUT/single-row-choice.txt"

CELLS=1x1,1x32,100x8,1000x32
if grep -q "providers \[.CUDAExecutionProvider" "$OUT/ort-providers.txt"; then
    # the default (1-row calls on the CPU session), every call on CUDA, and two processes
    for run in "true 0" "false 0" "true 2"; do
        set -- $run
        step "3. service, CUDA provider, DLF_ORT_SINGLE_ROW_SESSION=$1, processes $2 (0 = one per core)"
        PYTHONPATH="$GPU" DLF_REQUIRE_PROVIDER=cuda DLF_ORT_SINGLE_ROW_SESSION=$1 timeout 150 \
            python3 -m bench.serving_cells --registry /tmp/reg --embedded --processes "$2" --cells $CELLS \
            --seconds 3 2>&1 | grep -v "cpu "
    done
fi
step "3. service, CPU provider, processes 0"
PYTHONPATH="$BASE" timeout 150 python3 -m bench.serving_cells --registry /tmp/reg --embedded --cells $CELLS \
    --seconds 3 2>&1 | grep -v "cpu "
step "done"
