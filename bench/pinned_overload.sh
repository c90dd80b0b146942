#!/usr/bin/env bash
# The overload line of docs/benchmarks.md on pinned cores of any host: is its p99 the service's,
# or the machine's? Everything (the service processes, the load client) runs under
# `taskset -c CPUS`, so with two CPUs a 16-core host behaves like the 2-core benchmark VM but with
# its own CPU steadiness (bench/machine_noise.py on the same CPUs, printed first and last).
#
#   bash bench/pinned_overload.sh REGISTRY [ROUNDS] [CPUS]     (CPUS: a taskset list, default 0-1)
#
# Per round: 100 x 8 (capacity), 100 x 1 (the unloaded p99) and an open-loop overload at twice the
# capacity just measured, each a fresh `serve` (bench/serving_cells.py; embedded ids, so no
# redis-server is needed: IDS= uses the Redis at 127.0.0.1:6379, IDS="--redis-url URL" another).
# Needs the Python dependencies importable (PYTHON, default python3) and the Frappe rows
# (DLF_BENCH_FRAPPE or ../shared/data/frappe/frappe.dev.libfm).
set -euo pipefail
REG=${1:?registry}
ROUNDS=${2:-3}
CPUS=${3:-0-1}
PY=${PYTHON:-python3}
PIN=(taskset -c "$CPUS")
cells() { "${PIN[@]}" "$PY" -m bench.serving_cells --registry "$REG" --seconds 5 ${IDS---embedded} --cells "$1"; }

"${PIN[@]}" "$PY" -m bench.machine_noise --seconds 5 | sed -n 1p
for round in $(seq "$ROUNDS"); do
    echo "=== round $round ($(date -u +%H:%M:%S))"
    capacity=$(cells 100x8 | tee /dev/stderr | sed -n 's/^service 100x8: \([0-9,]*\) rows\/s.*/\1/p' | tr -d ,)
    rate=$((capacity * 2 / 100))
    cells "100x1,100o$rate" | grep -E '^service|per 0.5'
done
"${PIN[@]}" "$PY" -m bench.machine_noise --seconds 5 | sed -n 1p
