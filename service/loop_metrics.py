"""Prometheus series of the closed loop: impression logging, feedback, online calibration.

Calibration per model version comes from two histograms over the predicted
probability of impressions that received feedback:

- ``dlf_feedback_probability{version}``: every joined impression
  (``_count`` = impressions with feedback, ``_sum`` = sum of predicted CTR);
- ``dlf_feedback_clicked_probability{version}``: the clicked ones.

Mean predicted CTR = ``_sum / _count`` of the first; observed CTR =
``_count`` of the second / ``_count`` of the first; bucket by bucket the two
give an online reliability diagram. All are counters, so they add up across
replicas (``sum by (version)``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

CALIBRATION_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))


class ClosedLoopMetrics:
    """Registered on the service's own registry by ``ServiceMetrics``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.impressions_logged = Counter(
            "dlf_impressions_logged", "Impressions (rows) written to the impression stream.", registry=r
        )
        self.impressions_dropped = Counter(
            "dlf_impressions_dropped",
            "Impressions (rows) not logged: redis_error, redis_down (backoff), queue_full, shutdown, error.",
            ["reason"],
            registry=r,
        )
        self.impressions_sampled_out = Counter(
            "dlf_impressions_sampled_out",
            "Impressions (rows) left out by DLF_IMPRESSIONS_SAMPLE_RATE.",
            registry=r,
        )
        self.feedback_events = Counter(
            "dlf_feedback_events",
            "Feedback events by result: accepted, duplicate, unknown.",
            ["result"],
            registry=r,
        )
        self.feedback_probability = Histogram(
            "dlf_feedback_probability",
            "Predicted probability of impressions that received feedback (count/sum: mean predicted CTR).",
            ["version"],
            buckets=CALIBRATION_BUCKETS,
            registry=r,
        )
        self.feedback_clicked_probability = Histogram(
            "dlf_feedback_clicked_probability",
            "Predicted probability of clicked impressions (count / joined count: observed CTR).",
            ["version"],
            buckets=CALIBRATION_BUCKETS,
            registry=r,
        )
        self.request_log_dropped = Counter(
            "dlf_request_log_dropped",
            "JSON-lines request log entries dropped because its queue was full.",
            registry=r,
        )
