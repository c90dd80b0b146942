"""Streaming readers: every format becomes the same Arrow record batches.

Each batch has a float32 ``label`` column (0/1) and one column per field of the
``DatasetSpec`` in spec order: numeric fields as float64 (null = missing),
categorical fields as strings (CSV-like formats) or the file's own type (Parquet);
``vocab.canonical`` turns either into vocabulary keys. Files are read in chunks
(pyarrow.csv.open_csv / ParquetFile.iter_batches), never loaded whole, so inputs
larger than memory work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from training.data.spec import (
    AVAZU_RAW_CATEGORICAL,
    CRITEO_CATEGORICAL,
    CRITEO_NUMERIC,
    FRAPPE_FIELDS,
    DatasetSpec,
)

DEFAULT_BLOCK_BYTES = 16 << 20
LABEL = "label"


def iter_batches(
    path: str | Path,
    spec: DatasetSpec,
    *,
    columns: list[str] | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool = False,
    desc: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield normalised batches of ``path``; ``columns`` limits the fields read (label always kept)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    wanted = [f.name for f in spec.fields] if columns is None else list(columns)
    unknown = sorted(set(wanted) - {f.name for f in spec.fields})
    if unknown:
        raise ValueError(f"columns {unknown} are not fields of the data set")
    fmt = spec.format or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    raw = {
        "frappe": _frappe,
        "criteo": _criteo,
        "avazu": _avazu,
        "csv": _csv,
        "parquet": _parquet,
    }[fmt](path, spec, wanted, block_bytes)
    total = pq.ParquetFile(path).metadata.num_rows if fmt == "parquet" else None
    bar = tqdm(total=total, unit="rows", unit_scale=True, desc=desc or path.name, disable=not progress)
    try:
        for batch in raw:
            bar.update(batch.num_rows)
            yield batch
    finally:
        bar.close()


def count_rows(path: str | Path, spec: DatasetSpec, *, progress: bool = False) -> int:
    """Number of examples (streams the label column only)."""
    if (spec.format or "") == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return sum(b.num_rows for b in iter_batches(path, spec, columns=[], progress=progress, desc="count"))


# --- helpers ---------------------------------------------------------------------


def _open_csv(
    path: Path,
    *,
    delimiter: str,
    names: list[str] | None,
    include: list[str],
    types: dict[str, pa.DataType],
    block_bytes: int,
) -> pacsv.CSVStreamingReader:
    read = pacsv.ReadOptions(block_size=block_bytes, column_names=names, use_threads=True)
    parse = pacsv.ParseOptions(delimiter=delimiter)
    convert = pacsv.ConvertOptions(include_columns=include, column_types=types, strings_can_be_null=False)
    try:
        return pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowKeyError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e


def _stream(reader: pacsv.CSVStreamingReader, path: Path) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as e:
            raise ValueError(f"bad row in {path}: {e}") from e
        if batch.num_rows:
            yield batch


def _label(col: pa.Array, name: str, path: Path) -> pa.Array:
    """0/1 float32 labels; -1 (libfm negatives) maps to 0; anything else is an error."""
    if col.null_count:
        raise ValueError(f"{path}: label column {name!r} has {col.null_count} missing values")
    col = pc.cast(col, pa.float64()) if not pa.types.is_floating(col.type) else col
    col = pc.if_else(pc.equal(col, -1.0), 0.0, col)
    bad = pc.invert(pc.is_in(col, value_set=pa.array([0.0, 1.0])))
    if pc.any(bad).as_py():
        example = pc.filter(col, bad)[0].as_py()
        raise ValueError(f"{path}: label column {name!r} must be 0/1 (or -1 for negatives), got {example!r}")
    return pc.cast(col, pa.float32())


def _assemble(label: pa.Array, cols: dict[str, pa.Array], wanted: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([label, *(cols[n] for n in wanted)], names=[LABEL, *wanted])


def _types(spec: DatasetSpec, names: list[str]) -> dict[str, pa.DataType]:
    kinds = {f.name: f.type for f in spec.fields}
    return {n: (pa.float64() if kinds[n] == "numeric" else pa.string()) for n in names}


# --- formats ---------------------------------------------------------------------


def _frappe(path: Path, spec: DatasetSpec, wanted: list[str], block_bytes: int) -> Iterator[pa.RecordBatch]:
    """libfm: ``LABEL idx:1 ... idx:1``; the token's position is the field, idx its value."""
    names = [LABEL, *FRAPPE_FIELDS]
    types = {n: pa.string() for n in names}
    reader = _open_csv(
        path, delimiter=" ", names=names, include=[LABEL, *wanted], types=types, block_bytes=block_bytes
    )
    for batch in _stream(reader, path):
        cols = {
            n: pc.replace_substring_regex(batch.column(n), pattern=r":[^:]*$", replacement="") for n in wanted
        }
        yield _assemble(_label(batch.column(LABEL), LABEL, path), cols, wanted)


def _criteo(path: Path, spec: DatasetSpec, wanted: list[str], block_bytes: int) -> Iterator[pa.RecordBatch]:
    """Criteo TSV without header: label, I1..I13 (integers), C1..C26 (hex strings); empty = missing."""
    names = [LABEL, *CRITEO_NUMERIC, *CRITEO_CATEGORICAL]
    types = {LABEL: pa.float64(), **_types(spec, names[1:])}
    reader = _open_csv(
        path, delimiter="\t", names=names, include=[LABEL, *wanted], types=types, block_bytes=block_bytes
    )
    for batch in _stream(reader, path):
        cols = {n: batch.column(n) for n in wanted}
        yield _assemble(_label(batch.column(LABEL), LABEL, path), cols, wanted)


def _avazu(path: Path, spec: DatasetSpec, wanted: list[str], block_bytes: int) -> Iterator[pa.RecordBatch]:
    """Avazu CSV with header; ``hour`` (YYMMDDHH) becomes hour_of_day and day_of_week."""
    raw = [n for n in wanted if n in AVAZU_RAW_CATEGORICAL]
    need_hour = any(n in ("hour_of_day", "day_of_week") for n in wanted)
    include = ["click", *raw, *(["hour"] if need_hour else [])]
    types = {n: pa.string() for n in include if n != "click"} | {"click": pa.float64()}
    reader = _open_csv(path, delimiter=",", names=None, include=include, types=types, block_bytes=block_bytes)
    for batch in _stream(reader, path):
        cols = {n: batch.column(n) for n in raw}
        if need_hour:
            hour = batch.column("hour")
            try:
                ts = pc.strptime(hour, format="%y%m%d%H", unit="s")
            except pa.ArrowInvalid as e:
                raise ValueError(f"{path}: column 'hour' must be YYMMDDHH: {e}") from e
            cols["hour_of_day"] = pc.cast(pc.hour(ts), pa.string())
            cols["day_of_week"] = pc.cast(pc.day_of_week(ts), pa.string())
        yield _assemble(_label(batch.column("click"), "click", path), cols, wanted)


def _csv(path: Path, spec: DatasetSpec, wanted: list[str], block_bytes: int) -> Iterator[pa.RecordBatch]:
    """CSV with a header row, described by a schema file."""
    types = {spec.label: pa.float64(), **_types(spec, wanted)}
    reader = _open_csv(
        path,
        delimiter=spec.delimiter,
        names=None,
        include=[spec.label, *wanted],
        types=types,
        block_bytes=block_bytes,
    )
    present = set(reader.schema.names)
    missing = [n for n in [spec.label, *wanted] if n not in present]
    if missing:
        raise ValueError(f"{path}: columns {missing} named in the schema are not in the file")
    for batch in _stream(reader, path):
        cols = {n: batch.column(n) for n in wanted}
        yield _assemble(_label(batch.column(spec.label), spec.label, path), cols, wanted)


def _parquet(path: Path, spec: DatasetSpec, wanted: list[str], block_bytes: int) -> Iterator[pa.RecordBatch]:
    """Parquet described by a schema file; categorical columns keep the file's type."""
    pf = pq.ParquetFile(path)
    present = set(pf.schema_arrow.names)
    missing = [n for n in [spec.label, *wanted] if n not in present]
    if missing:
        raise ValueError(f"{path}: columns {missing} named in the schema are not in the file")
    kinds = {f.name: f.type for f in spec.fields}
    rows = max(1024, block_bytes // 256)
    for batch in pf.iter_batches(batch_size=rows, columns=[spec.label, *wanted]):
        cols = {}
        for n in wanted:
            col = batch.column(n)
            if kinds[n] == "numeric":
                try:
                    col = pc.cast(col, pa.float64())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise ValueError(f"{path}: numeric field {n!r} has non-numeric type {col.type}") from e
            cols[n] = col
        yield _assemble(_label(batch.column(spec.label), spec.label, path), cols, wanted)
