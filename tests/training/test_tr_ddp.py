"""DDP: two torchrun ranks on the CPU (gloo) train a tiny DLF and end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_two_ranks_train_on_different_rows_and_end_identical(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "training")]),
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",  # rank-to-rank traffic stays on the loopback interface
        "MASTER_ADDR": "127.0.0.1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(ROOT / "tests/training/ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # DistributedSampler gave the ranks disjoint halves of the training rows
    rows0, rows1 = set(r0["rows_epoch0"]), set(r1["rows_epoch0"])
    assert rows0 and rows1 and not rows0 & rows1 and len(rows0 | rows1) == 384
    # same start, and training really moved the weights
    for name, value in r0["initial"].items():
        assert torch.equal(value, r1["initial"][name]), name
    moved = [
        n for n, v in r0["final"].items() if v.is_floating_point() and not torch.equal(v, r0["initial"][n])
    ]
    assert moved, "no parameter changed during training"
    # gradient all-reduce kept the replicas bit-identical
    assert r0["final"].keys() == r1["final"].keys()
    for name, value in r0["final"].items():
        assert torch.equal(value, r1["final"][name]), f"ranks disagree on {name}"
    assert len(r0["history"]) == len(r1["history"]) == 3
