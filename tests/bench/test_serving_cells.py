"""bench/serving_cells.py: the cell spec and the per-thread CPU reading it reports."""

from __future__ import annotations

import os
import threading
import time

import pytest

from bench.serving_cells import parse_cells, thread_cpu


def test_cells_spec_reads_closed_and_open_loop_cells() -> None:
    assert parse_cells("1x32,100o400.5") == [(1, 32, 0.0), (100, 512, 400.5)]
    with pytest.raises(ValueError):
        parse_cells("100")


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc (Linux)")
def test_thread_cpu_sees_a_busy_thread_of_this_process() -> None:
    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            pass

    worker = threading.Thread(target=spin)
    worker.start()
    before = thread_cpu()
    time.sleep(0.2)
    after = thread_cpu()  # while it still runs: a finished thread leaves /proc
    done.set()
    worker.join()
    mine = {k: v - before.get(k, 0) for k, v in after.items() if k[1] == f"thread {worker.native_id}"}
    assert mine, sorted(k for k in after if "thread" in k[1])[:3]
    assert sum(mine.values()) >= 5  # >= 0.05 s of CPU ticks (100 Hz) in a 0.2 s window of a spinning thread
