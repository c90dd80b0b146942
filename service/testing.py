"""Tiny but valid model bundles for tests, demos and benchmarks of the service (no training needed).

The ONNX graph is built directly with ``onnx.helper`` (embedding lookup ->
concat with numerics -> linear -> sigmoid), so it is fast, deterministic and
independent of ``model/`` and ``training/``. ``TinyBundle.reference`` computes
the same probabilities with plain numpy from the raw records, as an
independent check of the service's encoding + inference.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.contract import (
    CAT_INPUT,
    NUM_INPUT,
    PROB_OUTPUT,
    BundleSchema,
    FieldSchema,
    canonical_value,
    write_current,
)

VERSION_A = "20250101T000000Z-aaaaaaaa"
VERSION_B = "20250102T000000Z-bbbbbbbb"
EMBED_DIM = 4

# field name -> vocabulary (canonical strings) for categorical fields
TINY_VOCAB: dict[str, list[str]] = {
    "user": ["u1", "u2", "u3"],
    "item": ["266", "267", "abc", "1.5"],
    "daytime": ["morning", "evening", "night", "__missing__"],
    "city": ["paris", "oslo"],
}


def tiny_fields() -> list[FieldSchema]:
    """Categorical and numeric fields interleaved, as a real schema may list them."""
    v = TINY_VOCAB
    return [
        FieldSchema("user", "categorical", 0, vocab_size=len(v["user"]) + 1, vocab_file="vocab/user.json"),
        FieldSchema("price", "numeric", 0, transform="log1p", mean=1.0, std=2.0, fill=0.0),
        FieldSchema("item", "categorical", 1, vocab_size=len(v["item"]) + 1, vocab_file="vocab/item.json"),
        FieldSchema(
            "daytime", "categorical", 2, vocab_size=len(v["daytime"]) + 1, vocab_file="vocab/daytime.json"
        ),
        FieldSchema("rating", "numeric", 1, transform="identity", mean=3.0, std=1.5, fill=0.0),
        FieldSchema("city", "categorical", 3, vocab_size=len(v["city"]) + 1, vocab_file="vocab/city.json"),
    ]


@dataclass
class TinyBundle:
    """A bundle on disk plus the weights that define its function."""

    registry: Path
    version: str
    schema: BundleSchema
    table: np.ndarray  # [sum vocab_size, D] embedding rows of all fields
    offsets: np.ndarray  # int64 [F_cat] first row of each field in ``table``
    weight: np.ndarray  # [F_cat * D + F_num, 1]
    bias: np.ndarray  # [1]

    @property
    def path(self) -> Path:
        return self.registry / self.version

    def encode(self, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Raw records -> (ids, numerics) by the bundle contract, written independently of service.encoding."""
        cat = np.zeros((len(records), len(self.schema.categorical)), dtype=np.int64)
        num = np.zeros((len(records), len(self.schema.numeric)), dtype=np.float32)
        for i, r in enumerate(records):
            for j, f in enumerate(self.schema.categorical):
                vocab = TINY_VOCAB[f.name]
                key = canonical_value(r[f.name])
                cat[i, j] = vocab.index(key) + 1 if key in vocab else 0
            for j, f in enumerate(self.schema.numeric):
                x = r[f.name]
                if x is None:
                    num[i, j] = f.fill
                    continue
                x = float(x)
                x = math.log1p(x) if f.transform == "log1p" else x
                num[i, j] = (x - f.mean) / f.std
        return cat, num

    def forward(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        emb = self.table[cat + self.offsets].reshape(cat.shape[0], -1)
        z = np.concatenate([emb, num], axis=1).astype(np.float64) @ self.weight.astype(np.float64) + self.bias
        return (1.0 / (1.0 + np.exp(-z))).reshape(-1)

    def reference(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.forward(*self.encode(records))


def _graph(
    table: np.ndarray, offsets: np.ndarray, weight: np.ndarray, bias: np.ndarray, f_cat: int, f_num: int
):
    nodes = [
        helper.make_node("Add", [CAT_INPUT, "offsets"], ["rows"]),
        helper.make_node("Gather", ["table", "rows"], ["emb3"], axis=0),
        helper.make_node("Reshape", ["emb3", "flat_shape"], ["emb"]),
        helper.make_node("Concat", ["emb", NUM_INPUT], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "weight"], ["logit2"]),
        helper.make_node("Add", ["logit2", "bias"], ["logit2b"]),
        helper.make_node("Reshape", ["logit2b", "out_shape"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], [PROB_OUTPUT]),
    ]
    inits = [
        numpy_helper.from_array(table.astype(np.float32), "table"),
        numpy_helper.from_array(offsets.astype(np.int64), "offsets"),
        numpy_helper.from_array(np.array([-1, f_cat * table.shape[1]], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(weight.astype(np.float32), "weight"),
        numpy_helper.from_array(bias.astype(np.float32), "bias"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "out_shape"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_ctr",
        [
            helper.make_tensor_value_info(CAT_INPUT, TensorProto.INT64, ["batch", f_cat]),
            helper.make_tensor_value_info(NUM_INPUT, TensorProto.FLOAT, ["batch", f_num]),
        ],
        [helper.make_tensor_value_info(PROB_OUTPUT, TensorProto.FLOAT, ["batch"])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="service.testing"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_tiny_bundle(
    registry: str | Path, *, version: str = VERSION_A, seed: int = 0, make_current: bool = True
) -> TinyBundle:
    """Write ``<registry>/<version>/`` (schema, vocab, model.onnx, metrics.json) via a temp dir + rename."""
    registry = Path(registry)
    registry.mkdir(parents=True, exist_ok=True)
    fields = tiny_fields()
    schema = BundleSchema(version=version, model_name="tiny", fields=fields)
    cat, num = schema.categorical, schema.numeric
    rng = np.random.default_rng(seed)
    sizes = [f.vocab_size for f in cat]
    table = rng.normal(0, 1, size=(sum(sizes), EMBED_DIM)).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    weight = rng.normal(0, 0.5, size=(len(cat) * EMBED_DIM + len(num), 1)).astype(np.float32)
    bias = rng.normal(0, 0.1, size=(1,)).astype(np.float32)

    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=registry))
    try:
        (tmp / "vocab").mkdir()
        for f in cat:
            (tmp / f"vocab/{f.name}.json").write_text(json.dumps(TINY_VOCAB[f.name]))
        (tmp / "schema.json").write_text(schema.to_json())
        onnx.save(_graph(table, offsets, weight, bias, len(cat), len(num)), str(tmp / "model.onnx"))
        (tmp / "metrics.json").write_text(json.dumps({"note": "tiny test bundle", "seed": seed}))
        target = registry / version
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_current:
        write_current(registry, version)
    return TinyBundle(registry, version, schema, table, offsets, weight, bias)


def post_scope(path: str, body: bytes, content_type: bytes = b"application/json") -> dict[str, Any]:
    """The ASGI scope of ``POST path`` with ``body``, for driving an app without sockets (tests, bench)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"service"), (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode())],  # fmt: skip
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
