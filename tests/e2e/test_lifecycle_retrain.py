"""The retraining job on small synthetic data: promotes a better candidate, refuses a worse one.

Uses the real pipeline (prepare_data -> fit -> ONNX export -> bundle) with a tiny
DLF; every data file is a slice of ONE synthetic table, so train and eval rows
share the same ground truth. Vocab and reload notice go to a private
redis-server, where a real uvicorn service listens and follows the promotion.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import torch
import yaml
from serving_support import REPO, TINY_DLF, RedisServer, predict, uvicorn_server

from model import build_model, preset
from service.contract import list_versions, pointer_history, read_current
from service.redis_store import marker_key
from training.config import TrainConfig
from training.data.synthetic import SCHEMA, synthetic_table
from training.data.vocab import FeatureSpace
from training.lifecycle.retrain import retrain
from training.lifecycle.warm_start import merge_space, transfer_weights

pytestmark = pytest.mark.e2e

PREFIX = "retrain:"
TINY = TINY_DLF
WEAK = TrainConfig(model="dlf", model_overrides=TINY, epochs=1, batch_size=256, lr=1e-3, patience=0)
GOOD = TrainConfig(model="dlf", model_overrides=TINY, epochs=3, batch_size=256, lr=5e-3, patience=1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    table = synthetic_table(rows=7000, seed=0)
    files = {
        "small": table.slice(0, 400),
        "more": table.slice(400, 4000),
        "eval": table.slice(4400, 2600),
    }
    more = files["more"]
    labels = np.random.default_rng(0).permutation(more.column("click").to_numpy())
    files["shuffled"] = more.set_column(0, "click", pa.array(labels))
    out = {}
    for name, t in files.items():
        pacsv.write_csv(t, root / f"{name}.csv")
        out[name] = root / f"{name}.csv"
    (root / "schema.yaml").write_text(yaml.safe_dump(SCHEMA, sort_keys=False))
    out["schema"] = root / "schema.yaml"
    return out


def served(url: str, rows: list[dict], want: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = predict(url, {"records": rows}).json()
        if body["model_version"] == want or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_retrain_promotes_better_refuses_worse_and_the_service_follows(
    data: dict[str, Path], tmp_path: Path, private_redis: RedisServer
) -> None:
    registry = tmp_path / "registry"
    url = private_redis.url
    common = {"registry": registry, "schema": data["schema"], "eval_data": data["eval"], "force_cpu": True}
    first = retrain(data["small"], config=WEAK, redis_url=url, prefix=PREFIX, **common)
    assert first.promoted and first.record["reason"] == "no current model in the registry"
    assert read_current(registry) == first.candidate.name
    rows = pacsv.read_csv(data["eval"]).slice(0, 8).drop(["click"]).to_pylist()

    env = {"DLF_REGISTRY": str(registry), "REDIS_URL": url, "DLF_REDIS_PREFIX": PREFIX}
    with uvicorn_server(env, tmp_path / "service.log") as service, private_redis.client() as r:
        assert predict(service, {"records": rows}).json()["model_version"] == first.candidate.name
        with r.pubsub() as sub:
            sub.subscribe(f"{PREFIX}reload")
            assert sub.get_message(timeout=2)["type"] == "subscribe"
            better = retrain(
                data["more"], config=GOOD, warm_start=True, redis_url=url, prefix=PREFIX, **common
            )
            notice = sub.get_message(timeout=5)
        assert r.exists(marker_key(PREFIX, better.candidate.name)) == 1  # vocab published under its version
        rec = json.loads((better.candidate / "promotion.json").read_text())
        assert better.promoted and rec["decision"] == "promoted"
        assert (
            rec["candidate_auc"] >= rec["current_auc"] - 0.001
            and rec["current_version"] == first.candidate.name
        )
        assert rec["eval_rows"] == 2600 and rec["previous_version"] == first.candidate.name
        assert rec["warm_start"]["used"] is True and rec["warm_start"]["new_ids"]["user"] > 0
        assert rec["notice"]["receivers"] == 2  # the service and this test
        assert read_current(registry) == better.candidate.name
        assert notice is not None and json.loads(notice["data"])["version"] == better.candidate.name
        assert (better.candidate / "checkpoint.pt").exists()
        body = served(service, rows, better.candidate.name)  # the notice made the service swap
        assert body["model_version"] == better.candidate.name

        worse = retrain(data["shuffled"], config=GOOD, redis_url=url, prefix=PREFIX, **common)
        rec = json.loads((worse.candidate / "promotion.json").read_text())
        assert not worse.promoted and rec["decision"] == "refused"
        assert rec["candidate_auc"] < rec["current_auc"] - 0.001 and "<" in rec["reason"]
        assert read_current(registry) == better.candidate.name  # the pointer did not move
        assert r.exists(marker_key(PREFIX, worse.candidate.name)) == 0  # nothing published for it
        assert predict(service, {"records": rows}).json()["model_version"] == better.candidate.name
    history = [h["version"] for h in pointer_history(registry)]
    assert history == [first.candidate.name, better.candidate.name]
    assert set(list_versions(registry)) == {first.candidate.name, better.candidate.name, worse.candidate.name}


def test_retrain_cli_refuses_with_exit_code_and_reason(data: dict[str, Path], tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    first = retrain(data["more"], registry=registry, schema=data["schema"], config=GOOD, force_cpu=True)
    cmd = [sys.executable, "-m", "training.cli", "retrain", "--data", str(data["shuffled"])]
    cmd += ["--format", "csv", "--schema", str(data["schema"]), "--registry", str(registry)]
    cmd += ["--eval-data", str(data["eval"]), "--tolerance", "0.01", "--epochs", "2", "--batch-size", "256"]
    cmd += ["--cpu", "--model", "lr"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("REDIS_URL", None)
    start = time.monotonic()
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["decision"] == "refused" and out["tolerance"] == 0.01
    assert "short by" in out["reason"] and out["current_version"] == first.candidate.name
    assert read_current(registry) == first.candidate.name
    assert time.monotonic() - start < 60


def test_warm_start_keeps_ids_and_copies_rows() -> None:
    from service.contract import FieldSchema

    def space(users: list[str], items: list[str]) -> FeatureSpace:
        fields = [
            FieldSchema("user", "categorical", 0, vocab_size=len(users) + 1, vocab_file="vocab/user.json"),
            FieldSchema("item", "categorical", 1, vocab_size=len(items) + 1, vocab_file="vocab/item.json"),
            FieldSchema("age", "numeric", 0, mean=30.0, std=5.0),
        ]
        return FeatureSpace(fields=fields, vocabs={"user": users, "item": items}, label="click")

    old = space(["a", "b"], ["x", "y", "z"])
    new = space(["c", "a"], ["z", "w"])
    new.fields[2] = FieldSchema("age", "numeric", 0, mean=99.0, std=1.0)
    merged = merge_space(old, new)
    assert merged.vocabs == {"user": ["a", "b", "c"], "item": ["x", "y", "z", "w"]}
    assert merged.cardinalities == [4, 5] and merged.fields[2].mean == 30.0  # old statistics kept
    cfg = dataclasses.replace(preset("small"), **TINY)
    torch.manual_seed(0)
    old_net = build_model("dlf", cat_cardinalities=old.cardinalities, num_numeric=1, config=cfg)
    torch.manual_seed(1)
    new_net = build_model("dlf", cat_cardinalities=merged.cardinalities, num_numeric=1, config=cfg)
    report = transfer_weights(old_net, old, new_net, merged)
    assert report["skipped"] == [] and report["new_ids"] == {"user": 1, "item": 1}
    old_t = old_net.state_dict()[report["remapped_embedding_tables"][0]]
    new_t = new_net.state_dict()[report["remapped_embedding_tables"][0]]
    assert torch.equal(new_t[0:3], old_t[0:3])  # user: OOV, a, b
    assert torch.equal(new_t[4:8], old_t[3:7])  # item: OOV, x, y, z at their new offset
    assert not torch.equal(new_t[3], new_t[3] * 0)  # the new user row keeps its fresh init
    cat = torch.tensor([[1, 2], [2, 3], [0, 1]])
    num = torch.tensor([[0.5], [-1.0], [0.0]])
    with torch.no_grad():
        torch.testing.assert_close(new_net.eval()(cat, num), old_net.eval()(cat, num))
    bad = space(["a"], ["x"])
    bad.fields[2] = FieldSchema("height", "numeric", 0)
    with pytest.raises(ValueError, match="same fields"):
        merge_space(old, bad)
