"""Shadow mode: a candidate version scores a sample of live traffic off the response path.

The live request hands its rows and answer to ``ShadowScorer.submit`` once the
answer is computed, which starts a detached task (sampled, bounded backlog); it re-encodes the rows with the *shadow*
bundle's own schema and vocabulary (ids and numeric normalisation may differ
between versions), runs the shadow session in its own worker thread (never the
live batcher's), and records how far the two models agree. Any failure is
logged and counted, never seen by the client; a full backlog skips the sample.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.encoding import assign_ids, parse_records
from service.feature_store import FeatureStore
from service.metrics import ServiceMetrics
from service.model_holder import LoadedModel

log = logging.getLogger(__name__)

DECISION_THRESHOLD = 0.5


@dataclass
class ShadowStats:
    """Running sums of the comparison; ``summary`` turns them into the /info block."""

    rows: int = 0
    abs_diff_sum: float = 0.0
    live_sum: float = 0.0
    shadow_sum: float = 0.0
    agree: int = 0
    requests: int = 0
    skipped: int = 0
    errors: int = 0


class ShadowScorer:
    """One shadow version with its sample rate, stats and a private one-thread executor."""

    def __init__(
        self,
        model: LoadedModel,
        sample_rate: float,
        metrics: ServiceMetrics,
        *,
        max_pending: int = 8,
        seed: int | None = None,
    ) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        self.model = model
        self.sample_rate = sample_rate
        self.metrics = metrics
        self.max_pending = max_pending
        self.stats = ShadowStats()
        self._rng = random.Random(seed)
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlf-shadow")

    @property
    def version(self) -> str:
        return self.model.version

    def sample(self) -> bool:
        """Whether this request is compared (sampled and the backlog has room)."""
        if self._rng.random() >= self.sample_rate:
            return False
        if self._pending >= self.max_pending:
            self.stats.skipped += 1
            return False
        self._pending += 1  # reserved here, on the event loop, so bursts cannot overshoot
        return True

    def submit(self, store: FeatureStore, rows: Sequence[Mapping[str, Any]], live: Sequence[float]) -> bool:
        """Maybe (per sample rate and backlog) start a detached comparison; returns whether it started."""
        if not self.sample():
            return False
        task = asyncio.get_running_loop().create_task(self.compare(store, rows, live))
        self._tasks.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self) -> None:
        """Wait for the comparisons already started (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def compare(
        self, store: FeatureStore, rows: Sequence[Mapping[str, Any]], live: Sequence[float]
    ) -> None:
        """Score ``rows`` with the shadow model and record agreement with ``live``; never raises."""
        try:
            parsed = parse_records(rows, self.model.schema, max_rows=max(len(rows), 1))
            lookup = await store.lookup(self.version, parsed.unique_keys())
            cat_ids, _ = assign_ids(parsed, lookup.ids)
            loop = asyncio.get_running_loop()
            shadow = await loop.run_in_executor(self._executor, self.model.run, cat_ids, parsed.numerics)
            self._record(np.asarray(live, dtype=np.float64), shadow.astype(np.float64))
        except Exception:
            self.stats.errors += 1
            log.exception("shadow comparison with %s failed", self.version)
        finally:
            self._pending -= 1

    def _record(self, live: np.ndarray, shadow: np.ndarray) -> None:
        if live.shape != shadow.shape:
            raise ValueError(f"shadow returned {shadow.shape[0]} rows for {live.shape[0]} live rows")
        diff = np.abs(live - shadow)
        s = self.stats
        s.requests += 1
        s.rows += int(live.size)
        s.abs_diff_sum += float(diff.sum())
        s.live_sum += float(live.sum())
        s.shadow_sum += float(shadow.sum())
        s.agree += int(((live >= DECISION_THRESHOLD) == (shadow >= DECISION_THRESHOLD)).sum())
        self.metrics.shadow_comparisons.labels(version=self.version).inc(int(live.size))
        diff_hist = self.metrics.shadow_abs_diff.labels(version=self.version)
        prob_hist = self.metrics.shadow_probability.labels(version=self.version)
        for d, p in zip(diff, shadow, strict=True):
            diff_hist.observe(float(d))
            prob_hist.observe(float(p))

    def summary(self) -> dict[str, Any]:
        """What /info shows: rows compared, mean |diff|, mean live vs shadow p, decision agreement at 0.5."""
        s = self.stats
        n = s.rows
        return {
            "version": self.version,
            "sample_rate": self.sample_rate,
            "requests_compared": s.requests,
            "rows_compared": n,
            "mean_abs_diff": s.abs_diff_sum / n if n else None,
            "mean_live_probability": s.live_sum / n if n else None,
            "mean_shadow_probability": s.shadow_sum / n if n else None,
            "decision_agreement": s.agree / n if n else None,
            "decision_threshold": DECISION_THRESHOLD,
            "skipped": s.skipped,
            "errors": s.errors,
        }

    def close(self) -> None:
        """Stop the worker thread once queued comparisons are done (does not block the loop)."""
        self._executor.shutdown(wait=False)
