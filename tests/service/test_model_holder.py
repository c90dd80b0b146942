"""Provider choice (both branches, on CPU), session loading, warm-up and the swap semantics."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from service.model_holder import CPU, CUDA, ModelHolder, choose_providers, load_model, resolve_version
from service.testing import VERSION_A, VERSION_B, TinyBundle


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (["CUDAExecutionProvider", "CPUExecutionProvider"], [CUDA, CPU]),
        (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], [CUDA, CPU]),
        (["AzureExecutionProvider", "CPUExecutionProvider"], [CPU]),
        (["CPUExecutionProvider"], [CPU]),
        ([], [CPU]),
    ],
)
def test_choose_providers(available: list[str], expected: list[str]) -> None:
    assert choose_providers(available) == expected


def test_load_model_reports_providers_in_use(bundle_a: TinyBundle) -> None:
    model = load_model(bundle_a.path, intra_op_threads=1, inter_op_threads=1)
    assert model.version == VERSION_A
    assert model.providers == model.session.get_providers()
    expected_first = CUDA if CUDA in ort.get_available_providers() else CPU
    assert model.provider == expected_first


def test_run_matches_numpy_reference(bundle_a: TinyBundle) -> None:
    model = load_model(bundle_a.path)
    records = [
        {"user": "u2", "item": "abc", "daytime": "evening", "city": "oslo", "price": 0.5, "rating": 2},
        {"user": "zz", "item": 1.5, "daytime": None, "city": "paris", "price": None, "rating": -3.25},
    ]
    cat, num = bundle_a.encode(records)
    np.testing.assert_allclose(model.run(cat, num), bundle_a.reference(records), atol=1e-6)


def test_schema_and_onnx_inputs_must_agree(bundle_a: TinyBundle) -> None:
    schema_path = bundle_a.path / "schema.json"
    data = json.loads(schema_path.read_text())
    data["fields"] = [f for f in data["fields"] if f["kind"] == "categorical"]  # claims no numerics
    schema_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="do not match schema"):
        load_model(bundle_a.path)


def test_resolve_version(bundle_b: TinyBundle) -> None:
    registry = bundle_b.registry
    assert resolve_version(registry, None) == VERSION_A  # CURRENT wins over newest
    assert resolve_version(registry, VERSION_B) == VERSION_B
    (registry / "CURRENT").unlink()
    assert resolve_version(registry, None) == VERSION_B  # newest without a pointer
    with pytest.raises(FileNotFoundError, match="nope"):
        resolve_version(registry, "nope")
    with pytest.raises(FileNotFoundError, match="no model bundle"):
        resolve_version(registry / "empty", None)


def test_holder_swap_keeps_old_reference_valid(bundle_a: TinyBundle, bundle_b: TinyBundle) -> None:
    holder = ModelHolder()
    assert not holder.ready
    with pytest.raises(RuntimeError):
        _ = holder.current
    a, b = load_model(bundle_a.path), load_model(bundle_b.path)
    holder.swap(a)
    taken = holder.current  # a request in flight
    assert holder.swap(b) is a
    assert holder.current is b and taken is a
    cat = np.ones((2, 4), dtype=np.int64)
    num = np.zeros((2, 2), dtype=np.float32)
    np.testing.assert_allclose(taken.run(cat, num), bundle_a.forward(cat, num), atol=1e-6)
