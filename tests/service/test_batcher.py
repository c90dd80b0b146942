"""MicroBatcher: concurrent requests share ONNX Runtime calls and get their own rows back, in order."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.batcher import MicroBatcher
from service.metrics import ServiceMetrics
from service.model_holder import LoadedModel, load_model
from service.testing import TinyBundle


class CountingModel:
    """The real ONNX session, with a count of session calls and the batch sizes it saw."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def run(self, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray:
        self.calls.append(int(cat_ids.shape[0]))
        self.threads.add(threading.current_thread().name)
        return self.model.run(cat_ids, numerics)


def random_rows(bundle: TinyBundle, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = np.array([f.vocab_size for f in bundle.schema.categorical])
    cat = (rng.integers(0, 1 << 30, size=(n, len(sizes))) % sizes).astype(np.int64)
    num = rng.normal(size=(n, len(bundle.schema.numeric))).astype(np.float32)
    return cat, num


@pytest.fixture
def counting(bundle_a: TinyBundle) -> CountingModel:
    return CountingModel(load_model(bundle_a.path, intra_op_threads=1, inter_op_threads=1))


async def test_concurrent_requests_are_coalesced_in_order(
    bundle_a: TinyBundle, counting: CountingModel
) -> None:
    metrics = ServiceMetrics()
    batcher = MicroBatcher(max_batch_rows=64, max_wait_ms=50, metrics=metrics)
    await batcher.start()
    try:
        requests = [random_rows(bundle_a, n, seed) for seed, n in enumerate([1, 3, 2, 5, 1, 4, 2, 1, 3, 2])]
        results = await asyncio.gather(*(batcher.submit(counting, c, n) for c, n in requests))
    finally:
        await batcher.stop()
    assert len(counting.calls) < len(requests)  # coalesced
    assert sum(counting.calls) == sum(c.shape[0] for c, _ in requests)
    for (cat, num), got in zip(requests, results, strict=True):
        np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)
    assert counting.threads and all(t.startswith("dlf-infer") for t in counting.threads)  # off the event loop
    assert metrics.registry.get_sample_value("dlf_batch_rows_count") == len(counting.calls)
    assert metrics.registry.get_sample_value("dlf_queue_depth") == 0


async def test_batches_respect_max_rows_and_big_requests_are_split_in_order(
    bundle_a: TinyBundle, counting: CountingModel
) -> None:
    batcher = MicroBatcher(max_batch_rows=4, workers=2)
    await batcher.start()
    try:
        sizes = [3, 3, 10, 1, 1]
        requests = [random_rows(bundle_a, n, seed) for seed, n in enumerate(sizes)]
        results = await asyncio.gather(*(batcher.submit(counting, c, n) for c, n in requests))
    finally:
        await batcher.stop()
    assert all(c <= 4 for c in counting.calls) and sum(counting.calls) == sum(sizes)
    assert [len(r) for r in results] == sizes
    for (cat, num), got in zip(requests, results, strict=True):
        np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)


async def test_disabled_batching_calls_once_per_request(
    bundle_a: TinyBundle, counting: CountingModel
) -> None:
    batcher = MicroBatcher(enabled=False)
    await batcher.start()
    requests = [random_rows(bundle_a, 2, seed) for seed in range(5)]
    results = await asyncio.gather(*(batcher.submit(counting, c, n) for c, n in requests))
    await batcher.stop()
    assert counting.calls == [2] * 5
    for (cat, num), got in zip(requests, results, strict=True):
        np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)


async def test_different_models_never_share_a_batch(bundle_a: TinyBundle, bundle_b: TinyBundle) -> None:
    a = CountingModel(load_model(bundle_a.path))
    b = CountingModel(load_model(bundle_b.path))
    batcher = MicroBatcher(max_batch_rows=64, max_wait_ms=30)
    await batcher.start()
    try:
        cat, num = random_rows(bundle_a, 3, 0)
        out = await asyncio.gather(
            batcher.submit(a, cat, num), batcher.submit(b, cat, num), batcher.submit(a, cat, num)
        )
    finally:
        await batcher.stop()
    np.testing.assert_allclose(out[0], bundle_a.forward(cat, num), atol=1e-6)
    np.testing.assert_allclose(out[1], bundle_b.forward(cat, num), atol=1e-6)
    np.testing.assert_allclose(out[2], out[0], atol=0)
    assert not np.allclose(out[0], out[1])
    assert sum(a.calls) == 6 and sum(b.calls) == 3


async def test_a_failing_batch_fails_its_requests_and_the_worker_survives(counting: CountingModel) -> None:
    batcher = MicroBatcher(max_batch_rows=8, max_wait_ms=1)
    await batcher.start()
    try:
        bad_cat = np.zeros((1, 2), dtype=np.int64)  # wrong number of fields for the session
        with pytest.raises(Exception, match=r"(?i)cat_ids|dimension|shape"):
            await batcher.submit(counting, bad_cat, np.zeros((1, 2), dtype=np.float32))
        good = await batcher.submit(
            counting, np.zeros((1, 4), dtype=np.int64), np.zeros((1, 2), dtype=np.float32)
        )
        assert good.shape == (1,)
    finally:
        await batcher.stop()
