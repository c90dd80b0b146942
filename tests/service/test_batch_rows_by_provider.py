"""The batch size follows the provider the model runs on: 128 rows on the CPU, 1024 on CUDA, where a
call costs about the same up to ~1,000 rows (1000 x 32 on an H200: ~165k rows/s with 128-row calls,
~600k with 1024; docs/gpu.md). Checked on the CPU with a model that reports CUDA as its provider."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from test_batcher import CountingModel, random_rows

from service.batcher import ACCELERATOR_BATCH_ROWS, CPU_BATCH_ROWS, MicroBatcher
from service.metrics import ServiceMetrics
from service.model_holder import LoadedModel, load_model
from service.settings import Settings
from service.state import ServiceState
from service.testing import TinyBundle

CUDA_FIRST = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@asynccontextmanager
async def serving_state(bundle: TinyBundle, max_batch_rows: int | None = None) -> AsyncIterator[ServiceState]:
    """A ServiceState with a started one-worker batcher, built as the lifespan builds it (no model yet)."""
    settings = Settings(registry=bundle.path.parent, max_batch_rows=max_batch_rows)
    state = ServiceState(settings=settings, metrics=ServiceMetrics())
    state.batcher = MicroBatcher(workers=1, max_batch_rows=max_batch_rows or CPU_BATCH_ROWS)
    await state.batcher.start()
    try:
        yield state
    finally:
        await state.batcher.stop()


async def calls_for_one_request(state: ServiceState, model: LoadedModel, bundle: TinyBundle, rows: int) -> list[int]:
    """Install ``model``, send one ``rows``-row request through the state's batcher, return the call sizes."""
    state.install(model)
    counting = CountingModel(model)
    assert state.batcher is not None
    got = await state.batcher.submit(counting, *random_rows(bundle, rows, seed=rows))
    assert got.shape == (rows,)
    return counting.calls


async def test_a_model_on_cuda_gets_1000_row_requests_in_one_call(bundle_a: TinyBundle) -> None:
    async with serving_state(bundle_a) as state:
        on_cpu = load_model(bundle_a.path, intra_op_threads=1)
        assert on_cpu.provider == "CPUExecutionProvider"
        on_cuda = dataclasses.replace(on_cpu, providers=CUDA_FIRST)
        assert await calls_for_one_request(state, on_cuda, bundle_a, 1000) == [1000]
        assert state.batcher is not None and state.batcher.max_batch_rows == ACCELERATOR_BATCH_ROWS
        assert state.holder.current is on_cuda
        # a reload onto a CPU model (a CUDA library that stopped loading) goes back to CPU batches
        cpu_calls = await calls_for_one_request(state, on_cpu, bundle_a, 1000)
        assert sum(cpu_calls) == 1000 and max(cpu_calls) <= CPU_BATCH_ROWS


async def test_a_set_max_batch_rows_wins_over_the_provider(bundle_a: TinyBundle) -> None:
    async with serving_state(bundle_a, max_batch_rows=200) as state:
        on_cuda = dataclasses.replace(load_model(bundle_a.path, intra_op_threads=1), providers=CUDA_FIRST)
        calls = await calls_for_one_request(state, on_cuda, bundle_a, 1000)
    assert sum(calls) == 1000 and max(calls) <= 200 and len(calls) == 5


@pytest.mark.usefixtures("bundle_a")
async def test_info_reports_the_batch_size_in_use(make_client) -> None:
    client = await make_client()
    info = (await client.get("/info")).json()
    want = CPU_BATCH_ROWS if info["providers"][0] == "CPUExecutionProvider" else ACCELERATOR_BATCH_ROWS
    assert info["batching"]["max_batch_rows"] == want
