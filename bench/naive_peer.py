"""The server a user would write in an afternoon: the baseline of bench/serving_engine.py.

    NAIVE_BUNDLE=<registry>/<version> uvicorn bench.naive_peer:app

Plain ``def`` endpoint (Starlette runs it in its thread pool), one ONNX Runtime
``session.run`` per request with default session options, vocabularies as
Python dicts, no batching, no Redis. Kept deliberately short; only the bundle
reading uses the project's schema helpers so both servers score the same rows.
"""

import math
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

from service.contract import canonical_value, load_schema, load_vocab

BUNDLE = os.environ["NAIVE_BUNDLE"]
schema = load_schema(BUNDLE)
vocab = {f.name: load_vocab(BUNDLE, f) for f in schema.categorical}
session = ort.InferenceSession(f"{BUNDLE}/model.onnx", providers=["CPUExecutionProvider"])
app = FastAPI()


class Body(BaseModel):
    records: list[dict]


def number(value, f):
    if value is None:
        return f.fill
    x = float(value)
    return ((math.log1p(x) if f.transform == "log1p" else x) - f.mean) / f.std


@app.post("/predict")
def predict(body: Body):
    cat = [
        [vocab[f.name].get(canonical_value(r[f.name]), 0) for f in schema.categorical] for r in body.records
    ]
    num = [[number(r.get(f.name), f) for f in schema.numeric] for r in body.records]
    feeds = {schema.cat_input: np.array(cat, dtype=np.int64).reshape(len(cat), -1)}
    if schema.numeric:
        feeds[schema.num_input] = np.array(num, dtype=np.float32)
    (probs,) = session.run([schema.output], feeds)
    return {"probabilities": probs.reshape(-1).tolist()}
