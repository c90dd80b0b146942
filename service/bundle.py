"""The model bundle contract: the only thing training hands to serving.

Layout of one bundle (a directory ``<registry>/<version>/``)::

    model.onnx      inputs: "cat_ids" int64 [B, F_cat] (absent when F_cat == 0),
                            "numerics" float32 [B, F_num] (absent when F_num == 0)
                    output: "probability" float32 [B]
    schema.json     BundleSchema below, serialised with ``BundleSchema.to_json``
    vocab/<field>.json   JSON list of raw values (canonical strings); id = position + 1, 0 = OOV
    metrics.json    valid/test AUC + logloss, fingerprint, git commit, config
    report.png      training curves

``<registry>/CURRENT`` holds the name of the version being served (atomic replace).

Training imports this module to *write* bundles and serving imports it to *read*
them, so both sides share one definition of the format (serving never imports
``model/`` or ``training/``; this module depends on nothing but numpy).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

BUNDLE_FORMAT_VERSION = 1
CAT_INPUT = "cat_ids"
NUM_INPUT = "numerics"
PROB_OUTPUT = "probability"
OOV_ID = 0
CURRENT_POINTER = "CURRENT"
MISSING_TOKEN = "__missing__"
VERSION_PATTERN = re.compile(r"^\d{8}T\d{6}(\d{6})?Z-[0-9a-f]{8}$")

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
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return MISSING_TOKEN
        if math.isfinite(value) and float(value).is_integer():
            return str(int(value))
        return repr(float(value))
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

    @property
    def categorical(self) -> list[FieldSchema]:
        return sorted((f for f in self.fields if f.kind == "categorical"), key=lambda f: f.index)

    @property
    def numeric(self) -> list[FieldSchema]:
        return sorted((f for f in self.fields if f.kind == "numeric"), key=lambda f: f.index)

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
