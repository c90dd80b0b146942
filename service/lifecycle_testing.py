"""Broken bundles for hot-reload tests and demos: the service must refuse both and keep serving.

Built on ``service.testing.write_tiny_bundle`` so they sit in a registry next
to the tiny good bundles.
"""

from __future__ import annotations

import json
from pathlib import Path

from service.contract import atomic_write_text
from service.testing import write_tiny_bundle

VERSION_CORRUPT = "20250103T000000Z-cccccccc"
VERSION_OTHER_SCHEMA = "20250104T000000Z-dddddddd"


def corrupt_bundle(registry: str | Path, version: str = VERSION_CORRUPT) -> Path:
    """A bundle whose model.onnx is garbage (schema and vocab are fine); returns its directory."""
    b = write_tiny_bundle(registry, version=version, seed=5, make_current=False)
    (b.path / "model.onnx").write_bytes(b"this is not an onnx model")
    return b.path


def other_schema_bundle(registry: str | Path, version: str = VERSION_OTHER_SCHEMA) -> Path:
    """A loadable bundle whose field signature differs (``city`` renamed ``town``); returns its directory."""
    b = write_tiny_bundle(registry, version=version, seed=6, make_current=False)
    schema = json.loads((b.path / "schema.json").read_text())
    for f in schema["fields"]:
        if f["name"] == "city":
            f["name"] = "town"
    atomic_write_text(b.path / "schema.json", json.dumps(schema, indent=2))
    return b.path
