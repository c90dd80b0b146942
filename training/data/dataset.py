"""From files to encoded train/valid/test splits, streaming.

Three passes over the training file at most: count rows (only when a split
fraction is used), build vocabularies/statistics on train rows, encode. Encoded
arrays live in memory, or in ``.npy`` memmaps under ``work_dir`` for inputs larger
than memory. A split is a view (row indices) into the encoded arrays, not a copy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from training.data.readers import count_rows, iter_batches
from training.data.spec import DatasetSpec
from training.data.vocab import FeatureSpace, StatsBuilder


@dataclass
class Arrays:
    """Encoded examples: cat ids int64 [N, F_cat], numerics float32 [N, F_num], labels float32 [N]."""

    cat: np.ndarray
    num: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Split:
    """Rows ``rows`` (None = all) of ``arrays``."""

    arrays: Arrays
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.arrays) if self.rows is None else int(self.rows.shape[0])

    def take(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Examples at ``positions`` (0..len-1) of this split; sorted row access for memmaps."""
        idx = positions if self.rows is None else self.rows[positions]
        a = self.arrays
        return a.cat[idx], a.num[idx], a.y[idx]

    def labels(self) -> np.ndarray:
        return self.arrays.y if self.rows is None else self.arrays.y[self.rows]


@dataclass
class PreparedData:
    space: FeatureSpace
    train: Split
    valid: Split
    test: Split | None
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)


def fingerprint_files(paths: list[Path], extra: str = "", head_bytes: int = 1 << 20) -> str:
    """sha256 of each file's name, size, mtime and first MiB, plus ``extra`` (split settings)."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}|".encode())
        with p.open("rb") as fh:
            h.update(fh.read(head_bytes))
    h.update(extra.encode())
    return h.hexdigest()


def encode_file(
    path: str | Path,
    spec: DatasetSpec,
    space: FeatureSpace,
    *,
    n_rows: int | None = None,
    out_prefix: Path | None = None,
    progress: bool = False,
) -> Arrays:
    """Encode a whole file; with ``out_prefix`` the arrays are ``.npy`` memmaps on disk."""
    f_cat, f_num = len(space.categorical), len(space.numeric)
    if out_prefix is not None:
        n = n_rows if n_rows is not None else count_rows(path, spec)
        out_prefix.parent.mkdir(parents=True, exist_ok=True)
        arrays = Arrays(
            cat=open_memmap(f"{out_prefix}-cat.npy", mode="w+", dtype=np.int64, shape=(n, f_cat)),
            num=open_memmap(f"{out_prefix}-num.npy", mode="w+", dtype=np.float32, shape=(n, f_num)),
            y=open_memmap(f"{out_prefix}-y.npy", mode="w+", dtype=np.float32, shape=(n,)),
        )
        at = 0
        for batch in iter_batches(path, spec, progress=progress, desc=f"encode {Path(path).name}"):
            c, x, y = space.encode(batch)
            k = len(y)
            if at + k > n:
                raise ValueError(f"{path} grew while being read ({at + k} > {n} rows)")
            arrays.cat[at : at + k], arrays.num[at : at + k], arrays.y[at : at + k] = c, x, y
            at += k
        if at != n:
            raise ValueError(f"{path} shrank while being read ({at} != {n} rows)")
        return arrays
    parts = [
        space.encode(b) for b in iter_batches(path, spec, progress=progress, desc=f"encode {Path(path).name}")
    ]
    if not parts:
        raise ValueError(f"{path} holds no rows")
    return Arrays(
        cat=np.concatenate([p[0] for p in parts]),
        num=np.concatenate([p[1] for p in parts]),
        y=np.concatenate([p[2] for p in parts]),
    )


def split_rows(n: int, valid_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """The Frappe protocol: permute with ``default_rng(seed)``; first part train, then valid, then test."""
    if not 0 < valid_fraction < 1 or not 0 <= test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise ValueError(f"bad split fractions valid={valid_fraction} test={test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(n * (1.0 - valid_fraction - test_fraction))
    n_valid = n - n_train if test_fraction == 0 else int(n * valid_fraction)
    return perm[:n_train], perm[n_train : n_train + n_valid], perm[n_train + n_valid :]


def prepare_data(
    train_path: str | Path,
    spec: DatasetSpec,
    *,
    valid_path: str | Path | None = None,
    test_path: str | Path | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.0,
    split_seed: int = 2024,
    work_dir: str | Path | None = None,
    progress: bool = False,
) -> PreparedData:
    """Read, split, build vocab/statistics on train only, and encode every split."""
    train_path = Path(train_path)
    wd = Path(work_dir) if work_dir is not None else None
    sb = StatsBuilder(spec)
    info: dict[str, Any] = {"train_path": str(train_path), "format": spec.format}
    if valid_path is None:
        n = count_rows(train_path, spec, progress=progress)
        tr, va, te = split_rows(n, valid_fraction, test_fraction, split_seed)
        is_train = np.zeros(n, dtype=bool)
        is_train[tr] = True
        at = 0
        for batch in iter_batches(train_path, spec, progress=progress, desc="vocab"):
            sb.update(batch, is_train[at : at + batch.num_rows])
            at += batch.num_rows
        space = sb.finish()
        full = encode_file(
            train_path, spec, space, n_rows=n, out_prefix=wd / "all" if wd else None, progress=progress
        )
        # Sorted rows inside each split: same examples, friendlier to memmaps.
        train, valid = Split(full, np.sort(tr)), Split(full, np.sort(va))
        test = Split(full, np.sort(te)) if len(te) else None
        info |= {"split": "fraction", "valid_fraction": valid_fraction, "test_fraction": test_fraction}
        info |= {"split_seed": split_seed}
    else:
        for batch in iter_batches(train_path, spec, progress=progress, desc="vocab"):
            sb.update(batch)
        space = sb.finish()
        enc = {"progress": progress}
        train = Split(encode_file(train_path, spec, space, out_prefix=wd / "train" if wd else None, **enc))
        valid = Split(encode_file(valid_path, spec, space, out_prefix=wd / "valid" if wd else None, **enc))
        test = (
            Split(encode_file(test_path, spec, space, out_prefix=wd / "test" if wd else None, **enc))
            if test_path is not None
            else None
        )
        info |= {
            "split": "files",
            "valid_path": str(valid_path),
            "test_path": str(test_path) if test_path else None,
        }
    paths = [train_path] + [Path(p) for p in (valid_path, test_path) if p is not None]
    extra = f"{info.get('split')}|{valid_fraction}|{test_fraction}|{split_seed}"
    info |= {"rows": {"train": len(train), "valid": len(valid), "test": len(test) if test else 0}}
    return PreparedData(space, train, valid, test, fingerprint_files(paths, extra), info)
