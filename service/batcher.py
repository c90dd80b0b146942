"""Micro-batching: coalesce concurrent requests into one ONNX Runtime call.

The first waiting request opens a batch; the batch closes when it holds
``max_batch_rows`` rows or ``max_wait_ms`` has passed since that request
arrived, then runs in a worker thread (never on the event loop). While a batch
runs, newcomers queue up and form the next one, so under load batches grow by
themselves. Only requests that took the same model object share a batch, which
keeps hot swaps clean. A request larger than ``max_batch_rows`` runs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.metrics import ServiceMetrics


class Runnable(Protocol):
    """What the batcher needs from a model (``LoadedModel`` satisfies it)."""

    def run(self, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray: ...


@dataclass
class _Item:
    model: Runnable
    cat_ids: np.ndarray
    numerics: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = int(self.cat_ids.shape[0])


class MicroBatcher:
    """Queue + one background task; ``submit`` returns this request's probabilities in row order."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        max_batch_rows: int = 512,
        max_wait_ms: float = 2.0,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        if max_batch_rows < 1:
            raise ValueError("max_batch_rows must be >= 1")
        self.enabled = enabled
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000.0
        self.metrics = metrics
        self._pending: deque[_Item] = deque()
        self._pending_rows = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # One batch in flight at a time: ONNX Runtime parallelises inside a call (intra-op threads).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlf-infer")
        self.batches_run = 0

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._worker(), name="dlf-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("service is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, model: Runnable, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if not self.enabled:
            return await loop.run_in_executor(None, self._infer, model, cat_ids, numerics)
        if self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        item = _Item(model, cat_ids, numerics, loop.create_future(), loop.time())
        self._pending.append(item)
        self._pending_rows += item.rows
        self._set_depth()
        self._wakeup.set()
        return await item.future

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._pending))

    def _infer(self, model: Runnable, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        probs = model.run(cat_ids, numerics)
        self.batches_run += 1
        if self.metrics is not None:
            self.metrics.inference_latency.observe(time.perf_counter() - start)
            self.metrics.batch_rows.observe(int(cat_ids.shape[0]))
        return probs

    def _take_batch(self) -> list[_Item]:
        first_model = self._pending[0].model
        batch: list[_Item] = []
        rows = 0
        while self._pending:
            item = self._pending[0]
            if item.model is not first_model or (batch and rows + item.rows > self.max_batch_rows):
                break
            self._pending.popleft()
            self._pending_rows -= item.rows
            if item.future.cancelled():  # client went away while queued
                continue
            batch.append(item)
            rows += item.rows
        self._set_depth()
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._pending[0].arrived + self.max_wait_s
            while self._pending_rows < self.max_batch_rows and (remaining := deadline - loop.time()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take_batch()
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        if len(batch) == 1:
            cat, num = batch[0].cat_ids, batch[0].numerics
        else:
            cat = np.concatenate([b.cat_ids for b in batch], axis=0)
            num = np.concatenate([b.numerics for b in batch], axis=0)
        try:
            probs = await loop.run_in_executor(self._executor, self._infer, batch[0].model, cat, num)
        except Exception as exc:  # one bad batch fails its requests, not the worker
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        offset = 0
        for item in batch:
            if not item.future.done():
                item.future.set_result(probs[offset : offset + item.rows])
            offset += item.rows
