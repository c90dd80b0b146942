"""Frappe rows scored through the running service (the way the hidden holdout is judged) give the
same probabilities, and so the same AUC/logloss, as the bundle evaluated offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from serving_support import REPO, TINY_DLF, predict, uvicorn_server
from sklearn.metrics import roc_auc_score

from training.bundle.evaluate import evaluate_bundle
from training.config import TrainConfig
from training.data.spec import FRAPPE_FIELDS
from training.pipeline import train_bundle

pytestmark = pytest.mark.e2e
FRAPPE = REPO.parent / "shared" / "data" / "frappe" / "frappe.dev.libfm"


def raw_records(lines: list[str], as_numbers: bool) -> tuple[list[dict], np.ndarray]:
    """libfm line -> {field: INDEX} as a client would send it (string or number), and the label."""
    records, labels = [], []
    for line in lines:
        label, *tokens = line.split()
        values = [tok.split(":")[0] for tok in tokens]
        records.append({f: int(v) if as_numbers else v for f, v in zip(FRAPPE_FIELDS, values, strict=True)})
        labels.append(1 if label == "1" else 0)
    return records, np.array(labels)


@pytest.mark.skipif(not FRAPPE.exists(), reason="../shared/data/frappe is not available")
def test_frappe_rows_through_service_match_offline_evaluation(tmp_path: Path) -> None:
    with FRAPPE.open() as fh:
        lines = [next(fh) for _ in range(3500)]
    train, holdout = tmp_path / "train.libfm", tmp_path / "holdout.libfm"
    train.write_text("".join(lines[:3000]))
    holdout.write_text("".join(lines[3000:]))
    cfg = TrainConfig(model="dlf", model_overrides=TINY_DLF, epochs=1, batch_size=64, lr=3e-3)
    bundle = train_bundle(train, fmt="frappe", config=cfg, registry=tmp_path / "reg", set_current=True)
    offline = evaluate_bundle(bundle, holdout, fmt="frappe")

    with uvicorn_server({"DLF_REGISTRY": str(tmp_path / "reg")}, tmp_path / "api.log") as url:
        as_text, labels = raw_records(lines[3000:], as_numbers=False)
        as_numbers, _ = raw_records(lines[3000:], as_numbers=True)
        text = predict(url, {"records": as_text}).json()
        numbers = predict(url, {"records": as_numbers}).json()
    assert text["model_version"] == bundle.name
    assert text["probabilities"] == numbers["probabilities"]  # 266 and "266" are the same value
    p = np.array(text["probabilities"])
    assert sum(text["oov_fields"].values()) > 0  # unseen users/items exist and are not errors
    assert abs(roc_auc_score(labels, p) - offline["auc"]) < 1e-9
    assert offline["rows"] == 500, json.dumps(offline)
