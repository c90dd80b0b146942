"""The contract between training (writer) and serving (reader): everything both must agree on.

One module, importing nothing beyond the standard library (no numpy, torch,
redis or onnxruntime), so a serving install, the trainer and tools can all
share it. It defines:

* **the bundle** ``<registry>/<version>/``::

    model.onnx      inputs: "cat_ids" int64 [B, F_cat] (absent when F_cat == 0),
                            "numerics" float32 [B, F_num] (absent when F_num == 0)
                    output: "probability" float32 [B]
    schema.json     BundleSchema below, serialised with ``BundleSchema.to_json``
    vocab/<field>.json   JSON list of raw values (canonical strings); id = position + 1, 0 = OOV
    metrics.json    valid/test AUC + logloss, fingerprint, git commit, config
    report.png      training curves

* **the registry pointer** ``<registry>/CURRENT`` (atomic replace) and its
  append-only log ``<registry>/HISTORY.jsonl``;
* **the Redis key layout** of published vocabularies and the writer
  ``publish_vocab`` (the only code that writes that layout);
* **the reload notice** published on ``<prefix>reload`` after CURRENT moves;
* **the closed-loop keys**: the impression stream and the per-request impression
  and feedback keys the service writes and ``collect`` reads.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

BUNDLE_FORMAT_VERSION = 1
CAT_INPUT = "cat_ids"
NUM_INPUT = "numerics"
PROB_OUTPUT = "probability"
OOV_ID = 0
CURRENT_POINTER = "CURRENT"
MISSING_TOKEN = "__missing__"
VERSION_PATTERN = re.compile(r"^\d{8}T\d{6}(\d{6})?Z-[0-9a-f]{8}$")

HISTORY_FILE = "HISTORY.jsonl"
MAX_HISTORY_LINES = 1000

FieldKind = Literal["categorical", "numeric"]


def canonical_value(value: Any) -> str:
    """Map a raw categorical value to the string key used in vocabularies.

    Training reads values from files (strings) while HTTP clients may send
    numbers; ``266``, ``266.0`` and ``"266"`` must reach the same id.
    ``None``/empty/NaN are the missing token.
    """
    if value is None:
        return MISSING_TOKEN
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return MISSING_TOKEN
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    text = str(value)
    return text if text != "" else MISSING_TOKEN


@dataclass(frozen=True)
class FieldSchema:
    """One input field; ``index`` is its column inside the cat or num input."""

    name: str
    kind: FieldKind
    index: int
    # categorical
    vocab_size: int = 0  # number of ids including OOV (ids 0..vocab_size-1)
    vocab_file: str | None = None
    oov_id: int = OOV_ID
    # numeric: x -> (transform(x) - mean) / std, missing -> fill (already normalised)
    transform: Literal["identity", "log1p"] = "identity"
    mean: float = 0.0
    std: float = 1.0
    fill: float = 0.0


def fields_of_kind(fields: list[FieldSchema], kind: FieldKind) -> list[FieldSchema]:
    """Fields of one kind in model-input order: the column order of that ONNX input."""
    return sorted((f for f in fields if f.kind == kind), key=lambda f: f.index)


@dataclass
class BundleSchema:
    version: str
    model_name: str
    fields: list[FieldSchema]
    format_version: int = BUNDLE_FORMAT_VERSION
    cat_input: str = CAT_INPUT
    num_input: str = NUM_INPUT
    output: str = PROB_OUTPUT
    label: str = "label"
    extra: dict[str, Any] = field(default_factory=dict)

    # Cached: every request reads both (a sort per read was ~2 % of a 1-row request); ``fields``
    # is never reassigned after construction.
    @cached_property
    def categorical(self) -> list[FieldSchema]:
        return fields_of_kind(self.fields, "categorical")

    @cached_property
    def numeric(self) -> list[FieldSchema]:
        return fields_of_kind(self.fields, "numeric")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleSchema:
        if data.get("format_version") != BUNDLE_FORMAT_VERSION:
            raise ValueError(f"unsupported bundle format_version {data.get('format_version')!r}")
        fields = [FieldSchema(**f) for f in data["fields"]]
        rest = {k: v for k, v in data.items() if k != "fields"}
        return cls(fields=fields, **rest)

    def signature(self) -> list[tuple[str, str]]:
        """What a client must send: (name, kind) in order. Equal signatures = compatible bundles."""
        return [(f.name, f.kind) for f in self.fields]


def load_schema(bundle_dir: str | Path) -> BundleSchema:
    return BundleSchema.from_dict(json.loads((Path(bundle_dir) / "schema.json").read_text()))


def load_vocab(bundle_dir: str | Path, f: FieldSchema) -> dict[str, int]:
    """Value -> id for one categorical field (ids start at 1; 0 is OOV)."""
    if f.vocab_file is None:
        raise ValueError(f"field {f.name!r} has no vocab file")
    values = json.loads((Path(bundle_dir) / f.vocab_file).read_text())
    return {str(v): i + 1 for i, v in enumerate(values)}


# --- registry: <registry>/<version>/ + CURRENT ---------------------------------


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_versions(registry: str | Path) -> list[str]:
    """Complete bundle versions, oldest first (hidden temp dirs are never listed)."""
    root = Path(registry)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and VERSION_PATTERN.match(p.name) and (p / "schema.json").exists()
    )


def read_current(registry: str | Path) -> str | None:
    pointer = Path(registry) / CURRENT_POINTER
    if not pointer.exists():
        return None
    version = pointer.read_text().strip()
    return version or None


def write_current(registry: str | Path, version: str) -> None:
    if not (Path(registry) / version / "schema.json").exists():
        raise FileNotFoundError(f"no bundle {version!r} in {registry}")
    atomic_write_text(Path(registry) / CURRENT_POINTER, version + "\n")


def resolve_current(registry: str | Path) -> str | None:
    """The CURRENT version, or the newest complete version when there is no pointer."""
    version = read_current(registry)
    if version is not None:
        return version
    versions = list_versions(registry)
    return versions[-1] if versions else None


def pointer_history(registry: str | Path) -> list[dict[str, Any]]:
    """Pointer moves, oldest first ([] when none were recorded); unreadable lines are skipped."""
    path = Path(registry) / HISTORY_FILE
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("version"), str):
            out.append(entry)
    return out


def set_current(registry: str | Path, version: str, reason: str = "") -> str | None:
    """Move CURRENT to ``version`` (atomic) and record the move; returns the version it pointed at before."""
    registry = Path(registry)
    before = read_current(registry)
    write_current(registry, version)
    entry = {"version": version, "previous": before, "reason": reason, "at": datetime.now(UTC).isoformat()}
    lines = [json.dumps(e) for e in pointer_history(registry)[-(MAX_HISTORY_LINES - 1) :]]
    atomic_write_text(registry / HISTORY_FILE, "\n".join([*lines, json.dumps(entry)]) + "\n")
    return before


def previous_version(registry: str | Path, current: str | None = None) -> str | None:
    """The version served before ``current`` (default: CURRENT) that still exists on disk.

    Walks the pointer history backwards; without history, falls back to the
    newest complete bundle older than ``current``.
    """
    registry = Path(registry)
    current = current if current is not None else read_current(registry)
    existing = set(list_versions(registry))
    for entry in reversed(pointer_history(registry)):
        for candidate in (entry.get("version"), entry.get("previous")):
            if candidate and candidate != current and candidate in existing:
                return candidate
    older = [v for v in sorted(existing) if current is None or v < current]
    return older[-1] if older else None


def prune_versions(registry: str | Path, keep: int) -> list[str]:
    """Delete the oldest bundles beyond ``keep``; never CURRENT nor the previous version. Returns removed."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    registry = Path(registry)
    current = read_current(registry)
    protected = {v for v in (current, previous_version(registry, current)) if v}
    versions = list_versions(registry)
    removable = [v for v in versions if v not in protected]
    excess = len(versions) - keep
    removed: list[str] = []
    for version in removable:
        if excess <= 0:
            break
        target = registry / version
        # rename first so a half-deleted directory never looks like a complete bundle
        trash = registry / f".deleting-{version}"
        target.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(version)
        excess -= 1
    return removed


# --- Redis key layout -------------------------------------------------------------


# ``{<version>}`` is a Redis Cluster hash tag: every key of one version (hashes, temporary publish
# names, marker) hashes to the same slot, so the publish MULTI/EXEC and a request's lookup round
# trip are legal in a cluster and hit one shard. On a single Redis the braces are just characters.


def vocab_key(prefix: str, version: str, field: str) -> str:
    """Hash ``canonical value -> id`` of one field of one bundle version."""
    return f"{prefix}vocab:{{{version}}}:{field}"


def marker_key(prefix: str, version: str) -> str:
    """Written last by ``publish_vocab``: its presence means every field of ``version`` is complete."""
    return f"{prefix}vocab-complete:{{{version}}}"


def reload_channel(prefix: str) -> str:
    """Pub/sub channel of reload notices."""
    return f"{prefix}reload"


# Closed loop (docs/closed-loop.md): the service writes impressions and feedback, ``collect`` reads them.
IMPRESSION_ID_PATTERN = re.compile(r"^([0-9a-f]{32})-(\d{1,5})$")  # <batch>-<row>, batch = 32 random hex digits


def impressions_stream_key(prefix: str) -> str:
    """Stream of logged requests: fields b (batch), v (version), t (served ms), p (JSON probs), rows (JSON)."""
    return f"{prefix}impressions"


def impression_key(prefix: str, batch: str) -> str:
    """One logged request's ``{"v", "t", "p"}`` (JSON), read by /feedback; ``{batch}`` is a hash tag."""
    return f"{prefix}imp:{{{batch}}}"


def feedback_key(prefix: str, batch: str) -> str:
    """Hash row -> ``"<0|1>:<ms>"``: the first feedback event of each impression of one request."""
    return f"{prefix}fb:{{{batch}}}"


def parse_impression_id(impression_id: str) -> tuple[str, int] | None:
    """``(batch, row)`` of a well-formed impression id, else None."""
    m = IMPRESSION_ID_PATTERN.match(impression_id)
    return (m.group(1), int(m.group(2))) if m else None


async def publish_vocab(
    client: Any, bundle_dir: str | Path, prefix: str = "dlf:", chunk_size: int = 10_000
) -> dict[str, int]:
    """Copy a bundle's vocab into Redis; readers see all of it or (via the marker) none of it.

    ``client`` is a ``redis.asyncio.Redis`` or ``RedisCluster`` (duck-typed here so this module
    imports no Redis client). Hashes are filled under temporary names with
    pipelined HSET chunks, then renamed into place together with the marker in
    one MULTI/EXEC. Returns ``field -> number of values``.
    """
    bundle_dir = Path(bundle_dir)
    schema = load_schema(bundle_dir)
    token = f"{time.time_ns():x}"
    counts: dict[str, int] = {}
    renames: list[tuple[str, str]] = []
    for f in schema.categorical:
        vocab = load_vocab(bundle_dir, f)
        final = vocab_key(prefix, schema.version, f.name)
        tmp = f"{final}:publishing:{token}"
        items = list(vocab.items())
        async with client.pipeline(transaction=False) as pipe:
            pipe.delete(tmp)
            for start in range(0, len(items), chunk_size):
                pipe.hset(tmp, mapping=dict(items[start : start + chunk_size]))
            await pipe.execute()
        counts[f.name] = len(items)
        if items:
            renames.append((tmp, final))
    marker = json.dumps({"fields": counts, "published_at": datetime.now(UTC).isoformat()})
    async with client.pipeline(transaction=True) as pipe:
        for f in schema.categorical:
            pipe.delete(vocab_key(prefix, schema.version, f.name))
        for tmp, final in renames:
            # execute_command: redis-py blocks the RENAME *method* on cluster pipelines (it cannot know
            # the keys share a slot); here they do (same {version} hash tag), so the MULTI/EXEC is legal.
            pipe.execute_command("RENAME", tmp, final)
        pipe.set(marker_key(prefix, schema.version), marker)
        await pipe.execute()
    return counts


# --- reload notice ------------------------------------------------------------------


@dataclass(frozen=True)
class ReloadNotice:
    """Published on ``reload_channel(prefix)`` when CURRENT moved (promotion or rollback).

    ``version`` None means "reload whatever CURRENT says". Receivers ignore
    keys they do not know, so fields can be added without breaking replicas.
    """

    version: str | None
    previous: str | None = None
    reason: str = ""
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def parse(cls, payload: str) -> ReloadNotice:
        """Decode a notice; an empty payload means "follow CURRENT". Raises ValueError when malformed."""
        if not payload.strip():
            return cls(version=None)
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise ValueError(f"reload notice is not JSON: {payload[:200]!r}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"reload notice is not a JSON object: {payload[:200]!r}")
        values: dict[str, Any] = {}
        for key in ("version", "previous", "reason", "at"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"reload notice field {key!r} must be a string, got {value!r:.200}")
            if value is not None:
                values[key] = value
        return cls(version=values.pop("version", None), **values)
