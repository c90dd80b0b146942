"""Open Inference Protocol v2 with the real tritonclient[http] against real uvicorn: same answers as /predict."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from serving_support import predict, sample_records, uvicorn_server
from tritonclient.utils import InferenceServerException

from service.testing import TinyBundle, write_tiny_bundle

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> TinyBundle:
    return write_tiny_bundle(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def url(bundle: TinyBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("logs") / "oip.log"
    with uvicorn_server({"DLF_REGISTRY": str(bundle.registry)}, log) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url.removeprefix("http://"))
    yield c
    c.close()


def tensors(bundle: TinyBundle, records: list[dict], binary: bool) -> list[triton.InferInput]:
    """One input per schema field: BYTES for categorical (None -> ""), FP32 for numeric (None -> NaN)."""
    inputs = []
    for f in bundle.schema.fields:
        column = [r[f.name] for r in records]
        if f.kind == "categorical":
            arr = np.array(["" if v is None else str(v) for v in column], dtype=np.object_)
            inp = triton.InferInput(f.name, [len(records)], "BYTES")
        else:
            arr = np.array([np.nan if v is None else float(v) for v in column], dtype=np.float32)
            inp = triton.InferInput(f.name, [len(records)], "FP32")
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    return inputs


def test_health_and_metadata(client: triton.InferenceServerClient, bundle: TinyBundle) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny")
    assert not client.is_model_ready("no-such-model")
    meta = client.get_model_metadata("tiny")
    assert meta["name"] == "tiny" and meta["versions"] == [bundle.version]
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        (f.name, "BYTES" if f.kind == "categorical" else "FP32") for f in bundle.schema.fields
    ]
    assert meta["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1]}]


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_infer_equals_predict(
    client: triton.InferenceServerClient, bundle: TinyBundle, url: str, binary: bool
) -> None:
    records = sample_records(25, seed=5)
    expected = predict(url, {"records": records}).json()["probabilities"]
    outputs = [triton.InferRequestedOutput("probability", binary_data=binary)]
    result = client.infer("tiny", tensors(bundle, records, binary), outputs=outputs, request_id="oip-1")
    got = result.as_numpy("probability")
    assert got.dtype == np.float32 and got.shape == (25,)
    np.testing.assert_array_equal(got, np.asarray(expected, dtype=np.float32))
    np.testing.assert_allclose(got, bundle.reference(records), atol=1e-5)
    response = result.get_response()
    assert response["model_version"] == bundle.version and response["id"] == "oip-1"
    assert response["parameters"]["oov_fields"] == predict(url, {"records": records}).json()["oov_fields"]


def test_infer_errors_name_the_input(client: triton.InferenceServerClient, bundle: TinyBundle) -> None:
    records = sample_records(3, seed=1)
    inputs = [i for i in tensors(bundle, records, True) if i.name() != "city"]
    with pytest.raises(InferenceServerException, match="city"):
        client.infer("tiny", inputs)
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("other", tensors(bundle, records, True))
    bad = tensors(bundle, records, False)
    bad[1] = triton.InferInput("price", [3], "BYTES")
    bad[1].set_data_from_numpy(np.array(["a", "b", "c"], dtype=np.object_), binary_data=False)
    with pytest.raises(InferenceServerException, match="price"):
        client.infer("tiny", bad)
