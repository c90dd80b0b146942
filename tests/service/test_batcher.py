"""MicroBatcher: concurrent requests share ONNX Runtime calls and get their own rows back, in order."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from service.batcher import (
    BURST_DEMAND_WINDOW,
    BURST_REFUSALS,
    BURST_S,
    DEMAND_WINDOW,
    INLINE_GATHER_TICKS,
    MIN_SPLIT_ROWS,
    MIN_SPREAD_ROWS,
    PERSIST_BUCKET_S,
    PERSIST_BUCKETS,
    SERIAL_ENTER,
    SERIAL_LEAVE,
    SHEDDING_ENTER,
    SHEDDING_LEAVE,
    BatchCost,
    ClientGone,
    MicroBatcher,
    Overloaded,
    RefusalBurst,
    RefusalPersistence,
    RefusalShare,
    RowDemand,
    usable_cores,
)
from service.busy_board import BusyBoard, create_board
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


class GatedModel:
    """The real session behind a gate: a call whose first id is ``hold_id`` waits until released."""

    def __init__(self, model: LoadedModel, hold_id: int = -1) -> None:
        self.model = model
        self.hold_id = hold_id
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[tuple[str, int]] = []

    def run(self, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray:
        self.calls.append((threading.current_thread().name, int(cat_ids.shape[0])))
        if int(cat_ids[0, 0]) == self.hold_id:
            self.entered.set()
            assert self.gate.wait(30), "test never released the gate"
        return self.model.run(cat_ids, numerics)


def held_rows(bundle: TinyBundle, n: int, hold_id: int) -> tuple[np.ndarray, np.ndarray]:
    cat, num = random_rows(bundle, n, seed=99)
    cat[:, 0] = hold_id
    return cat, num


@pytest.fixture
def gated(bundle_a: TinyBundle) -> GatedModel:
    # user id 3 (= "u3") opens a held call; random_rows never starts a request with it on purpose
    return GatedModel(load_model(bundle_a.path, intra_op_threads=1, inter_op_threads=1), hold_id=3)


def free_rows(bundle: TinyBundle, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    cat, num = random_rows(bundle, n, seed)
    cat[:, 0] = cat[:, 0] % 3  # never the held id
    return cat, num


async def wait_entered(model: GatedModel) -> None:
    assert await asyncio.to_thread(model.entered.wait, 30)


async def test_a_request_runs_on_the_free_worker_while_another_is_busy(
    bundle_a: TinyBundle, gated: GatedModel
) -> None:
    batcher = MicroBatcher(workers=2, max_wait_ms=60_000)
    await batcher.start()
    try:
        held = asyncio.ensure_future(batcher.submit(gated, *held_rows(bundle_a, 2, 3)))
        await wait_entered(gated)
        cat, num = free_rows(bundle_a, 3, seed=1)
        # finishes while the first worker is still blocked: it went to the free one, at once
        got = await asyncio.wait_for(batcher.submit(gated, cat, num), 20)
        np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)
        assert not held.done() and batcher.busy_workers == 1
        gated.gate.set()
        await held
    finally:
        gated.gate.set()
        await batcher.stop()
    threads = [t for t, _ in gated.calls]
    assert len(set(threads)) == 2 and all(t.startswith("dlf-infer") for t in threads)


async def test_a_lone_request_on_an_idle_pool_runs_alone_and_at_once(
    bundle_a: TinyBundle, counting: CountingModel
) -> None:
    batcher = MicroBatcher(workers=2, max_wait_ms=60_000)  # the old batcher would wait a minute here
    await batcher.start()
    try:
        cat, num = free_rows(bundle_a, 1, seed=0)
        got = await asyncio.wait_for(batcher.submit(counting, cat, num), 20)
    finally:
        await batcher.stop()
    assert counting.calls == [1] and batcher.batches_run == 1
    np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)


async def test_requests_coalesce_only_while_every_worker_is_busy(
    bundle_a: TinyBundle, gated: GatedModel
) -> None:
    batcher = MicroBatcher(workers=1, max_batch_rows=64)
    await batcher.start()
    try:
        held = asyncio.ensure_future(batcher.submit(gated, *held_rows(bundle_a, 1, 3)))
        await wait_entered(gated)
        requests = [free_rows(bundle_a, n, seed) for seed, n in enumerate([2, 1, 3, 1, 2])]
        waiting = [asyncio.ensure_future(batcher.submit(gated, c, n)) for c, n in requests]
        await asyncio.sleep(0.05)
        assert batcher.queued_rows == 9 and not any(w.done() for w in waiting)
        gated.gate.set()
        results = await asyncio.gather(held, *waiting)
    finally:
        gated.gate.set()
        await batcher.stop()
    assert [rows for _, rows in gated.calls] == [1, 9]  # the queue went out as ONE batch
    for (cat, num), got in zip(requests, results[1:], strict=True):
        np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)


async def test_queued_requests_of_two_versions_never_share_a_batch(
    bundle_a: TinyBundle, bundle_b: TinyBundle, gated: GatedModel
) -> None:
    b = CountingModel(load_model(bundle_b.path))
    batcher = MicroBatcher(workers=1, max_batch_rows=64)
    await batcher.start()
    try:
        held = asyncio.ensure_future(batcher.submit(gated, *held_rows(bundle_a, 1, 3)))
        await wait_entered(gated)
        cat, num = free_rows(bundle_a, 2, seed=5)
        order = [gated, b, gated, b, b, gated]
        waiting = [asyncio.ensure_future(batcher.submit(m, cat, num)) for m in order]
        await asyncio.sleep(0.05)
        gated.gate.set()
        results = await asyncio.gather(*waiting)
        await held
    finally:
        gated.gate.set()
        await batcher.stop()
    for model, got in zip(order, results, strict=True):
        want = bundle_a if model is gated else bundle_b
        np.testing.assert_allclose(got, want.forward(cat, num), atol=1e-6)
    assert sum(b.calls) == 6 and sum(rows for _, rows in gated.calls) == 1 + 6


async def test_a_full_queue_rejects_at_once_and_counts_it(bundle_a: TinyBundle, gated: GatedModel) -> None:
    metrics = ServiceMetrics()
    batcher = MicroBatcher(workers=1, max_queued_rows=4, metrics=metrics)
    await batcher.start()
    try:
        held = asyncio.ensure_future(
            batcher.submit(gated, *held_rows(bundle_a, 5, 3))
        )  # empty queue admits 5 > 4
        await wait_entered(gated)
        queued = asyncio.ensure_future(batcher.submit(gated, *free_rows(bundle_a, 3, 0)))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await batcher.submit(gated, *free_rows(bundle_a, 2, 1))  # 3 + 2 > 4
        assert info.value.retry_after_s >= 1 and info.value.queued_rows == 3
        one_more = asyncio.ensure_future(batcher.submit(gated, *free_rows(bundle_a, 1, 2)))  # 3 + 1 fits
        await asyncio.sleep(0)
        assert metrics.registry.get_sample_value("dlf_queued_rows") == 4
        gated.gate.set()
        await asyncio.gather(held, queued, one_more)
    finally:
        gated.gate.set()
        await batcher.stop()
    assert metrics.registry.get_sample_value("dlf_rejected_requests_total") == 1
    assert batcher.rejected == 1


async def test_a_request_whose_client_left_is_dropped_before_inference(
    bundle_a: TinyBundle, gated: GatedModel
) -> None:
    metrics = ServiceMetrics()
    batcher = MicroBatcher(workers=1, metrics=metrics)
    await batcher.start()
    left = asyncio.Event()

    async def receive() -> dict:  # what ASGI receive() answers once the client has gone
        await left.wait()
        return {"type": "http.disconnect"}

    async def never() -> dict:
        await asyncio.Event().wait()
        return {}

    try:
        held = asyncio.ensure_future(batcher.submit(gated, *held_rows(bundle_a, 1, 3)))
        await wait_entered(gated)
        gone = asyncio.ensure_future(batcher.submit(gated, *free_rows(bundle_a, 7, 0), watch=receive))
        stays = asyncio.ensure_future(batcher.submit(gated, *free_rows(bundle_a, 2, 1), watch=never))
        await asyncio.sleep(0.01)
        left.set()
        await asyncio.sleep(0.01)
        gated.gate.set()
        with pytest.raises(ClientGone):
            await gone
        assert (await stays).shape == (2,)
        await held
    finally:
        gated.gate.set()
        await batcher.stop()
    assert [rows for _, rows in gated.calls] == [1, 2]  # the 7 rows never reached the model
    assert metrics.registry.get_sample_value("dlf_dropped_requests_total") == 1


def test_pool_size_defaults_to_the_usable_cores() -> None:
    assert MicroBatcher().workers == usable_cores() == len(os.sched_getaffinity(0))
    assert MicroBatcher(workers=3).workers == 3


async def test_the_queue_wait_bound_uses_the_measured_cost_per_row(
    bundle_a: TinyBundle, gated: GatedModel
) -> None:
    batcher = MicroBatcher(workers=1, max_queue_ms=100)
    await batcher.start()
    try:
        await batcher.submit(gated, *free_rows(bundle_a, 4, 0))
        assert batcher.cost.seconds(4) > 0  # measured from the batch that just ran
        held = asyncio.ensure_future(batcher.submit(gated, *held_rows(bundle_a, 1, 3)))
        await wait_entered(gated)
        queued = asyncio.ensure_future(batcher.submit(gated, *free_rows(bundle_a, 10, 1)))
        await asyncio.sleep(0)
        batcher.cost = BatchCost()
        batcher.cost.observe(10, 0.050)  # as if measured: 5 ms per row
        batcher.cost.observe(20, 0.100)
        # ahead of each request: the queue and the 1-row batch running now
        small = asyncio.ensure_future(batcher.submit(gated, *free_rows(bundle_a, 5, 2)))  # 80 ms: admitted
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await batcher.submit(gated, *free_rows(bundle_a, 6, 3))  # 1 + 15 + 6 rows = 110 ms > 100
        # 15 queued rows (75 ms) + what the running 1-row batch (5 ms) has left: it has been running
        assert info.value.queued_rows == 15 and 75 < info.value.wait_ms < 80
        gated.gate.set()
        await asyncio.gather(held, queued, small)
    finally:
        gated.gate.set()
        await batcher.stop()


async def test_a_big_request_is_shared_by_idle_workers(bundle_a: TinyBundle, counting: CountingModel) -> None:
    batcher = MicroBatcher(workers=2, max_batch_rows=512)
    await batcher.start()
    try:
        cat, num = free_rows(bundle_a, 100, 0)
        got = await batcher.submit(counting, cat, num)
        small = await batcher.submit(counting, *free_rows(bundle_a, 40, 1))  # < 2 x MIN_SPLIT_ROWS: one call
    finally:
        await batcher.stop()
    assert counting.calls == [50, 50, 40]
    np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)
    assert small.shape == (40,)


def test_batch_cost_separates_per_call_overhead_from_per_row_cost() -> None:
    cost = BatchCost()
    assert cost.seconds(100) == 0.0  # nothing measured yet: admit
    for rows in (1, 8, 32, 1, 64, 16):
        cost.observe(rows, 0.010 + 0.001 * rows)
    assert cost.seconds(1) == pytest.approx(0.011, rel=1e-6)
    assert cost.seconds(100) == pytest.approx(0.110, rel=1e-6)


def test_batch_cost_scales_the_mean_batch_when_sizes_barely_spread() -> None:
    """Batches all ~125 rows with noisy times: a fitted slope is noise (here negative). A queue of
    300 rows must still cost about three 100-row batches, or admission would admit without bound."""
    cost = BatchCost()
    for rows, seconds in ((125, 0.013), (128, 0.011), (125, 0.012), (126, 0.010), (125, 0.013)):
        cost.observe(rows, seconds)
    assert cost.seconds(300) == pytest.approx(3 * cost.seconds(100), rel=1e-6)
    assert cost.seconds(100) == pytest.approx(0.0118 * 100 / 125.8, rel=0.02)


async def test_the_relative_bound_admits_a_wait_of_up_to_factor_times_the_requests_own_cost(
    bundle_a: TinyBundle, gated: GatedModel
) -> None:
    batcher = MicroBatcher(workers=1, max_queue_ms=0, queue_factor=1.0, queue_floor_ms=0, max_request_rows=1000)
    await batcher.start()
    try:
        held = asyncio.ensure_future(batcher.submit(gated, *held_rows(bundle_a, 1, 3)))
        await wait_entered(gated)
        queued = asyncio.ensure_future(batcher.submit(gated, *free_rows(bundle_a, 10, 1)))
        await asyncio.sleep(0)
        batcher.cost = BatchCost()
        batcher.cost.observe(10, 0.050)  # as if measured: 5 ms per row, no per-call overhead
        batcher.cost.observe(20, 0.100)
        # ahead of a request: 10 queued rows + the 1-row batch running = 55 ms
        assert batcher.saturated() is None  # a 1000-row request would wait 55 ms for 5 s of its own
        with pytest.raises(Overloaded):
            batcher.admit(9)  # 45 ms of its own < 55 ms ahead of it
        batcher.admit(11)  # 55 ms ahead, 55 ms of its own: admitted
        batcher.queue_floor_s = 0.060
        batcher.admit(1)  # the floor lets small requests wait 60 ms
        batcher.queue_factor = 0.1
        batcher.admit(MIN_SPLIT_ROWS - 1)  # 55 ms ahead > 0.1 x 155 ms, but within the floor
        with pytest.raises(Overloaded):
            batcher.admit(MIN_SPLIT_ROWS)  # big enough to be split: no floor, and 55 ms > 0.1 x 160 ms
        batcher.queue_factor = 1.0
        batcher.queue_floor_s = 0.0
        assert batcher.max_rows_in(500) == 1000  # no body seen yet: any size
        batcher.observe_body(1200, 10)
        batcher.observe_body(1000, 10)  # the leanest body: 100 bytes per row
        batcher.observe_body(5000, 10)
        assert batcher.bytes_per_row == 100 and batcher.max_rows_in(1001) == 11
        assert batcher.saturated(1100) is None  # up to 11 rows: 55 ms of its own, admitted
        assert isinstance(batcher.saturated(500), Overloaded)  # at most 5 rows: refused before its body
        batcher.max_request_rows = 5
        assert isinstance(batcher.saturated(), Overloaded)  # no allowed request size would be admitted
        assert batcher.rejected == 4
        gated.gate.set()
        await asyncio.gather(held, queued)
    finally:
        gated.gate.set()
        await batcher.stop()


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice values are a Linux feature")
async def test_inference_threads_run_at_the_configured_lower_priority(bundle_a: TinyBundle) -> None:
    seen: list[int] = []

    class PriorityProbe:
        def run(self, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray:
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return np.zeros(cat_ids.shape[0], dtype=np.float32)

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    batcher = MicroBatcher(workers=1, worker_niceness=3)
    await batcher.start()
    try:
        await batcher.submit(PriorityProbe(), *free_rows(bundle_a, 2, 0))
    finally:
        await batcher.stop()
    assert seen == [min(19, base + 3)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the loop thread keeps its own


async def test_a_tiny_request_on_an_idle_pool_runs_on_the_loop_and_otherwise_on_a_worker(
    bundle_a: TinyBundle, gated: GatedModel
) -> None:
    batcher = MicroBatcher(workers=2, inline_rows=4)
    await batcher.start()
    loop_thread = threading.current_thread().name
    try:
        cat, num = free_rows(bundle_a, 1, 0)
        alone = await batcher.submit(gated, cat, num)  # idle pool, 1 row: on this thread
        await batcher.submit(gated, *free_rows(bundle_a, 10, 1))  # more than inline_rows: a worker
        await batcher.submit(gated, *free_rows(bundle_a, 4, 3))  # idle again, 4 rows: on this thread
        busy = asyncio.ensure_future(batcher.submit(gated, *held_rows(bundle_a, 5, 3)))  # holds a worker
        await wait_entered(gated)
        beside = await batcher.submit(gated, *free_rows(bundle_a, 1, 2))  # a worker is busy: not inline
        gated.gate.set()
        await busy
    finally:
        gated.gate.set()
        await batcher.stop()
    np.testing.assert_allclose(alone, bundle_a.forward(cat, num), atol=1e-6)
    threads = [name for name, _ in gated.calls]
    rows = [n for _, n in gated.calls]
    assert rows == [1, 10, 4, 5, 1]
    assert threads[0] == loop_thread and threads[2] == loop_thread
    assert threads[1].startswith("dlf-infer") and threads[3].startswith("dlf-infer")
    assert threads[4].startswith("dlf-infer") and beside.shape == (1,)


class LoneAwareModel(CountingModel):
    """Also counts the calls that came through ``run_lone`` (LoadedModel's fixed-batch path)."""

    def __init__(self, model: LoadedModel) -> None:
        super().__init__(model)
        self.lone: list[int] = []

    def run_lone(self, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray:
        self.lone.append(int(cat_ids.shape[0]))
        return self.model.run_lone(cat_ids, numerics)


async def test_only_the_inline_path_calls_run_lone(bundle_a: TinyBundle) -> None:
    model = LoneAwareModel(load_model(bundle_a.path, intra_op_threads=1))
    batcher = MicroBatcher(workers=1, inline_rows=4)
    await batcher.start()
    try:
        cat, num = free_rows(bundle_a, 1, 0)
        got = await batcher.submit(model, cat, num)  # idle pool, 1 row: inline, through run_lone
        await batcher.submit(model, *free_rows(bundle_a, 10, 1))  # a worker: plain run
    finally:
        await batcher.stop()
    np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)
    assert model.lone == [1] and model.calls == [10]


async def test_an_inline_failure_fails_its_request_and_the_pool_goes_on(bundle_a: TinyBundle) -> None:
    class Failing:
        def run(self, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray:
            raise RuntimeError("boom")

    batcher = MicroBatcher(workers=1, inline_rows=4)
    await batcher.start()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(Failing(), *free_rows(bundle_a, 1, 0))
        assert batcher.busy_workers == 0
        got = await batcher.submit(CountingModel(load_model(bundle_a.path)), *free_rows(bundle_a, 2, 1))
    finally:
        await batcher.stop()
    assert got.shape == (2,)


async def test_a_big_request_is_split_only_over_the_workers_free_now(bundle_a: TinyBundle, gated: GatedModel) -> None:
    batcher = MicroBatcher(workers=2, max_batch_rows=512)
    await batcher.start()
    try:
        held = asyncio.ensure_future(batcher.submit(gated, *held_rows(bundle_a, 1, 3)))  # one worker busy
        await wait_entered(gated)
        cat, num = free_rows(bundle_a, 100, 0)
        got = await batcher.submit(gated, cat, num)  # one free worker: one call, not two
        gated.gate.set()
        await held
        await batcher.submit(gated, *free_rows(bundle_a, 100, 1))  # both free again: split in two
    finally:
        gated.gate.set()
        await batcher.stop()
    assert [n for _, n in gated.calls] == [1, 100, 50, 50]
    np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)


async def test_a_few_queued_rows_go_to_one_worker_not_split_over_free_ones(
    bundle_a: TinyBundle, counting: CountingModel
) -> None:
    """Under MIN_SPLIT_ROWS queued rows, a second thread hand-off costs the loop more than it saves."""
    batcher = MicroBatcher(workers=2, max_batch_rows=64)
    await batcher.start()
    try:
        requests = [free_rows(bundle_a, n, seed) for seed, n in enumerate([2, 1, 3, 1, 2])]
        # submitted in one tick: the dispatch at its end sees 9 rows and two free workers
        results = await asyncio.gather(*(batcher.submit(counting, c, n) for c, n in requests))
        big = [free_rows(bundle_a, 40, seed) for seed in (7, 8)]
        await asyncio.gather(*(batcher.submit(counting, c, n) for c, n in big))
    finally:
        await batcher.stop()
    assert counting.calls == [9, 40, 40]  # 80 rows are worth both workers
    for (cat, num), got in zip(requests, results, strict=True):
        np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)


async def test_a_busy_worker_is_handed_its_next_batch_and_admission_counts_it(
    bundle_a: TinyBundle, gated: GatedModel
) -> None:
    """batches_per_worker=2: a queue of 32+ rows goes to the busy worker's hand at once; fewer rows wait."""
    batcher = MicroBatcher(workers=1, max_batch_rows=64, batches_per_worker=2)
    await batcher.start()
    try:
        held = asyncio.ensure_future(batcher.submit(gated, *held_rows(bundle_a, 1, 3)))
        await wait_entered(gated)
        small = asyncio.ensure_future(batcher.submit(gated, *free_rows(bundle_a, 5, 1)))
        await asyncio.sleep(0.02)
        assert len(batcher._running) == 1 and batcher.queued_rows == 5  # 5 rows: still coalescing
        cat, num = free_rows(bundle_a, 40, 2)
        big = asyncio.ensure_future(batcher.submit(gated, cat, num))
        await asyncio.sleep(0.02)
        assert len(batcher._running) == 2  # 45 queued rows were handed to the busy worker
        assert batcher.queued_rows == 45  # and still count as waiting for admission
        tail = asyncio.ensure_future(batcher.submit(gated, *free_rows(bundle_a, 2, 3)))
        await asyncio.sleep(0.02)
        assert len(batcher._running) == 2 and batcher.queued_rows == 47  # the hand is full
        gated.gate.set()
        _, _, got, _ = await asyncio.gather(held, small, big, tail)
    finally:
        gated.gate.set()
        await batcher.stop()
    assert [n for _, n in gated.calls] == [1, 45, 2]
    assert batcher.queued_rows == 0
    np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)


async def hold_the_worker(batcher: MicroBatcher, gated: GatedModel, bundle: TinyBundle, rows: int) -> asyncio.Future:
    """Start ``batcher``, keep its one worker busy on a held ``rows``-row batch, and teach its cost
    model 1 ms per row (as if measured)."""
    await batcher.start()
    held = asyncio.ensure_future(batcher.submit(gated, *held_rows(bundle, rows, 3)))
    await wait_entered(gated)
    batcher.cost.observe(40, 0.040)
    batcher.cost.observe(80, 0.080)
    return held


async def test_a_running_batch_counts_by_what_it_has_left(bundle_a: TinyBundle, gated: GatedModel) -> None:
    """While shedding, admission sees how far the running batch is: a request that would wait
    behind a batch just begun is refused, the same request once that batch is nearly done is
    admitted. Outside shedding an empty queue admits whatever the running batch has left."""
    batcher = MicroBatcher(
        workers=1, max_queue_ms=0, queue_factor=2.0, shedding_queue_factor=0.5, queue_floor_ms=0, max_request_rows=1000
    )
    try:
        held = await hold_the_worker(batcher, gated, bundle_a, 40)
        (entry,) = batcher._running.values()
        assert entry.rows == 40 and entry.started is not None  # written by the worker as it began
        entry.started = time.perf_counter()  # just begun: ~40 ms left
        assert batcher.estimated_wait_s() == pytest.approx(0.040, abs=0.005)
        batcher.admit(40)  # not shedding: the empty queue admits (e.g. a batch slowed by a reload)
        for _ in range(10):
            batcher.refusal_share.note(True)  # most recent requests refused: shedding
        with pytest.raises(Overloaded):
            batcher.admit(40)  # ~40 ms left > 0.5 x 40 ms of its own
        assert batcher.shedding
        entry.started = time.perf_counter() - 0.035  # ~5 ms left
        assert batcher.estimated_wait_s() == pytest.approx(0.005, abs=0.005)
        batcher.admit(40)
        entry.started = time.perf_counter() - 1.0  # overran its estimate: nothing left to wait for
        assert batcher.estimated_wait_s() == 0.0
        gated.gate.set()
        await held
        assert batcher.estimated_wait_s() == 0.0  # a free worker: no wait at all
        assert batcher.estimated_wait_s(40) == pytest.approx(batcher.cost.seconds(40))  # only its own rows
    finally:
        gated.gate.set()
        await batcher.stop()


def test_a_refusal_burst_needs_its_refusals_close_together() -> None:
    assert (BURST_REFUSALS, BURST_S) == (2, 0.05)  # the docstrings and docs/api.md say so
    burst = RefusalBurst(count=2, window_s=0.05)
    burst.note(now=1.0)
    assert not burst.active(now=1.0)  # one refusal is not a burst
    burst.note(now=1.2)
    assert not burst.active(now=1.2)  # two, 200 ms apart: a closed loop's stray refusals
    burst.note(now=1.23)
    assert burst.active(now=1.23) and burst.active(now=1.249)
    assert not burst.active(now=1.25)  # 50 ms after the older of the two: over


async def test_a_flood_s_first_refusals_end_the_empty_queue_exception_at_once(
    bundle_a: TinyBundle, gated: GatedModel
) -> None:
    """Outside shedding an empty queue admits whatever the running batch has left, also after two
    refusals at a trickle of demand (a closed loop); two refusals within 50 ms while requests arrive
    well above capacity (a flood's first moments, before the refusal share starts shedding) bring
    the usual bound at once: refused just behind a batch that has begun, admitted near its end."""
    batcher = MicroBatcher(
        workers=1, max_queue_ms=0, queue_factor=0.25, shedding_queue_factor=0.0, queue_floor_ms=0,
        max_request_rows=1000,
    )
    try:
        held = await hold_the_worker(batcher, gated, bundle_a, 40)
        (entry,) = batcher._running.values()
        entry.started = time.perf_counter()  # just begun: ~40 ms left
        for _ in range(30):
            batcher.refusal_share.note(False)  # a calm past: not shedding
        capacity = batcher.capacity_rows_s()
        assert capacity == pytest.approx(1000, rel=0.01)  # 1 ms per row
        now = time.monotonic()
        for i in range(BURST_DEMAND_WINDOW):
            batcher.demand.note(10, now=now - 2.0 + 0.3 * i)  # a trickle of requests
        batcher.refusal_burst.note(now=now - 0.01)
        batcher.refusal_burst.note(now=now)  # two refusals 10 ms apart
        assert batcher.refusal_burst.active()
        batcher.admit(40)  # at a trickle: the exception holds
        now = time.monotonic()
        for i in range(BURST_DEMAND_WINDOW):
            batcher.demand.note(40, now=now - 0.005 * (BURST_DEMAND_WINDOW - i))  # 40 rows every 5 ms
        assert batcher.demand.rate(last=BURST_DEMAND_WINDOW) > SERIAL_ENTER * capacity
        with pytest.raises(Overloaded):
            batcher.admit(40)  # ~40 ms left > 0.25 x 40 ms of its own
        assert not batcher.shedding  # the refusal share alone had not started shedding
        entry.started = time.perf_counter() - 0.039  # ~1 ms left
        batcher.admit(40)
        entry.started = time.perf_counter()
        batcher.refusal_burst.times.clear()  # the refusals are over 50 ms old
        batcher.admit(40)  # the exception is back
        gated.gate.set()
        await held
    finally:
        gated.gate.set()
        await batcher.stop()


async def test_shedding_factor_zero_admits_big_requests_only_to_a_free_worker(
    bundle_a: TinyBundle, gated: GatedModel
) -> None:
    """The default shedding factor 0: while shedding, a 32+-row request is refused behind any
    running batch however nearly done it is, and admitted once a worker is free; a small request
    keeps its floor (it batches)."""
    batcher = MicroBatcher(
        workers=1, max_queue_ms=0, queue_factor=0.5, shedding_queue_factor=0.0, queue_floor_ms=20,
        max_request_rows=1000,
    )
    try:
        held = await hold_the_worker(batcher, gated, bundle_a, 40)
        (entry,) = batcher._running.values()
        entry.started = time.perf_counter() - 0.039  # ~1 ms left
        batcher.admit(40)  # not shedding: 1 ms behind is within 0.5 x its own 40 ms
        for _ in range(10):
            batcher.refusal_share.note(True)
        with pytest.raises(Overloaded):
            batcher.admit(40)  # shedding: any wait at all refuses a big request
        assert batcher.shedding and batcher.factor() == 0.0
        assert batcher.saturated(None) is None  # before the body: it might be a small request
        batcher.admit(8)  # a small one: ~1 ms is within its floor
        gated.gate.set()
        await held
        batcher.admit(40)  # the worker is free: admitted
    finally:
        gated.gate.set()
        await batcher.stop()


async def test_admitted_rows_count_as_queued_until_they_are_submitted(
    bundle_a: TinyBundle, gated: GatedModel
) -> None:
    """Requests admitted in the same moment (before either is parsed and queued) see each other."""
    batcher = MicroBatcher(workers=1, max_queue_ms=0, queue_factor=1.0, queue_floor_ms=0, max_request_rows=1000)
    try:
        held = await hold_the_worker(batcher, gated, bundle_a, 40)
        (entry,) = batcher._running.values()
        entry.started = time.perf_counter()  # just begun: ~40 ms left
        first = batcher.reserve(40)  # behind ~40 ms of running work: within 1 x its own 40 ms
        assert batcher.queued_rows == 40
        with pytest.raises(Overloaded):
            batcher.reserve(40)  # the same request a moment later also waits for the first one
        cat, num = free_rows(bundle_a, 40, 1)
        queued = asyncio.ensure_future(batcher.submit(gated, cat, num, reservation=first))
        await asyncio.sleep(0)
        assert not first.held and batcher.queued_rows == 40  # now in the queue instead
        gated.gate.set()
        await asyncio.gather(held, queued)
        abandoned = batcher.reserve(10)  # e.g. its body failed to encode: released, never queued
        abandoned.release()
        abandoned.release()  # idempotent
        assert batcher.queued_rows == 0
    finally:
        gated.gate.set()
        await batcher.stop()


def test_a_request_cut_into_more_chunks_than_workers_costs_every_round() -> None:
    batcher = MicroBatcher(workers=1, max_batch_rows=128)
    batcher.cost.observe(100, 0.010)
    batcher.cost.observe(125, 0.0125)
    # 1000 rows -> 8 chunks of 125 on one worker, one after another
    assert batcher.own_seconds(1000) == pytest.approx(8 * 0.0125, rel=0.01)
    two = MicroBatcher(workers=2, max_batch_rows=128)
    two.cost = batcher.cost
    assert two.own_seconds(1000) == pytest.approx(4 * 0.0125, rel=0.01)


def test_refusal_share_forgets_with_its_half_life() -> None:
    share = RefusalShare(half_life_s=0.25)
    for _ in range(3):
        share.note(True, now=10.0)
    assert share.share == 1.0
    share.note(False, now=10.25)  # the three refusals now weigh 1.5
    assert share.share == pytest.approx(1.5 / 2.5)
    share.note(False, now=12.25)  # 2 s later: they have all but vanished
    assert share.share < 0.01


def test_sustained_refusals_tighten_the_queue_bound_with_hysteresis() -> None:
    metrics = ServiceMetrics()
    batcher = MicroBatcher(workers=1, queue_factor=2.0, shedding_queue_factor=0.5, metrics=metrics)
    clock = iter(range(1000))
    note = lambda refused: batcher.refusal_share.note(refused, now=next(clock) * 0.001)  # noqa: E731
    for _ in range(20):
        note(False)
    assert batcher.factor() == 2.0 and not batcher.shedding  # admitting everything: the lenient bound
    for _ in range(6):
        note(True)
    assert 0.2 < batcher.refusal_share.share < SHEDDING_ENTER and batcher.factor() == 2.0  # a few refusals
    while batcher.refusal_share.share <= SHEDDING_ENTER:
        note(True)
    assert batcher.factor() == 0.5 and batcher.shedding  # most requests refused: shedding
    assert metrics.registry.get_sample_value("dlf_shedding_processes") == 1  # visible to operators
    while batcher.refusal_share.share > (SHEDDING_ENTER + SHEDDING_LEAVE) / 2:
        note(False)
    assert batcher.factor() == 0.5  # between the thresholds it stays where it was
    while batcher.refusal_share.share >= SHEDDING_LEAVE:
        note(False)
    assert batcher.factor() == 2.0 and not batcher.shedding
    assert metrics.registry.get_sample_value("dlf_shedding_processes") == 0
    assert MicroBatcher(queue_factor=2.0).factor() == 2.0  # no shedding factor: never tightens


def test_shedding_needs_enough_recent_decisions() -> None:
    """After a quiet spell one refusal is 100 % of recent decisions; it must not start shedding."""
    batcher = MicroBatcher(workers=1, queue_factor=0.5, shedding_queue_factor=0.0)
    batcher.refusal_share.note(False, now=0.0)
    batcher.refusal_share.note(True, now=5.0)  # 5 s later: the admission has all but vanished
    assert batcher.refusal_share.share > 0.99 and not batcher._update_shedding()
    for i in range(10):
        batcher.refusal_share.note(True, now=5.0 + 0.001 * i)  # a real burst of refusals
    assert batcher._update_shedding() and batcher.factor() == 0.0


def test_shedding_starts_within_a_few_refusals_of_an_overload() -> None:
    """At 2x capacity a process sees a decision every ~7 ms; shedding must start within four of them
    (with eight, the first 50-150 ms of an overload queued behind running batches: docs/benchmarks.md)."""
    batcher = MicroBatcher(workers=1, queue_factor=0.5, shedding_queue_factor=0.0)
    batcher.refusal_share.note(False, now=0.0)  # quiet before
    batcher.refusal_share.note(True, now=5.000)
    batcher.refusal_share.note(False, now=5.007)
    assert not batcher._update_shedding()  # two decisions: not enough evidence yet
    batcher.refusal_share.note(True, now=5.014)
    batcher.refusal_share.note(True, now=5.021)
    assert batcher._update_shedding()  # three refusals among four decisions, 21 ms in


def test_admissions_on_an_idle_pool_end_shedding_and_spreading_resumes() -> None:
    """After an overload, requests admitted on an idle pool (which admits without consulting the
    shedding mode) must still bring the mode back to normal, or a lone request never spreads."""
    batcher = MicroBatcher(workers=1, spread_threads=1, queue_factor=0.5, shedding_queue_factor=0.0)
    batcher._spread_executor = ThreadPoolExecutor(max_workers=1)  # as start() makes it
    try:
        for _ in range(20):
            batcher._refuse()
        assert batcher.shedding and batcher._spread_rows(100) == 0
        for _ in range(100):
            batcher.admit(100)  # every worker free: admitted at once; the refusal share falls below 20 %
        assert not batcher.shedding and batcher._spread_rows(100) == 50
    finally:
        batcher._spread_executor.shutdown()


def test_the_small_request_floor_covers_a_running_and_a_next_full_batch() -> None:
    batcher = MicroBatcher(workers=1, max_batch_rows=128, queue_floor_ms=20, batches_per_worker=2)
    assert batcher.floor_s() == pytest.approx(0.020)  # nothing measured yet: the setting
    batcher.cost.observe(128, 0.004)  # a fast model: the setting still holds
    assert batcher.floor_s() == pytest.approx(0.020)
    slow = MicroBatcher(workers=1, max_batch_rows=128, queue_floor_ms=20, batches_per_worker=2)
    slow.cost.observe(128, 0.017)  # a slow machine: two 128-row batches
    assert slow.floor_s() == pytest.approx(0.034)
    slow.queue_floor_s = 0.0
    assert slow.floor_s() == 0.0  # 0 still switches the floor off


async def test_a_big_request_on_an_idle_pool_is_spread_over_the_extra_threads(
    bundle_a: TinyBundle, counting: CountingModel
) -> None:
    """One worker (one process per core) plus one spread thread: a lone 100-row request runs on
    both, the answer keeps row order; so does a 10-row one (the pool is idle: only latency counts);
    under 2 x MIN_SPREAD_ROWS rows it stays on the worker."""
    batcher = MicroBatcher(workers=1, spread_threads=1, max_batch_rows=128)
    await batcher.start()
    try:
        cat, num = random_rows(bundle_a, 100, seed=5)
        got = await batcher.submit(counting, cat, num)
        np.testing.assert_allclose(got, bundle_a.forward(cat, num), atol=1e-6)
        assert sorted(counting.calls) == [50, 50]
        assert {t.split("_")[0] for t in counting.threads} == {"dlf-infer", "dlf-spread"}
        counting.calls.clear()
        ten = random_rows(bundle_a, 10, seed=8)
        np.testing.assert_allclose(await batcher.submit(counting, *ten), bundle_a.forward(*ten), atol=1e-6)
        assert sorted(counting.calls) == [5, 5]
        counting.calls.clear()
        small = random_rows(bundle_a, 2 * MIN_SPREAD_ROWS - 1, seed=6)
        np.testing.assert_allclose(await batcher.submit(counting, *small), bundle_a.forward(*small), atol=1e-6)
        assert counting.calls == [2 * MIN_SPREAD_ROWS - 1]
        assert batcher._spreading == 0
    finally:
        await batcher.stop()


async def test_no_spread_while_the_worker_is_busy_or_the_service_sheds(bundle_a: TinyBundle, gated: GatedModel) -> None:
    """Under load the spread threads stay out of it: a request that finds the worker busy queues
    for it whole, and while shedding even an idle pool runs a request on its worker only."""
    batcher = MicroBatcher(workers=1, spread_threads=1, max_batch_rows=128)
    try:
        held = await hold_the_worker(batcher, gated, bundle_a, 2 * MIN_SPREAD_ROWS - 1)  # too few to spread
        waiting = asyncio.ensure_future(batcher.submit(gated, *free_rows(bundle_a, 100, seed=7)))
        await asyncio.sleep(0.05)
        assert not waiting.done() and batcher.queued_rows == 100  # queued whole, nothing spread
        gated.gate.set()
        await asyncio.gather(held, waiting)
        assert all(name.startswith("dlf-infer") for name, _ in gated.calls)
        batcher.shedding = True
        assert batcher._spread_rows(100) == 0
        batcher.shedding = False
        assert batcher._spread_rows(100) == 50
        assert batcher._spread_rows(1000) == 500  # one call each side: the pool was idle
    finally:
        gated.gate.set()
        await batcher.stop()


def test_spread_threads_default_to_the_cores_the_other_processes_own(bundle_a: TinyBundle) -> None:
    """``serve`` with one process per core: each pool gets one worker and cores - 1 spread threads;
    one process already has a worker per core and gets none."""
    from service.app import pool_threads
    from service.settings import Settings

    cores = usable_cores()
    assert pool_threads(Settings(processes=cores)) == (max(1, cores // cores), cores - 1)
    assert pool_threads(Settings(processes=1)) == (cores, 0)
    assert pool_threads(Settings(processes=1, spread_threads=3)) == (cores, 3)
    assert pool_threads(Settings(processes=1, inference_workers=1)) == (1, cores - 1)


async def test_a_lone_request_spreads_only_onto_cores_the_other_processes_leave_idle(
    tmp_path: Path, bundle_a: TinyBundle, gated: GatedModel
) -> None:
    """In a serve group the spread threads run on the other processes' cores: while the board says
    one of them computes, a lone request stays on this process's worker; once it is idle, the
    request is spread again. The pool publishes its own running calls for the others."""
    path = create_board(tmp_path, 2)
    other = BusyBoard.open(path, 1)
    batcher = MicroBatcher(workers=1, spread_threads=1, max_batch_rows=128, board=BusyBoard.open(path, 0))
    try:
        held = await hold_the_worker(batcher, gated, bundle_a, 2 * MIN_SPREAD_ROWS - 1)
        assert other.others() == 1  # this pool's held batch, as the other process sees it
        gated.gate.set()
        await held
        assert other.others() == 0
        other.publish(1)  # the other process is computing
        assert batcher._spread_rows(100) == 0
        cat, num = random_rows(bundle_a, 100, seed=11)
        gated.calls.clear()
        np.testing.assert_allclose(await batcher.submit(gated, cat, num), bundle_a.forward(cat, num), atol=1e-6)
        assert [rows for _, rows in gated.calls] == [100]  # one call, on the worker
        other.publish(0)
        assert batcher._spread_rows(100) == 50
        gated.calls.clear()
        np.testing.assert_allclose(await batcher.submit(gated, cat, num), bundle_a.forward(cat, num), atol=1e-6)
        assert sorted(rows for _, rows in gated.calls) == [50, 50]
        assert other.others() == 0  # both calls finished and unpublished
    finally:
        gated.gate.set()
        await batcher.stop()


async def test_a_small_batch_for_the_loop_waits_two_ticks_for_company(
    bundle_a: TinyBundle, counting: CountingModel
) -> None:
    """A small request on an idle pool runs inline, but not in the tick it was queued while other
    client connections are open: one queued a tick later (its bytes were read meanwhile) joins the
    same call. With one connection (a lone client) it runs at once. A big batch (more than
    ``inline_rows``) goes to a worker at once."""
    assert INLINE_GATHER_TICKS == 2
    open_connections = [8]
    batcher = MicroBatcher(workers=1, inline_rows=16, max_batch_rows=128, connections=lambda: open_connections[0])

    async def one_tick_apart() -> None:
        first = asyncio.ensure_future(batcher.submit(counting, *random_rows(bundle_a, 1, seed=21)))
        await asyncio.sleep(0)  # the first is queued; the next request comes a tick later
        second = random_rows(bundle_a, 2, seed=22)
        got = await asyncio.gather(first, batcher.submit(counting, *second))
        np.testing.assert_allclose(got[1], bundle_a.forward(*second), atol=1e-6)

    await batcher.start()
    try:
        await one_tick_apart()
        assert counting.calls == [3]  # one inline call for both
        assert counting.threads == {threading.current_thread().name}  # on the event loop
        counting.calls.clear()
        open_connections[0] = 1
        await one_tick_apart()
        assert counting.calls == [1, 2]  # a lone client's request did not wait
        counting.calls.clear()
        counting.threads.clear()
        cat, num = random_rows(bundle_a, 40, seed=23)
        np.testing.assert_allclose(await batcher.submit(counting, cat, num), bundle_a.forward(cat, num), atol=1e-6)
        assert counting.calls == [40] and {t.split("_")[0] for t in counting.threads} == {"dlf-infer"}
    finally:
        await batcher.stop()


def test_row_demand_reads_a_rate_over_its_window_and_falls_in_silence() -> None:
    demand = RowDemand(window=16)
    for i in range(7):
        demand.note(100, now=i * 0.005)
    assert demand.rate(now=0.035) == 0.0  # under half a window: no reading
    for i in range(7, 400):  # 100 rows every 5 ms: 20,000 rows/s
        demand.note(100, now=i * 0.005)
    assert demand.rate(now=399 * 0.005) == pytest.approx(20_000, rel=0.01)
    assert demand.rate(now=399 * 0.005 + 0.075) == pytest.approx(10_000, rel=0.01)  # silence as long again: half
    for i in range(16):  # a step to 40,000 rows/s is read once the window holds it: 16 requests, 40 ms
        demand.note(100, now=2.0 + i * 0.0025)
    assert demand.rate(now=2.0 + 15 * 0.0025) == pytest.approx(40_000, rel=0.01)
    for i in range(3):  # over the last few requests only: a step is read at once
        demand.note(100, now=3.0 + i * 0.001)
    assert demand.rate(now=3.002, last=3) == pytest.approx(100_000, rel=0.01)
    assert demand.rate(now=3.002) < 40_000  # the whole window still holds the slower past
    assert RowDemand(window=16).rate(last=3) == 0.0  # fewer requests than asked for: no reading


def serial_batcher(**kwargs: object) -> MicroBatcher:
    """One worker whose measured cost makes 10,000 rows/s, shedding on (most recent decisions refused)."""
    kwargs.setdefault("spread_threads", 1)
    batcher = MicroBatcher(workers=1, max_batch_rows=128, queue_factor=0.25, shedding_queue_factor=0.0,
                           serial_overload=True, **kwargs)  # type: ignore[arg-type]
    batcher.cost.observe(128, 0.0128)
    for _ in range(30):  # most recent decisions refused: shedding
        batcher.refusal_share.note(True)
    assert batcher._update_shedding() and batcher.capacity_rows_s() == pytest.approx(10_000)
    return batcher


def ask(batcher: MicroBatcher, rows_per_s: float, seconds: float, start: float, refused: bool = True) -> float:
    """Note 100-row requests at ``rows_per_s`` for ``seconds`` from ``start``, each also a refusal unless
    ``refused`` is False; returns the end time."""
    step = 100 / rows_per_s
    t = start
    while t < start + seconds:
        batcher.demand.note(100, now=t)
        if refused:
            batcher.persistence.note(now=t)
        t += step
    return t


def test_refusal_persistence_needs_refusals_in_every_recent_slice() -> None:
    persistence = RefusalPersistence(bucket_s=0.025, buckets=4)
    for i in range(20):  # a flood: a refusal every 10 ms
        persistence.note(now=10.0 + i * 0.01)
    assert persistence.persistent(now=10.2)
    assert not persistence.persistent(now=10.3)  # 100 ms of silence: no longer
    burst = RefusalPersistence(bucket_s=0.025, buckets=4)
    for _ in range(16):  # 16 connections refused at once, back together a second later
        burst.note(now=20.0)
        burst.note(now=21.0)
    assert not any(burst.persistent(now=20.0 + k * 0.01) for k in range(120))


def test_serial_overload_follows_demand_against_capacity_with_hysteresis() -> None:
    """Closed-loop clients that wait out Retry-After ask for about capacity: no serial mode. An open-loop
    flood at 2x with refusals all the time turns it on (visible in the metric); between the thresholds it
    stays as it was; at capacity again it ends. The same demand in one burst of refusals, without
    shedding, or switched off: never."""
    metrics = ServiceMetrics()
    batcher = serial_batcher(metrics=metrics)
    t = ask(batcher, 10_500, 1.0, 0.0)
    assert not batcher._update_serial(now=t)  # 1.05x: closed loop at capacity
    t = ask(batcher, 20_000, 1.0, t, refused=False)
    assert not batcher._update_serial(now=t)  # 2x, but refusals did not persist
    t = ask(batcher, 20_000, 1.0, t)
    assert batcher._update_serial(now=t) and batcher.serial
    assert metrics.registry.get_sample_value("dlf_serial_overload_processes") == 1
    t = ask(batcher, 12_500, 1.0, t)
    assert batcher._update_serial(now=t)  # 1.25x: between SERIAL_LEAVE and SERIAL_ENTER it stays on
    t = ask(batcher, 10_000, 1.0, t)
    assert not batcher._update_serial(now=t) and not batcher.serial
    assert metrics.registry.get_sample_value("dlf_serial_overload_processes") == 0
    assert SERIAL_LEAVE < 1.25 < SERIAL_ENTER
    t = ask(batcher, 20_000, 1.0, t)
    batcher.refusal_share = RefusalShare()  # nothing refused lately: not shedding
    batcher._update_shedding()
    assert not batcher._update_serial(now=t)
    off = serial_batcher()
    off.serial_overload = False
    assert not off._update_serial(now=ask(off, 20_000, 1.0, 0.0))
    alone = serial_batcher(spread_threads=0)  # one inference thread: serial would idle the other cores
    assert not alone._update_serial(now=ask(alone, 20_000, 1.0, 0.0))


async def test_serial_overload_admits_a_big_request_only_on_an_idle_group_and_spreads_it(
    tmp_path: Path, bundle_a: TinyBundle, gated: GatedModel
) -> None:
    """In serial mode a 32+-row request is refused while any process of the group computes or holds an
    admitted request, is admitted once all are idle (and then holds the group while it is parsed),
    and runs over the worker and the spread thread. Small requests keep the usual rules."""
    path = create_board(tmp_path, 2)
    other = BusyBoard.open(path, 1)
    batcher = serial_batcher(board=BusyBoard.open(path, 0))
    await batcher.start()
    try:
        now = time.monotonic()
        for k in range(PERSIST_BUCKETS, -1, -1):  # refusals in every recent slice
            batcher.persistence.note(now=now - k * PERSIST_BUCKET_S)
        for _ in range(DEMAND_WINDOW):
            batcher.demand.note(1000)  # a flood, now
        assert batcher._update_serial()  # as the last decision left it
        other.publish(1)  # the other process computes
        with pytest.raises(Overloaded):
            batcher.admit(100)
        assert batcher.serial
        batcher.admit(MIN_SPLIT_ROWS - 1)  # a small request: idle pool, admitted as ever
        other.publish(0)
        reservation = batcher.reserve(100)
        assert other.others() == 1  # parsing an admitted request already holds the group
        with pytest.raises(Overloaded):
            batcher.admit(100)  # a second big one waits for nobody: refused
        cat, num = random_rows(bundle_a, 100, seed=12)
        out = await batcher.submit(gated, cat, num, reservation=reservation)
        np.testing.assert_allclose(out, bundle_a.forward(cat, num), atol=1e-6)
        assert sorted(rows for _, rows in gated.calls) == [50, 50]
        assert len({thread for thread, _ in gated.calls}) == 2  # the worker and the spread thread
        assert other.others() == 0 and batcher.group_idle()
        batcher.admit(100)  # idle again: admitted
    finally:
        other.publish(0)
        await batcher.stop()
