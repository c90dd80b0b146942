"""Service settings, read from the environment (prefix ``DLF_``; ``REDIS_URL`` unprefixed).

One object built once per app instance, so tests can build apps with their own
settings instead of patching globals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.contract import reload_channel as default_reload_channel


class Settings(BaseSettings):
    """Every knob of the online service; the table in docs/api.md documents each one."""

    model_config = SettingsConfigDict(env_prefix="DLF_", extra="ignore", populate_by_name=True)

    registry: Path = Field(Path("registry"), description="Bundle registry directory (<registry>/<version>/).")
    model_version: str | None = Field(
        None, description="Serve this version instead of <registry>/CURRENT (or the newest bundle)."
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description="Redis for feature ids; unset = embedded vocab read from the bundle.",
    )
    redis_cluster: bool = Field(
        False,
        description="REDIS_URL names a node of a Redis Cluster (publish-vocab and lookups both use it).",
    )
    redis_prefix: str = Field(
        "dlf:", description="Key prefix; vocab hashes are <prefix>vocab:{<version>}:<field>."
    )
    redis_socket_timeout_s: float = Field(0.25, gt=0, description="Redis connect/read timeout (fail fast).")
    redis_retry_backoff_s: float = Field(
        0.5, ge=0, description="After a Redis error, answer from cache for this long before retrying."
    )
    redis_publish_on_start: bool = Field(
        False, description="Publish the served bundle's vocab to Redis at startup when it is missing."
    )
    feature_cache_size: int = Field(100_000, ge=0, description="Most feature ids cached in-process in front of Redis (0 = off).")
    max_request_rows: int = Field(1000, ge=1, description="Rows per /predict request (more -> 422).")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1, description="Request body limit (more -> 413).")
    batching_enabled: bool = Field(True, description="Coalesce concurrent requests into one ONNX call.")
    max_batch_rows: int | None = Field(
        None,
        ge=1,
        description="Rows per coalesced batch (bigger requests are split). None = by the model's provider: 128 on"
        " the CPU, where past ~100 rows a batch gains little throughput and only adds latency (docs/benchmarks.md);"
        " 1024 on CUDA, where a call costs about the same up to ~1,000 rows (docs/gpu.md).",
    )
    max_wait_ms: float = Field(
        2.0,
        ge=0,
        description="Upper bound on waiting for company; the pool never waits while a worker is free.",
    )
    inference_workers: int = Field(
        0,
        ge=0,
        description="Inference worker threads of each process, each running whole batches (0 = its share of the"
        " usable cores: usable cores / processes).",
    )
    max_queued_rows: int = Field(
        0,
        ge=0,
        description="Rows allowed to wait for a worker; beyond -> 503 + Retry-After (0 = no row bound).",
    )
    max_queue_ms: float = Field(
        1000.0,
        ge=0,
        description="Cap on the estimated queue wait (measured batch cost of the queued rows); beyond -> 503 (0 = no cap).",
    )
    queue_factor: float = Field(
        0.25,
        ge=0,
        description="Admit a request while the queue ahead of it costs at most this many times its own"
        " inference time (0 = off; only max_queue_ms then).",
    )
    shedding_queue_factor: float = Field(
        0.0,
        ge=0,
        description="The queue_factor while more than 35 % of recent /predict requests are refused (sustained"
        " overload: new arrivals refill a freed worker, so a queue only adds latency; 0 = a request of 32+ rows is"
        " admitted only to a free worker, smaller ones keep queue_floor_ms; requests of 32+ rows then"
        " never queue behind waiting work, and a busy pool no longer admits on an empty queue); above queue_factor"
        " it changes nothing but those two rules.",
    )
    serial_overload: bool = Field(
        True,
        description="While shedding and the rows asked per second pass 1.4x what the process computes (an open-loop"
        " flood, not closed-loop clients that wait out Retry-After), admit a request of 32 to max_batch_rows rows only"
        " when the whole serve group is idle and spread it over every core: admitted requests keep about their"
        " unloaded latency, at some admitted throughput (off: one such request per core at a time).",
    )
    queue_floor_ms: float = Field(
        20.0, ge=0, description="For requests under 32 rows the relative bound never goes below this wait (they batch)."
    )
    inline_rows: int = Field(
        16,
        ge=0,
        description="A request of at most this many rows that finds every worker idle runs on the event loop"
        " (two thread hand-offs cost more than its inference; 0 = always a worker).",
    )
    processes: int = Field(
        0,
        ge=0,
        description="Service processes sharing the port under `serve` (0 = one per usable core): one event "
        "loop's Python is the limit for many small requests. Inference threads are split between them.",
    )
    spread_threads: int | None = Field(
        None,
        ge=0,
        description="Extra threads a request that finds its process's inference pool idle shares its rows with "
        "(at least 4 rows each), so a lone request uses every core (None = the usable cores less this process's "
        "workers; 0 = off). Under `serve` with several processes only while the others' inference threads are "
        "idle (their cores are the ones these threads run on); under load batching is unchanged.",
    )
    batches_per_worker: int = Field(
        2,
        ge=1,
        description="Batches handed to each inference worker at once (the running one plus the next): a "
        "worker starts its next batch without waiting for the event loop. Only queues of 32+ rows are handed ahead.",
    )
    inference_niceness: int = Field(
        5,
        ge=0,
        le=19,
        description="Nice increment of the inference threads, so the event loop preempts them (0 = off).",
    )
    gc_freeze: bool = Field(
        True,
        description="After the first model load, gc.freeze() what is alive: a full collection of those "
        "objects stopped the event loop for ~50 ms under load (off in the test suite, which builds many apps).",
    )
    ort_intra_op_threads: int = Field(
        1, ge=0, description="ONNX Runtime intra-op threads per worker (0 = ORT default)."
    )
    ort_inter_op_threads: int = Field(1, ge=0, description="ONNX Runtime inter-op threads (0 = ORT default).")
    ort_graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime graph optimisation level."
    )
    ort_memory_arena: bool = Field(True, description="ONNX Runtime CPU memory arena.")
    ort_allow_spinning: bool = Field(
        False, description="Let idle ORT intra-op threads spin (burns CPU the event loop needs)."
    )
    ort_single_row_session: bool = Field(
        True,
        description="Also open a session with the batch dimension fixed to 1 for 1-row calls (its shape"
        " arithmetic folds away: 523 -> 322 nodes and ~20 % less time per call on the Frappe graph). It runs"
        " on the CPU also where batches run on CUDA, if 1-row calls time faster there at load (docs/gpu.md).",
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for admin endpoints (unset = disabled)."
    )
    reload_poll_seconds: float = Field(
        0.0, ge=0, description="Poll <registry>/CURRENT this often and reload when it moves (0 = off)."
    )
    reload_pubsub: bool = Field(
        True, description="With REDIS_URL: subscribe to the reload channel and reload on a notice."
    )
    reload_channel: str | None = Field(
        None, description="Redis pub/sub channel of reload notices (default <prefix>reload)."
    )
    reload_drain_timeout_s: float = Field(
        30.0, gt=0, description="After a swap, wait this long at most for the old version's requests."
    )
    shadow_max_pending: int = Field(
        8, ge=1, description="Shadow comparisons queued at most; beyond that, sampled rows are skipped."
    )
    require_provider: str | None = Field(
        None,
        description="Not ready unless this ONNX Runtime execution provider serves (e.g. CUDAExecutionProvider "
        "or cuda); the GPU image sets it.",
    )
    shutdown_grace_s: float = Field(
        0.0,
        ge=0,
        description="On SIGTERM, answer /readyz with 503 but keep serving this long before draining (0 = off).",
    )
    request_log_path: Path | None = Field(
        None, description="Append served requests as JSON lines here (unset = off; rotated by size)."
    )
    request_log_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Rotate the request log when it reaches this size."
    )
    request_log_backups: int = Field(3, ge=0, description="Rotated request log files kept (.1, .2, ...).")
    # closed loop (docs/closed-loop.md)
    impressions_enabled: bool = Field(
        True, description="Log impressions to the Redis Stream <prefix>impressions (needs a Redis URL)."
    )
    impressions_redis_url: str | None = Field(
        None, description="Redis for impressions and feedback (default: REDIS_URL)."
    )
    impressions_sample_rate: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of /predict requests whose impressions are logged."
    )
    impressions_maxlen: int = Field(
        1_000_000, ge=1, description="Approximate MAXLEN of the impression stream (entries = requests)."
    )
    impressions_ttl_s: int = Field(
        2 * 24 * 3600, ge=1, description="Lifetime of per-request impression and feedback keys."
    )
    impressions_max_pending: int = Field(
        10_000, ge=1, description="Requests queued for the impression writer; beyond that, dropped."
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="Log lines on stdout: JSON objects (request_id, model_version, rows...) or text."
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info",
        description="Lowest level logged; the JSON access line (one per request) is written at info, "
        "so 'warning' turns it off.",
    )
    otel_enabled: bool = Field(
        False, description="Trace requests with OpenTelemetry (exporter from the OTEL_* environment)."
    )

    @property
    def resolved_processes(self) -> int:
        """``processes`` with 0 resolved to the usable cores."""
        if self.processes:
            return self.processes
        from service.batcher import usable_cores

        return usable_cores()

    @property
    def reload_channel_name(self) -> str:
        """The pub/sub channel the service listens on and ``retrain`` publishes to."""
        return self.reload_channel or default_reload_channel(self.redis_prefix)
