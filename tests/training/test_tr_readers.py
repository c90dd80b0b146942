"""Each reader on a tiny fixture written here: same batch layout (label + one column per field)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.data.readers import count_rows, iter_batches
from training.data.spec import (
    CRITEO_CATEGORICAL,
    CRITEO_NUMERIC,
    FRAPPE_FIELDS,
    builtin_spec,
    load_spec,
    resolve_spec,
)


def _table(path: Path, spec) -> pa.Table:  # type: ignore[no-untyped-def]
    return pa.Table.from_batches(list(iter_batches(path, spec, block_bytes=1 << 10)))


def test_frappe_libfm(tmp_path: Path) -> None:
    path = tmp_path / "tiny.libfm"
    path.write_text(
        "1 266:1 1244:1 5042:1 5049:1 5054:1 5055:1 5058:1 5062:1 5074:1 5149:1\n"
        "-1 138:1 1296:1 5041:1 5052:1 5053:1 5055:1 5058:1 5061:1 5085:1 5201:1\n"
    )
    t = _table(path, builtin_spec("frappe"))
    assert t.column_names == ["label", *FRAPPE_FIELDS]
    assert t.column("label").to_pylist() == [1.0, 0.0]
    assert t.column("user").to_pylist() == ["266", "138"]
    assert t.column("city").to_pylist() == ["5149", "5201"]
    assert count_rows(path, builtin_spec("frappe")) == 2


def test_frappe_bad_label_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.libfm"
    path.write_text("2 1:1 2:1 3:1 4:1 5:1 6:1 7:1 8:1 9:1 10:1\n")
    with pytest.raises(ValueError, match="label column 'label' must be 0/1"):
        _table(path, builtin_spec("frappe"))


def test_criteo_tsv_with_missing(tmp_path: Path) -> None:
    rows = []
    for i in range(5):
        ints = [str(i), "", "-1", *[str(k) for k in range(10)]]
        cats = ["" if (i == 2 and k == 0) else f"{(i * 7 + k):08x}" for k in range(26)]
        rows.append("\t".join([str(i % 2), *ints, *cats]))
    path = tmp_path / "criteo.tsv"
    path.write_text("\n".join(rows) + "\n")
    spec = builtin_spec("criteo")
    t = _table(path, spec)
    assert t.column_names == ["label", *CRITEO_NUMERIC, *CRITEO_CATEGORICAL]
    assert t.num_rows == 5
    assert t.column("label").to_pylist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert t.column("I1").to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert t.column("I2").null_count == 5  # empty numeric = missing
    assert t.column("I3").to_pylist() == [-1.0] * 5
    assert t.column("C1").to_pylist()[2] == ""  # empty categorical, canonicalised to __missing__ later
    assert t.column("C2").to_pylist()[0] == "00000001"


def test_avazu_csv_derives_hour_of_day(tmp_path: Path) -> None:
    header = "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
    header += "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
    rest = "1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,a99f214a,ddd2926e,44956a24,1,2,"
    rest += "15706,320,50,1722,0,35,-1,79"
    lines = [header, f"1000009418151094273,0,14102100,{rest}", f"10000169349117863715,1,14102223,{rest}"]
    path = tmp_path / "avazu.csv"
    path.write_text("\n".join(lines) + "\n")
    spec = builtin_spec("avazu")
    t = _table(path, spec)
    assert t.column_names[:3] == ["label", "hour_of_day", "day_of_week"]
    assert "id" not in t.column_names and "hour" not in t.column_names
    assert t.column("label").to_pylist() == [0.0, 1.0]
    assert t.column("hour_of_day").to_pylist() == ["0", "23"]
    assert t.column("day_of_week").to_pylist() == ["1", "2"]  # 2014-10-21 was a Tuesday (Monday = 0)
    assert t.column("C21").to_pylist() == ["79", "79"]


def test_parquet_with_json_schema(tmp_path: Path) -> None:
    pq.write_table(
        pa.table(
            {"y": [1, 0, 1], "shop": [266, None, 3], "score": [1.5, None, 2.0], "unused": ["a", "b", "c"]}
        ),
        tmp_path / "d.parquet",
    )
    schema = tmp_path / "s.json"
    schema.write_text(
        json.dumps(
            {
                "label": "y",
                "fields": [{"name": "shop", "type": "categorical"}, {"name": "score", "type": "numeric"}],
            }
        )
    )
    spec = resolve_spec("parquet", schema)
    t = _table(tmp_path / "d.parquet", spec)
    assert t.column_names == ["label", "shop", "score"]
    assert t.column("shop").to_pylist() == [266, None, 3]  # file type kept; canonical_value applies later
    assert t.column("score").to_pylist() == [1.5, None, 2.0]
    assert count_rows(tmp_path / "d.parquet", spec) == 3


def test_csv_schema_yaml_and_errors(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("click,a,x\n1,p,0.5\n0,,\n")
    (tmp_path / "s.yaml").write_text(
        "label: click\nfields:\n  - {name: a, type: categorical, min_count: 2}\n  - {name: x, type: numeric}\n"
    )
    spec = resolve_spec("csv", tmp_path / "s.yaml")
    assert spec.min_count_of(spec.fields[0]) == 2
    t = _table(tmp_path / "d.csv", spec)
    assert t.column("a").to_pylist() == ["p", ""]
    assert t.column("x").to_pylist() == [0.5, None]
    (tmp_path / "missing.yaml").write_text("label: click\nfields:\n  - {name: nope, type: categorical}\n")
    with pytest.raises(ValueError, match="nope"):
        _table(tmp_path / "d.csv", resolve_spec("csv", tmp_path / "missing.yaml"))
    (tmp_path / "badtype.yaml").write_text("label: click\nfields:\n  - {name: a, type: text}\n")
    with pytest.raises(ValueError, match="badtype.yaml is invalid"):
        load_spec(tmp_path / "badtype.yaml")
    with pytest.raises(ValueError, match="needs a schema file"):
        resolve_spec("csv", None)


def test_csv_streams_in_many_batches(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("click,a\n" + "".join(f"{i % 2},v{i % 13}\n" for i in range(5000)))
    spec = resolve_spec("csv", _write_schema(tmp_path))
    batches = list(iter_batches(path, spec, block_bytes=4096))
    assert len(batches) > 5
    assert sum(b.num_rows for b in batches) == 5000
    assert all(b.schema.names == ["label", "a"] for b in batches)


def _write_schema(tmp_path: Path) -> Path:
    p = tmp_path / "schema.yaml"
    p.write_text("label: click\nfields:\n  - {name: a, type: categorical}\n")
    return p
