"""Prometheus metrics of the service (names fixed in docs/architecture.md).

Each app instance owns its own ``CollectorRegistry`` so several apps (tests)
can live in one process without "duplicated timeseries" errors.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.loop_metrics import ClosedLoopMetrics

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DIFF_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
PROB_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


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
        self.queue_depth = Gauge("dlf_queue_depth", "Requests waiting for the micro-batcher.", registry=r)
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
            "dlf_model_info", "Model being served (value 1).", ["version", "provider"], registry=r
        )
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
        self.model_info.clear()
        self.model_info.labels(version=version, provider=provider).set(1)

    def forget_shadow(self, version: str) -> None:
        """Drop a stopped shadow version's series so dashboards show only running comparisons."""
        for metric in (self.shadow_comparisons, self.shadow_abs_diff, self.shadow_probability):
            with contextlib.suppress(KeyError):
                metric.remove(version)
