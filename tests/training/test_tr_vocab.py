"""Vocabulary (train only, min count, OOV id 0, missing values) and numeric statistics."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from service.contract import MISSING_TOKEN, canonical_value
from training.data.spec import DatasetSpec, FieldSpec
from training.data.vocab import StatsBuilder, build_feature_space, canonical, normalise


def _batch(**cols: list) -> pa.RecordBatch:  # type: ignore[type-arg]
    n = len(next(iter(cols.values())))
    return pa.RecordBatch.from_pydict(
        {"label": pa.array([1.0, 0.0] * (n // 2) + [1.0] * (n % 2), pa.float32()), **cols}
    )


def test_canonical_matches_bundle_canonical_value() -> None:
    raw = [266, None, 3, 266]
    assert (
        canonical(pa.array(raw)).to_pylist()
        == [canonical_value(v) for v in raw]
        == ["266", MISSING_TOKEN, "3", "266"]
    )
    floats = [266.0, float("nan"), 1.5, None]
    assert canonical(pa.array(floats, from_pandas=True)).to_pylist() == [canonical_value(v) for v in floats]
    strings = ["a", "", None, "266"]
    assert canonical(pa.array(strings)).to_pylist() == ["a", MISSING_TOKEN, MISSING_TOKEN, "266"]
    assert canonical(pa.array([True, False])).to_pylist() == ["true", "false"]


def test_min_count_oov_and_missing() -> None:
    spec = DatasetSpec(
        label="y",
        fields=[
            FieldSpec(name="a", type="categorical", min_count=2),
            FieldSpec(name="b", type="categorical"),
        ],
    )
    train = _batch(
        a=["x", "x", "y", "", "", None, "z", "z", "z"], b=["1", "2", "3", "4", "5", "6", "7", "8", "9"]
    )
    space = build_feature_space([train], spec)
    # kept: z (3), __missing__ (3: two empty strings + one null), x (2); y (1) is below min_count
    assert space.vocabs["a"] == [MISSING_TOKEN, "z", "x"]  # count desc, then value
    fa = space.categorical[0]
    assert (fa.vocab_size, fa.oov_id, fa.vocab_file) == (4, 0, "vocab/a.json")
    assert space.categorical[1].vocab_size == 10
    cat, num, y = space.encode(
        _batch(a=["z", "y", "never-seen", None, "", "x"], b=["1", "1", "1", "1", "1", "1"])
    )
    assert cat.dtype == np.int64 and cat.shape == (6, 2) and num.shape == (6, 0)
    assert cat[:, 0].tolist() == [2, 0, 0, 1, 1, 3]  # y and unseen -> OOV 0, missing -> its own id
    assert y.dtype == np.float32


def test_missing_below_min_count_goes_to_oov() -> None:
    spec = DatasetSpec(fields=[FieldSpec(name="a", type="categorical", min_count=2)])
    space = build_feature_space([_batch(a=["x", "x", None])], spec)
    assert space.vocabs["a"] == ["x"]
    cat, _, _ = space.encode(_batch(a=[None, "x"]))
    assert cat[:, 0].tolist() == [0, 1]


def test_mask_keeps_only_train_rows() -> None:
    spec = DatasetSpec(fields=[FieldSpec(name="a", type="categorical")])
    sb = StatsBuilder(spec)
    sb.update(_batch(a=["train", "valid"]), np.array([True, False]))
    space = sb.finish()
    assert space.vocabs["a"] == ["train"]
    assert sb.rows == 1


def test_numeric_stats_log1p_identity_and_fill() -> None:
    spec = DatasetSpec(
        fields=[
            FieldSpec(name="pos", type="numeric"),  # auto -> log1p (min >= 0)
            FieldSpec(name="neg", type="numeric"),  # auto -> identity (negative values)
            FieldSpec(name="const", type="numeric", transform="identity"),
        ]
    )
    pos = [0.0, 1.0, 3.0, None, 7.0]
    neg = [-2.0, 0.0, 2.0, 4.0, None]
    space = build_feature_space([_batch(pos=pos, neg=neg, const=[5.0] * 5)], spec)
    fpos, fneg, fconst = space.numeric
    lx = np.log1p([0.0, 1.0, 3.0, 7.0])
    assert fpos.transform == "log1p"
    assert fpos.mean == pytest.approx(lx.mean()) and fpos.std == pytest.approx(lx.std())
    assert fneg.transform == "identity"
    assert fneg.mean == pytest.approx(1.0) and fneg.std == pytest.approx(math.sqrt(5.0))
    assert fconst.std == 1.0  # zero variance does not divide by zero
    _, num, _ = space.encode(_batch(pos=[3.0, None], neg=[1.0, float("inf")], const=[5.0, 5.0]))
    assert num.dtype == np.float32
    assert num[0, 0] == pytest.approx((math.log1p(3.0) - fpos.mean) / fpos.std, rel=1e-6)
    assert num[1].tolist() == [0.0, 0.0, 0.0]  # missing / inf -> fill
    assert normalise(np.array([-5.0]), fpos).tolist() == [0.0]  # log1p undefined -> fill


def test_log1p_on_negative_train_values_is_an_error() -> None:
    spec = DatasetSpec(fields=[FieldSpec(name="x", type="numeric", transform="log1p")])
    with pytest.raises(ValueError, match="field 'x': transform log1p"):
        build_feature_space([_batch(x=[-3.0, 1.0])], spec)


def test_empty_train_is_an_error() -> None:
    spec = DatasetSpec(fields=[FieldSpec(name="a", type="categorical")])
    with pytest.raises(ValueError, match="no training rows"):
        build_feature_space([], spec)
