"""Prometheus metrics of the service (names fixed in docs/architecture.md).

Each app instance owns its own ``CollectorRegistry`` so several apps (tests)
can live in one process without "duplicated timeseries" errors.
"""

from __future__ import annotations

import contextlib
import os
import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from service.loop_metrics import ClosedLoopMetrics

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DIFF_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
PROB_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
SMALL_BATCH = 16  # VectorHistogram: up to this many values, a Python loop beats numpy's call overhead


def bucket_counts(bounds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-bucket (non-cumulative) counts of ``values`` for upper ``bounds``; the last slot is +Inf."""
    return np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1)


class VectorHistogram(Collector):
    """A histogram labelled by model version that takes a whole batch of values per call.

    prometheus-client's Histogram observes one value at a time (a lock + a bucket
    search per row, ~1000 calls for a 1000-row request); here one np.histogram
    per request updates the buckets. Exposed through the public custom-collector API.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._bounds = [float(b) for b in buckets]
        self._lock = threading.Lock()
        self._series: dict[str, tuple[np.ndarray, list[float]]] = {}  # version -> (bucket counts, [sum])

    def observe(self, version: str, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0:
            return
        if values.size <= SMALL_BATCH:  # numpy's per-call overhead dominates a few values
            with self._lock:
                acc, total = self._series.setdefault(version, (np.zeros(len(self.bounds) + 1, np.int64), [0.0]))
                for v in values.tolist():
                    acc[bisect_left(self._bounds, v)] += 1
                    total[0] += v
            return
        counts = bucket_counts(self.bounds, values)
        with self._lock:
            acc, total = self._series.setdefault(version, (np.zeros(len(self.bounds) + 1, np.int64), [0.0]))
            acc += counts[: len(acc)]
            total[0] += float(values.sum())

    def remove(self, version: str) -> None:
        with self._lock:
            self._series.pop(version, None)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["version"])
        with self._lock:
            for version, (acc, total) in self._series.items():
                cumulative = np.cumsum(acc)
                buckets = [
                    (repr(float(b)), float(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)
                ]
                buckets.append(("+Inf", float(cumulative[-1])))
                family.add_metric([version], buckets, total[0])
        yield family


def multiprocess_mode() -> bool:
    """Whether prometheus-client keeps values in PROMETHEUS_MULTIPROC_DIR (``serve --processes N``)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class SharedVectorHistogram:
    """VectorHistogram's interface over a prometheus-client Histogram, for multiprocess mode.

    A custom collector is invisible to the other processes, so here the per-request bucket
    counts go into the Histogram's own (file-backed) bucket values: one ``inc`` per non-empty
    bucket instead of one ``observe`` per row. ``_buckets``/``_sum`` are prometheus-client's
    per-child values (non-cumulative counts, the last one +Inf), as its ``observe`` uses them.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...], registry: CollectorRegistry) -> None:
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._bounds = [float(b) for b in buckets]
        self.histogram = Histogram(name, documentation, ["version"], buckets=buckets, registry=registry)
        self._children: dict[str, Any] = {}  # version -> labelled child (``labels()`` locks and validates)

    def observe(self, version: str, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0:
            return
        child = self._children.get(version)
        if child is None:
            child = self._children[version] = self.histogram.labels(version=version)
        if values.size <= SMALL_BATCH:  # as in VectorHistogram: numpy's per-call overhead dominates a few values
            small = values.tolist()
            for v in small:
                child._buckets[bisect_left(self._bounds, v)].inc(1)
            child._sum.inc(sum(small))
            return
        counts = bucket_counts(self.bounds, values)
        for i, n in enumerate(counts.tolist()):
            if n:
                child._buckets[i].inc(n)
        child._sum.inc(float(values.sum()))

    def remove(self, version: str) -> None:
        """Series cannot be removed in multiprocess mode: a stopped version's counts stay (frozen)."""


class ServiceMetrics:
    """All dlf_* collectors, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "dlf_requests", "HTTP requests by endpoint and status code.", ["endpoint", "status"], registry=r
        )
        self.request_latency = Histogram(
            "dlf_request_latency_seconds",
            "HTTP request latency.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_rows = Histogram(
            "dlf_request_rows", "Rows per /predict request.", buckets=ROW_BUCKETS, registry=r
        )
        self.batch_rows = Histogram(
            "dlf_batch_rows", "Rows per ONNX Runtime call.", buckets=ROW_BUCKETS, registry=r
        )
        self.inference_latency = Histogram(
            "dlf_inference_latency_seconds",
            "ONNX Runtime session.run latency per batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # multiprocess_mode: how /metrics adds up the processes of `serve --processes N` (ignored otherwise)
        self.queue_depth = Gauge(
            "dlf_queue_depth", "Requests waiting for the micro-batcher.", registry=r, multiprocess_mode="livesum"
        )
        self.queued_rows = Gauge(
            "dlf_queued_rows",
            "Rows waiting for a free inference worker (admission bound).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.shedding = Gauge(
            "dlf_shedding_processes",
            "Service processes in shedding mode (most recent /predict requests refused; tighter queue bound).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.serial = Gauge(
            "dlf_serial_overload_processes",
            "Service processes in serial overload mode (demand well above capacity: one 32+-row request at a time"
            " in the serve group, spread over every core).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inference_workers = Gauge(
            "dlf_inference_workers", "Inference worker threads of the pool.", registry=r, multiprocess_mode="livesum"
        )
        self.rejected_requests = Counter(
            "dlf_rejected_requests",
            "Requests answered 503 + Retry-After because the inference queue was full.",
            registry=r,
        )
        self.dropped_requests = Counter(
            "dlf_dropped_requests",
            "Requests dropped before inference because their client had disconnected.",
            registry=r,
        )
        self.in_flight = Gauge(
            "dlf_in_flight_requests", "HTTP requests being handled now.", registry=r, multiprocess_mode="livesum"
        )
        self.oov_values = Counter(
            "dlf_oov_values",
            "Categorical values outside the vocabulary, per field (served as the OOV id).",
            ["field"],
            registry=r,
        )
        self.served_probability: VectorHistogram | SharedVectorHistogram
        doc = "Served click probabilities per row, by model version."
        if multiprocess_mode():
            self.served_probability = SharedVectorHistogram("dlf_served_probability", doc, PROB_BUCKETS, r)
        else:
            self.served_probability = VectorHistogram("dlf_served_probability", doc, PROB_BUCKETS)
            r.register(self.served_probability)
        self.cache_hits = Counter(
            "dlf_feature_cache_hits", "Feature id lookups served by the cache.", registry=r
        )
        self.cache_misses = Counter(
            "dlf_feature_cache_misses", "Feature id lookups that had to go to the store.", registry=r
        )
        self.redis_errors = Counter("dlf_redis_errors", "Failed Redis round trips.", registry=r)
        self.degraded_responses = Counter(
            "dlf_degraded_responses",
            "Responses answered without the feature store (unknown -> OOV).",
            registry=r,
        )
        self.model_info = Gauge(
            "dlf_model_info",
            "Model being served (value 1).",
            ["version", "provider"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._model_labels: tuple[str, str] | None = None
        self.reloads = Counter(
            "dlf_reloads", "Model reload attempts by result (ok, unchanged, refused).", ["result"], registry=r
        )
        self.shadow_comparisons = Counter(
            "dlf_shadow_comparisons",
            "Rows scored by the shadow model next to the live one.",
            ["version"],
            registry=r,
        )
        self.shadow_abs_diff = Histogram(
            "dlf_shadow_abs_diff",
            "|live - shadow| probability per compared row.",
            ["version"],
            buckets=DIFF_BUCKETS,
            registry=r,
        )
        self.shadow_probability = Histogram(
            "dlf_shadow_probability",
            "Shadow model probabilities of compared rows.",
            ["version"],
            buckets=PROB_BUCKETS,
            registry=r,
        )
        self.loop = ClosedLoopMetrics(r)  # impressions, feedback, online calibration

    def set_model(self, version: str, provider: str) -> None:
        """Exactly one dlf_model_info series: the model in use now."""
        if not multiprocess_mode():
            self.model_info.clear()
        elif self._model_labels is not None:  # no clear there (files keep values): the old one reads 0
            self.model_info.labels(*self._model_labels).set(0)
        self.model_info.labels(version=version, provider=provider).set(1)
        self._model_labels = (version, provider)

    def forget_shadow(self, version: str) -> None:
        """Drop a stopped shadow version's series so dashboards show only running comparisons."""
        if multiprocess_mode():  # not supported there: the series stay, frozen
            return
        for metric in (self.shadow_comparisons, self.shadow_abs_diff, self.shadow_probability):
            with contextlib.suppress(KeyError):
                metric.remove(version)
