"""``collect``: join logged impressions with their feedback into labelled Parquet shards.

Reads the impression stream ``<prefix>impressions`` from just after the last
position consumed (kept in ``<out>/collect-state.json``) up to the newest entry
that is older than the label window by Redis' own clock, so every impression
read has had its full window to collect a click. For each impression (one row of
a logged request) the label is 1 iff a ``clicked: true`` event was stored for it
(``<prefix>fb:{batch}``) no later than ``label_window_s`` after it was served;
otherwise 0 (no feedback, explicit non-click, or a click after the window).

Rows are written with the serving bundle's schema (label column named like the
bundle's label, categorical fields as canonical strings, numeric fields as
float64 with null = missing) plus ``impression_id``, ``model_version``,
``probability`` and ``served_at_ms``. Each shard goes to a temp name and is
renamed into place, then the state file (shards + last stream id) is replaced
atomically; files not listed in the state are not part of the data set, so a
crash between the two leaves no duplicate behind. A second run with nothing new
adds nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import redis
import yaml

from service.contract import (
    BundleSchema,
    atomic_write_text,
    canonical_value,
    feedback_key,
    impressions_stream_key,
    load_schema,
    resolve_current,
)

log = logging.getLogger("training")

STATE_FILE = "collect-state.json"
SCHEMA_FILE = "schema.yaml"
META_COLUMNS = ("impression_id", "model_version", "probability", "served_at_ms")


@dataclass
class CollectResult:
    out_dir: Path
    new_shards: list[str] = field(default_factory=list)
    rows: int = 0
    positives: int = 0
    last_id: str = "0-0"
    cutoff_ms: int = 0
    trimmed_gap: bool = False  # the stream was trimmed past our position: some impressions were lost

    def summary(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "new_shards": self.new_shards,
            "rows": self.rows,
            "positives": self.positives,
            "last_id": self.last_id,
            "cutoff_ms": self.cutoff_ms,
            "trimmed_gap": self.trimmed_gap,
        }


def read_state(out_dir: str | Path) -> dict[str, Any]:
    """The state file (shards + position), or an empty state for a fresh directory."""
    path = Path(out_dir) / STATE_FILE
    if not path.exists():
        return {"stream": None, "last_id": "0-0", "shards": []}
    return json.loads(path.read_text())


def shard_paths(out_dir: str | Path) -> list[Path]:
    """The shards that belong to the data set (those listed in the state file), oldest first."""
    return [Path(out_dir) / s["file"] for s in read_state(out_dir)["shards"]]


def spec_dict(schema: BundleSchema) -> dict[str, Any]:
    """A training schema file (training/spec.py format) describing shards of this bundle's fields."""
    fields: list[dict[str, Any]] = []
    for f in schema.fields:
        if f.kind == "categorical":
            fields.append({"name": f.name, "type": "categorical"})
        else:
            fields.append({"name": f.name, "type": "numeric", "transform": f.transform})
    return {"label": schema.label, "fields": fields}


def _numeric(value: Any) -> float | None:
    """The raw value the service accepted, as float64 (None/empty/non-finite = missing)."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _label(fb: str | None, served_ms: int, window_ms: int) -> int:
    """1 iff the stored feedback is a click that came within the window."""
    if fb is None:
        return 0
    clicked, _, at = fb.partition(":")
    return int(clicked == "1" and int(at) - served_ms <= window_ms)


def _arrow_schema(schema: BundleSchema) -> pa.Schema:
    cols = [pa.field(schema.label, pa.int64())]
    for f in schema.fields:
        cols.append(pa.field(f.name, pa.string() if f.kind == "categorical" else pa.float64()))
    cols += [
        pa.field("impression_id", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("probability", pa.float64()),
        pa.field("served_at_ms", pa.int64()),
    ]
    return pa.schema(cols)


def _rows_of(
    entries: list[tuple[str, dict[str, str]]],
    feedback: list[dict[str, str]],
    schema: BundleSchema,
    window_ms: int,
    columns: dict[str, list[Any]],
) -> None:
    for (_, e), fb in zip(entries, feedback, strict=True):
        served = int(e["t"])
        probs = json.loads(e["p"])
        for i, row in enumerate(json.loads(e["rows"])):
            columns[schema.label].append(_label(fb.get(str(i)), served, window_ms))
            for f in schema.fields:
                raw = row.get(f.name)
                columns[f.name].append(canonical_value(raw) if f.kind == "categorical" else _numeric(raw))
            columns["impression_id"].append(f"{e['b']}-{i}")
            columns["model_version"].append(e["v"])
            columns["probability"].append(float(probs[i]))
            columns["served_at_ms"].append(served)


def _write_shard(out_dir: Path, name: str, columns: dict[str, list[Any]], schema: pa.Schema) -> None:
    table = pa.table(columns, schema=schema)
    tmp = out_dir / f".{name}.tmp{os.getpid()}"
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out_dir / name)
    finally:
        tmp.unlink(missing_ok=True)


def collect(
    redis_url: str,
    out_dir: str | Path,
    *,
    registry: str | Path | None = None,
    bundle: str | Path | None = None,
    prefix: str = "dlf:",
    label_window_s: float = 3600.0,
    page: int = 1000,
    shard_rows: int = 1_000_000,
    cluster: bool = False,
) -> CollectResult:
    """Append the impressions whose label window has closed as new shards of ``out_dir``."""
    if label_window_s < 0:
        raise ValueError(f"label window must be >= 0 seconds, got {label_window_s}")
    if bundle is None:
        if registry is None:
            raise ValueError("give the bundle (--bundle) or the registry whose CURRENT bundle to use")
        version = resolve_current(registry)
        if version is None:
            raise FileNotFoundError(f"no bundle in registry {registry}")
        bundle = Path(registry) / version
    schema = load_schema(bundle)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = read_state(out)
    stream = impressions_stream_key(prefix)
    if state["stream"] not in (None, stream):
        raise ValueError(f"{out} collects {state['stream']!r}, not {stream!r}: use another directory")
    spec = spec_dict(schema)
    spec_path = out / SCHEMA_FILE
    if spec_path.exists() and yaml.safe_load(spec_path.read_text()) != spec:
        raise ValueError(f"{out} holds shards of other fields than bundle {schema.version}")
    atomic_write_text(spec_path, yaml.safe_dump(spec, sort_keys=False))
    window_ms = int(label_window_s * 1000)
    arrow_schema = _arrow_schema(schema)
    result = CollectResult(out, last_id=state["last_id"])

    client_cls = redis.RedisCluster if cluster else redis.Redis  # cluster: keys of many slots
    with client_cls.from_url(redis_url, decode_responses=True, socket_timeout=30) as client:
        seconds, micros = client.time()
        result.cutoff_ms = seconds * 1000 + micros // 1000 - window_ms
        first = client.xrange(stream, count=1)
        if first and state["last_id"] != "0-0" and _id_key(first[0][0]) > _id_key(state["last_id"]):
            result.trimmed_gap = True
            log.warning(
                "stream %s was trimmed past %s: impressions in between are lost", stream, state["last_id"]
            )
        columns: dict[str, list[Any]] = {name: [] for name in arrow_schema.names}
        start = f"({state['last_id']}" if state["last_id"] != "0-0" else "-"
        end = str(result.cutoff_ms)
        pending_last = state["last_id"]
        while True:
            entries = client.xrange(stream, min=start, max=end, count=page)
            if not entries:
                break
            with client.pipeline(transaction=False) as pipe:
                for _, e in entries:
                    pipe.hgetall(feedback_key(prefix, e["b"]))
                feedback = pipe.execute()
            _rows_of(entries, feedback, schema, window_ms, columns)
            pending_last = entries[-1][0]
            start = f"({pending_last}"
            if len(columns[schema.label]) >= shard_rows:
                _commit(out, state, stream, columns, arrow_schema, pending_last, result)
                columns = {name: [] for name in arrow_schema.names}
        if columns[schema.label]:
            _commit(out, state, stream, columns, arrow_schema, pending_last, result)
    return result


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _commit(
    out: Path,
    state: dict[str, Any],
    stream: str,
    columns: dict[str, list[Any]],
    arrow_schema: pa.Schema,
    last_id: str,
    result: CollectResult,
) -> None:
    """Shard first (atomic rename), then the state that lists it and moves the position."""
    label = arrow_schema.names[0]
    rows, positives = len(columns[label]), int(sum(columns[label]))
    name = f"shard-{len(state['shards']) + 1:06d}.parquet"
    _write_shard(out, name, columns, arrow_schema)
    state["shards"].append(
        {"file": name, "rows": rows, "positives": positives, "from_id": state["last_id"], "to_id": last_id}
    )
    state["stream"] = stream
    state["last_id"] = last_id
    atomic_write_text(out / STATE_FILE, json.dumps(state, indent=2) + "\n")
    result.new_shards.append(name)
    result.rows += rows
    result.positives += positives
    result.last_id = last_id
    log.info("collect: %s with %d rows (%d clicks), stream position %s", name, rows, positives, last_id)
