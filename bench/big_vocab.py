"""A DLF bundle past ONNX's 2 GB protobuf limit: export (external data), load and serve it, once.

    python -m bench.big_vocab --ids 9000000 --dim 64 --workdir /tmp/dlf-big-vocab

Builds a DLF with one categorical field of ``--ids`` values (synthetic vocabulary
``id0, id1, ...``) plus two small ones and a numeric field; ``--ids x --dim x 4``
bytes of embedding cross 2 GiB at 9 M ids x d 64 (or 35 M x d 16). Exports it
with the training exporter (parity-checked), writes a bundle (model.onnx +
model.onnx.data + schema + vocab), frees the PyTorch model, starts the real
service (uvicorn, embedded vocab) on it and checks /predict against PyTorch's
probabilities for rows hitting ids across the whole table. Prints one JSON
summary (sizes, seconds, server RSS). Needs ~10 GB RAM and ~3 GB disk; deletes
``--workdir`` at the end unless ``--keep``. Not part of CI (minutes of CPU).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from model.config import ModelConfig
from model.registry import build_model
from service.contract import BundleSchema, FieldSchema, write_current
from training.bundle.export import export_onnx, torch_probabilities
from training.bundle.writer import new_version

REPO = Path(__file__).resolve().parents[1]
SMALL = {"site": 7, "device": 5}  # extra categorical fields: values per field


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_bundle(registry: Path, ids: int, dim: int, rows: int) -> tuple[Path, list[dict], np.ndarray, dict]:
    """Export + write the bundle; returns (bundle dir, request rows, torch probabilities, facts)."""
    facts: dict = {}
    cards = [ids + 1, *(n + 1 for n in SMALL.values())]
    config = ModelConfig(
        embedding_dim=dim, num_layers=1, num_tokens=4, rank=4, block_hidden=32, head_hidden=32
    )
    t = time.perf_counter()
    net = build_model("dlf", cards, 1, config, seed=0).eval()
    facts["build_s"] = round(time.perf_counter() - t, 1)
    facts["parameter_bytes"] = sum(p.numel() * p.element_size() for p in net.parameters())

    version = new_version(salt="big-vocab")
    tmp = registry / f".tmp-{version}"
    (tmp / "vocab").mkdir(parents=True)
    t = time.perf_counter()
    export = export_onnx(net, cards, 1, tmp / "model.onnx", parity_rows=256)
    facts["export_s"] = round(time.perf_counter() - t, 1)
    facts["export"] = export

    rng = np.random.default_rng(1)
    big = np.concatenate([[1, ids], rng.integers(1, ids + 1, size=rows - 2)])  # first, last, random ids
    cat = np.stack([big, *(rng.integers(1, n + 1, size=rows) for n in SMALL.values())], axis=1)
    num = rng.standard_normal((rows, 1)).astype(np.float32)
    expected = torch_probabilities(net, {"cat_ids": cat.astype(np.int64), "numerics": num})
    records = [
        {
            "big": f"id{int(c[0]) - 1}",
            **{name: f"{name}{int(c[j + 1]) - 1}" for j, name in enumerate(SMALL)},
            "x": float(num[i, 0]),
        }
        for i, c in enumerate(cat)
    ]
    del net
    gc.collect()

    t = time.perf_counter()
    fields = [FieldSchema("big", "categorical", 0, vocab_size=ids + 1, vocab_file="vocab/big.json")]
    for j, (name, n) in enumerate(SMALL.items()):
        fields.append(
            FieldSchema(name, "categorical", j + 1, vocab_size=n + 1, vocab_file=f"vocab/{name}.json")
        )
    fields.append(FieldSchema("x", "numeric", 0))
    with (tmp / "vocab/big.json").open("w") as fh:  # streamed: never the whole list as one string
        fh.write("[")
        for start in range(0, ids, 1_000_000):
            chunk = ",".join(f'"id{i}"' for i in range(start, min(ids, start + 1_000_000)))
            fh.write(("," if start else "") + chunk)
        fh.write("]")
    for name, n in SMALL.items():
        (tmp / f"vocab/{name}.json").write_text(json.dumps([f"{name}{i}" for i in range(n)]))
    (tmp / "schema.json").write_text(
        BundleSchema(version=version, model_name="dlf-big", fields=fields).to_json()
    )
    (tmp / "metrics.json").write_text(
        json.dumps({"export": export, "note": "synthetic big-vocabulary bench"})
    )
    os.rename(tmp, registry / version)
    write_current(registry, version)
    facts["vocab_write_s"] = round(time.perf_counter() - t, 1)
    bundle = registry / version
    facts["files_mb"] = {
        p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(bundle.rglob("*")) if p.is_file()
    }
    return bundle, records, expected, facts


def serve_and_check(registry: Path, records: list[dict], expected: np.ndarray, log: Path) -> dict:
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "DLF_REGISTRY": str(registry), "DLF_LOG_FORMAT": "text", "PYTHONPATH": str(REPO)}
    env.pop("REDIS_URL", None)
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.app:app_factory", "--port", str(port)]
    t = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"service exited:\n{log.read_text()[-3000:]}")
            try:
                r = httpx.get(f"{url}/readyz", timeout=5)
                if r.status_code == 200:
                    break
                if "load failed" in (r.json().get("error") or ""):
                    raise RuntimeError(r.text)
            except httpx.TransportError:
                pass
            time.sleep(1)
        ready_s = time.perf_counter() - t
        r = httpx.post(f"{url}/predict", json={"records": records}, timeout=60)
        r.raise_for_status()
        got = np.asarray(r.json()["probabilities"])
        info = httpx.get(f"{url}/info", timeout=10).json()
        return {
            "ready_s": round(ready_s, 1),
            "server_rss_mb": round(rss_mb(proc.pid)),
            "rows": len(records),
            "max_abs_diff_vs_torch": float(np.max(np.abs(got - expected))),
            "oov_fields": r.json()["oov_fields"],
            "vocab_size_big": next(f["vocab_size"] for f in info["fields"] if f["name"] == "big"),
        }
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=9_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/dlf-big-vocab"))
    ap.add_argument("--keep", action="store_true", help="keep the bundle in --workdir")
    args = ap.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    registry = args.workdir / "registry"
    registry.mkdir(parents=True, exist_ok=True)
    try:
        bundle, records, expected, facts = build_bundle(registry, args.ids, args.dim, args.rows)
        facts.update(serve_and_check(registry, records, expected, args.workdir / "service.log"))
        facts.update(ids=args.ids, dim=args.dim, bundle=bundle.name)
        print(json.dumps(facts, indent=2))
        assert facts["max_abs_diff_vs_torch"] < 1e-5 and not facts["oov_fields"], facts
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
