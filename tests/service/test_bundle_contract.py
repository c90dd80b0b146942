"""The bundle contract shared by training (writer) and serving (reader)."""

import math

import numpy as np
import pytest

from service.contract import (
    MISSING_TOKEN,
    BundleSchema,
    FieldSchema,
    atomic_write_text,
    canonical_value,
    list_versions,
    load_schema,
    read_current,
    resolve_current,
    write_current,
)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("266", "266"),
        (266, "266"),
        (266.0, "266"),
        (np.int64(266), "266"),
        (np.float32(2.5), "2.5"),
        (2.5, "2.5"),
        (True, "true"),
        (None, MISSING_TOKEN),
        ("", MISSING_TOKEN),
        (math.nan, MISSING_TOKEN),
        ("abc", "abc"),
    ],
)
def test_canonical_value_maps_equivalent_raw_values_to_one_key(raw, key):
    assert canonical_value(raw) == key


def _schema(version: str) -> BundleSchema:
    return BundleSchema(
        version=version,
        model_name="dlf",
        fields=[
            FieldSchema("user", "categorical", 0, vocab_size=3, vocab_file="vocab/user.json"),
            FieldSchema("price", "numeric", 0, transform="log1p", mean=1.0, std=2.0),
        ],
    )


def _write_bundle(registry, version: str) -> None:
    atomic_write_text(registry / version / "schema.json", _schema(version).to_json())


def test_schema_round_trips_through_json(tmp_path):
    version = "20261123T101500123456Z-0123abcd"
    _write_bundle(tmp_path, version)
    loaded = load_schema(tmp_path / version)
    assert loaded == _schema(version)
    assert [f.name for f in loaded.categorical] == ["user"]
    assert [f.name for f in loaded.numeric] == ["price"]


def test_unknown_format_version_is_refused(tmp_path):
    data = _schema("v").to_json().replace('"format_version": 1', '"format_version": 99')
    atomic_write_text(tmp_path / "schema.json", data)
    with pytest.raises(ValueError, match="format_version"):
        load_schema(tmp_path)


def test_registry_lists_complete_versions_in_time_order_and_ignores_temp_dirs(tmp_path):
    old, new = "20261123T101500000000Z-aaaaaaaa", "20261124T000000000000Z-bbbbbbbb"
    _write_bundle(tmp_path, new)
    _write_bundle(tmp_path, old)
    (tmp_path / f".tmp-{new}").mkdir()
    (tmp_path / "20261125T000000000000Z-cccccccc").mkdir()  # no schema.json: incomplete
    assert list_versions(tmp_path) == [old, new]
    assert read_current(tmp_path) is None
    assert resolve_current(tmp_path) == new
    write_current(tmp_path, old)
    assert read_current(tmp_path) == old
    assert resolve_current(tmp_path) == old
    with pytest.raises(FileNotFoundError):
        write_current(tmp_path, "20261126T000000000000Z-dddddddd")
    assert read_current(tmp_path) == old
