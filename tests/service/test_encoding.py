"""Validation and encoding of raw records (no I/O, no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.contract import BundleSchema
from service.encoding import EncodingError, assign_ids, parse_records
from service.testing import TINY_VOCAB, tiny_fields

SCHEMA = BundleSchema(version="v", model_name="tiny", fields=tiny_fields())
GOOD = {"user": "u1", "item": 266, "daytime": "night", "city": "paris", "price": 3.5, "rating": 4}
IDS = {name: {v: i + 1 for i, v in enumerate(vocab)} for name, vocab in TINY_VOCAB.items()}


def parse(records, **kw):
    return parse_records(records, SCHEMA, max_rows=kw.pop("max_rows", 10), **kw)


def test_numeric_normalisation_and_fill() -> None:
    parsed = parse([GOOD, {**GOOD, "price": None, "rating": "2.5"}])
    price, rating = SCHEMA.numeric
    assert parsed.numerics.dtype == np.float32
    assert parsed.numerics[0, 0] == pytest.approx((math.log1p(3.5) - price.mean) / price.std)
    assert parsed.numerics[0, 1] == pytest.approx((4 - rating.mean) / rating.std)
    assert parsed.numerics[1, 0] == price.fill  # missing -> fill (already normalised)
    assert parsed.numerics[1, 1] == pytest.approx((2.5 - rating.mean) / rating.std)  # numeric string accepted


def test_categorical_keys_are_canonical() -> None:
    parsed = parse([GOOD, {**GOOD, "item": "266"}, {**GOOD, "item": 266.0}, {**GOOD, "daytime": None}])
    item = [f.name for f in SCHEMA.categorical].index("item")
    daytime = [f.name for f in SCHEMA.categorical].index("daytime")
    assert parsed.cat_keys[item][:3] == ["266", "266", "266"]
    assert parsed.cat_keys[daytime][3] == "__missing__"
    assert parsed.unique_keys()["item"] == {"266"}


def test_assign_ids_counts_oov_per_field() -> None:
    parsed = parse([GOOD, {**GOOD, "user": "stranger", "city": "rome"}, {**GOOD, "user": "nobody"}])
    cat_ids, oov = assign_ids(parsed, IDS)
    assert cat_ids.dtype == np.int64 and cat_ids.shape == (3, 4)
    assert cat_ids[0].tolist() == [1, 1, 3, 1]  # u1, "266", night, paris (ids = position + 1)
    assert cat_ids[1, 0] == 0 and cat_ids[1, 3] == 0
    assert oov == {"user": 2, "city": 1}


def test_extra_fields_are_ignored_and_bool_category_is_a_key() -> None:
    parsed = parse([{**GOOD, "unused": [1, 2], "city": True}])
    assert parsed.cat_keys[3] == ["true"]


@pytest.mark.parametrize(
    ("record", "field", "fragment"),
    [
        ({k: v for k, v in GOOD.items() if k != "user"}, "user", "missing"),
        ({k: v for k, v in GOOD.items() if k != "price"}, "price", "missing"),
        ({**GOOD, "price": "cheap"}, "price", "expected a number, got string 'cheap'"),
        ({**GOOD, "price": True}, "price", "expected a number, got boolean"),
        ({**GOOD, "rating": [1]}, "rating", "expected a number, got list"),
        ({**GOOD, "rating": float("nan")}, "rating", "finite"),
        ({**GOOD, "rating": float("inf")}, "rating", "finite"),
        ({**GOOD, "rating": "-inf"}, "rating", "finite"),
        ({**GOOD, "rating": 10**400}, "rating", "expected a number"),
        ({**GOOD, "price": -1}, "price", "> -1"),
        ({**GOOD, "item": {"id": 1}}, "item", "expected a string or number, got object"),
    ],
)
def test_bad_values_name_record_and_field(record: dict, field: str, fragment: str) -> None:
    with pytest.raises(EncodingError) as info:
        parse([GOOD, record])
    (err,) = info.value.errors
    assert (err.record, err.field) == (1, field)
    assert fragment in err.message
    assert f"record 1, field {field!r}" in str(info.value)


def test_row_count_limits_and_label() -> None:
    with pytest.raises(EncodingError, match="no candidates"):
        parse([], row_label="candidate")
    with pytest.raises(EncodingError, match="too many records: 11 > max 10"):
        parse([GOOD] * 11)
    with pytest.raises(EncodingError, match="candidate 0, field 'city'"):
        parse([{k: v for k, v in GOOD.items() if k != "city"}], row_label="candidate")


def test_errors_are_collected_but_capped() -> None:
    with pytest.raises(EncodingError) as info:
        parse([{}] * 10)
    assert len(info.value.errors) == 20  # 6 per record; capped, not one per value of a huge request
    assert {e.record for e in info.value.errors} == {0, 1, 2, 3}


def test_column_fast_path_equals_the_per_value_rules() -> None:
    from service.encoding import categorical_key, numeric_value

    rng = np.random.default_rng(0)
    records = [
        {
            "user": str(rng.choice(["u1", "u2", "zz", ""])),
            "item": [266, 1.5, "abc", 267.0][i % 4],
            "daytime": "night",
            "city": "oslo",
            "price": float(rng.gamma(2.0, 3.0)),
            "rating": int(rng.integers(-5, 6)),
        }
        for i in range(50)
    ]
    parsed = parse(records, max_rows=100)
    for j, f in enumerate(SCHEMA.categorical):
        assert parsed.cat_keys[j] == [categorical_key(r[f.name]) for r in records]
    for j, f in enumerate(SCHEMA.numeric):
        want = np.array([numeric_value(r[f.name], f) for r in records], dtype=np.float32)
        np.testing.assert_allclose(parsed.numerics[:, j], want, rtol=1e-6)
