"""prepare_data: separate valid/test files, memmapped encoding for large inputs, fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.dataset import fingerprint_files, prepare_data
from training.data.spec import resolve_spec
from training.data.synthetic import generate


def test_memmap_encoding_equals_in_memory(tmp_path: Path) -> None:
    syn = generate(tmp_path / "d", rows=600, seed=1)
    spec = resolve_spec("csv", syn.schema)
    mem = prepare_data(syn.data, spec, valid_fraction=0.2, split_seed=5)
    disk = prepare_data(syn.data, spec, valid_fraction=0.2, split_seed=5, work_dir=tmp_path / "work")
    assert isinstance(disk.train.arrays.cat, np.memmap)
    assert (tmp_path / "work" / "all-cat.npy").exists()
    for a, b in ((mem.train, disk.train), (mem.valid, disk.valid)):
        pos = np.arange(len(a))
        for x, y in zip(a.take(pos), b.take(pos), strict=True):
            np.testing.assert_array_equal(x, y)
    assert mem.space.vocabs == disk.space.vocabs
    assert mem.fingerprint == disk.fingerprint


def test_separate_valid_and_test_files(tmp_path: Path) -> None:
    tr = generate(tmp_path / "tr", rows=500, seed=1)
    va = generate(tmp_path / "va", rows=200, seed=2)
    te = generate(tmp_path / "te", rows=100, seed=3)
    spec = resolve_spec("csv", tr.schema)
    data = prepare_data(tr.data, spec, valid_path=va.data, test_path=te.data)
    assert (len(data.train), len(data.valid), len(data.test or [])) == (500, 200, 100)
    assert data.info["split"] == "files"
    # vocabulary from train only: users seen only in valid are OOV there
    train_users = set(data.space.vocabs["user"])
    assert data.space.categorical[0].vocab_size == len(train_users) + 1
    # a different valid file changes the fingerprint
    other = prepare_data(tr.data, spec, valid_path=te.data)
    assert other.fingerprint != data.fingerprint


def test_fingerprint_tracks_content(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("click,a\n1,x\n")
    a = fingerprint_files([p])
    p.write_text("click,a\n0,x\n")
    assert fingerprint_files([p]) != a and len(a) == 64
