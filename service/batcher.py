"""Inference worker pool: run at once when a worker is free, coalesce only while all are busy.

``workers`` threads (default: the usable cores) each run whole batches. ONNX
Runtime releases the GIL inside ``session.run``, so N batches really run on N
cores while the event loop keeps parsing requests. Dispatch happens on the
event loop, at the end of the tick in which a request arrived or a batch
finished, so there is no timer anywhere:

- a free worker takes the queue at once, so a lone request on an idle service
  runs immediately (it never waits ``max_wait_ms`` for company);
- while every worker is busy, arriving requests queue up; the next worker to
  finish takes up to ``max_batch_rows`` of them in one batch. Batches thus grow
  with the load, by themselves;
- a batch holds requests of ONE model object (a hot swap never mixes versions);
- a request is cut into chunks (at most ``max_batch_rows``, at least
  ``MIN_SPLIT_ROWS`` rows each) so the workers idle at that moment share it, and
  put back together in order: a 100-row request on an idle 2-core service takes
  half the time;
- a request that finds the whole pool idle (and the service not shedding) also gives a share of
  its rows (at least ``MIN_SPREAD_ROWS`` per thread) to ``spread_threads`` extra threads: with one process
  per core each pool has one worker, and a lone big request would otherwise use one core while
  ONNX Runtime's own thread pool (what a hand-written server gets by default) uses all of them.
  In a ``serve`` group only onto cores the other processes are not computing on (``board``),
  so under load, when their workers are busy, batching is unchanged;
- a request of at most ``inline_rows`` rows that finds every worker idle runs on
  the event loop itself: two thread hand-offs cost more than its inference; it waits
  ``INLINE_GATHER_TICKS`` loop iterations first, so small requests that arrived on other
  connections meanwhile share the call;
- a busy worker is handed its next batch (``batches_per_worker``) once 32+ rows
  are queued, so it does not idle until the loop dispatches;
- admission control: when the work ahead of a request (rows admitted, queued or
  handed ahead, plus what the running batches have left, from the measured batch
  cost, see ``BatchCost``, timed in the workers) costs more than ``queue_factor``
  x its own inference time (at least ``queue_floor_ms`` for requests under
  ``MIN_SPLIT_ROWS`` rows), or the queue plus it would pass ``max_queue_ms`` or
  ``max_queued_rows``, ``reserve``/``submit`` raise ``Overloaded`` at once (the route
  answers 503 + Retry-After) instead of letting the client time out. An empty
  queue admits, unless refusals just came close together under demand well above capacity (a
  flood's first tenth of a second);
- shedding: while more than ``SHEDDING_ENTER`` of recent decisions were refusals,
  the factor tightens to ``shedding_queue_factor``, a request of ``MIN_SPLIT_ROWS``+
  rows never queues behind waiting work, and an empty queue admits only with a
  free worker. Demand is then well above
  capacity, so a freed worker is refilled by new arrivals at once and a queue only
  adds latency; when refusals are rare (closed-loop clients that wait out
  ``Retry-After``), the queue is what keeps workers busy, so it is allowed;
- serial overload: while shedding, with refusals in each of the last few tens of milliseconds
  (``RefusalPersistence``) and the rows asked of a process per second over its last requests (admitted or
  refused, ``RowDemand``) above ``SERIAL_ENTER`` x what its workers compute per second (from the
  measured batch cost), a request of ``MIN_SPLIT_ROWS`` to ``max_batch_rows`` rows is admitted only
  when the whole ``serve`` group is idle (the board), and it is spread over every core as on an idle
  pool: one request at a time, each on all cores, instead of one per core, so an admitted request
  keeps about its unloaded latency (at the cost of admitted throughput: the cores idle between one
  and the next). Demand decides when it ends (below ``SERIAL_LEAVE`` x capacity): the refusals this
  mode makes would otherwise keep it on below capacity. Closed-loop clients that wait out
  ``Retry-After`` never ask for much more than capacity, and their retries come in bursts, not in
  every slice of a tenth of a second;
- a request whose client has disconnected while it waited is dropped before
  inference (``ClientGone``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.busy_board import BusyBoard
from service.metrics import ServiceMetrics

# Below this many rows per chunk, one more ONNX Runtime call costs more than a second core saves.
MIN_SPLIT_ROWS = 32
# Rows per batch when DLF_MAX_BATCH_ROWS is not set, by the main session's provider. On the CPU a
# call's cost grows with its rows, and past ~100 rows a batch gains little and only adds latency. A
# CUDA call of the Frappe graph costs ~1.6 ms of kernel launches whatever its size up to ~1,000 rows
# (docs/gpu.md), so there 128-row batches cut a 1,000-row request into 8 launches: 1000 x 32 on an
# H200 served ~165k rows/s with 128-row batches against ~600k with 1,024 (docs/gpu.md, session 27).
CPU_BATCH_ROWS = 128
ACCELERATOR_BATCH_ROWS = 1024
# Rows per thread when a request on an idle pool is spread (see ``_spread_rows``). Lower than
# MIN_SPLIT_ROWS because the pool is idle, so the extra call's CPU is free, and what counts is
# latency: one call costs ~0.26 ms + ~78 us per row on the Frappe graph, so halving 10 rows saves
# more than the hand-off to the spread thread costs (10 x 1: +10-14 % rows/s, p50 1.6 -> 1.4 ms).
MIN_SPREAD_ROWS = 4
# BatchCost fits overhead + per-row cost only when batch sizes spread at least this much (std / mean).
MIN_FIT_SPREAD = 0.2
# Shedding mode starts when more than this share of recent admission decisions were refusals, and
# ends below SHEDDING_LEAVE (hysteresis: its own refusals would otherwise flip it on and off).
SHEDDING_ENTER = 0.35
SHEDDING_LEAVE = 0.2
# Half-life of "recent" for that share, seconds: a reload's few refusals pass, sustained overload counts.
# 0.25 s left the first ~0.6 s of an overload in normal mode (admitted p99 20-31 ms per 50 ms there
# against 12-17 ms after); 0.1 s shortens that to ~0.2 s (docs/benchmarks.md).
SHEDDING_HALF_LIFE_S = 0.1
# ...and shedding starts only on this much evidence (decayed count of recent decisions): with a short
# half-life, one refusal after a quiet spell would otherwise be "100 % of recent decisions". 8 kept a
# process in normal mode for the first 50-150 ms of an overload (admitted requests handed ahead behind
# a running batch: 20-38 ms against 10-18 ms once shedding); 3 (about four decisions ~7 ms apart, most
# of them refusals) halves that: in A/B runs (7 with 8, 10 with 3) the overload's admitted p99 /
# unloaded p99 went from a median of 2.67x (1 within 2x) to 2.11x (5 within 2x), closed-loop cells
# unchanged (docs/benchmarks.md, session 12).
SHEDDING_MIN_DECISIONS = 3.0
# Serial overload mode (module docstring) starts when the rows asked per second pass this many times what
# the process's workers compute per second, and ends below SERIAL_LEAVE. An open-loop flood at 2x the
# best closed-loop rate measures ~2x; closed-loop cells that shed (100 x 8, 100 x 32) ~1.0-1.1x, since
# their refused clients sit out Retry-After.
SERIAL_ENTER = 1.4
SERIAL_LEAVE = 1.15
# ...and it starts only while refusals persist: at least one in each of the last PERSIST_BUCKETS slices
# of PERSIST_BUCKET_S. A flood at 2x capacity refuses a process's requests ~100 times a second, so every
# slice has some; a closed loop's synchronized retries (32 connections refused at once come back together
# a Retry-After later) make a burst of demand in one slice and none in the next. A refusal share over half
# a second did the same job but remembered the admissions before a flood, so the mode started 0.4-0.5 s
# into it (docs/benchmarks.md, session 18); this starts it in ~0.1 s.
PERSIST_BUCKET_S = 0.025
PERSIST_BUCKETS = 4
# Outside shedding, a busy worker with an empty queue admits whatever its running batch has left
# (``_admits_at_once``), except right after a burst of refusals, BURST_REFUSALS of them within BURST_S,
# while the rows asked over the last BURST_DEMAND_WINDOW requests come faster than SERIAL_ENTER x capacity.
# In the first ~0.1 s of a flood, before the refusal share starts shedding, that exception handed every
# other request ahead behind a running batch (a per-request timing patch, session 19: 10.5-30.6 ms from
# admission to answer against 5.4-13.1 ms, most under 8, once serial), and those answers set the
# overload's p99. Closed loops refuse too, a few times a second, sometimes in pairs; the demand reading
# keeps most of those out (without it, 100 x 8 lost 3-4 % rows/s in A/B runs: docs/benchmarks.md).
BURST_REFUSALS = 2
BURST_S = 0.05
BURST_DEMAND_WINDOW = 6  # requests: ~30 ms of a process's arrivals at 2x capacity
# That demand rate is read over this many recent requests (at 2x capacity ~90 ms of a process's arrivals).
DEMAND_WINDOW = 16
# Loop iterations a batch that would run inline (idle pool, at most ``inline_rows`` rows) waits
# before it runs, so requests that arrived on other connections meanwhile join it: their bytes are
# read in the next iteration and parsed in the one after, so 2. A call costs a fixed ~0.8 ms plus
# ~0.13 ms per row on the Frappe graph on a slow VM (session 15), and at 1 row x 32 connections the
# inline calls held 4.2-4.6 rows on average with no wait, 9.5-10.1 with it: ONNX Runtime CPU per row
# 0.36 -> 0.24 ms, +11-13 % rows/s (docs/benchmarks.md). Never a timer, and only while another
# client connection is open: a lone client's request runs at once.
INLINE_GATHER_TICKS = 2

log = logging.getLogger(__name__)


def lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's nice value (Linux: per thread), so the event loop preempts it.

    With one worker per core the event loop competes with the workers for CPU; when it loses,
    parsing, admission decisions and 503s wait behind inference. A niced worker yields the core
    to the loop thread the moment it has work, and still gets every idle cycle.
    """
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except OSError as exc:  # not permitted in some sandboxes: run at normal priority
        log.warning("could not lower inference thread priority: %s", exc)


class Runnable(Protocol):
    """What the batcher needs from a model (``LoadedModel`` satisfies it)."""

    def run(self, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray: ...


class Overloaded(RuntimeError):
    """The queue is full: answer 503 with ``Retry-After: retry_after_s`` instead of queueing."""

    def __init__(self, queued_rows: int, wait_ms: float, retry_after_s: int) -> None:
        self.queued_rows = queued_rows
        self.wait_ms = wait_ms
        self.retry_after_s = retry_after_s
        super().__init__(
            f"overloaded: {queued_rows} rows already queued (about {wait_ms:.0f} ms of work); retry later"
        )

    def headers(self) -> dict[str, str]:
        """The 503's headers. ``Connection: close`` because balancing across processes (SO_REUSEPORT)
        and replicas (an L4 Service) is per connection: a kept connection would bring its client's
        next requests back to the busiest process, while a new one lands wherever the kernel or
        proxy sends it (measured: one process refusing most requests while the other idled)."""
        return {"Retry-After": str(self.retry_after_s), "Connection": "close"}


class ClientGone(RuntimeError):
    """The client disconnected before its rows reached a worker; nothing was computed for it."""


def usable_cores() -> int:
    """CPUs this process may run on (cgroup/affinity aware where the OS says so)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class ClientWatch:
    """Notices a disconnect of one request's client, but only once that request has to wait.

    ``wait_for_disconnect`` is the ASGI ``receive`` after the body was read: it
    returns ``http.disconnect`` when the client goes. A task awaits it only for
    requests that queue behind busy workers, so the common fast path pays nothing.
    """

    def __init__(self, wait_for_disconnect: Callable[[], Awaitable[Any]]) -> None:
        self._wait = wait_for_disconnect
        self._task: asyncio.Future[Any] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._wait())

    @property
    def gone(self) -> bool:
        return self._task is not None and self._task.done() and not self._task.cancelled()

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


@dataclass
class BatchCost:
    """Seconds of one batch as ``overhead + per_row * rows``, fitted on recent batches.

    Exponentially weighted least squares (recent batches count most), because a
    model's cost per call matters as much as its cost per row: a 4-member
    ensemble spends most of a 1-row call on per-op overhead, so a per-row
    average taken from small batches would overstate what a queue costs.
    """

    decay: float = 0.95
    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        d = self.decay
        self.n = d * self.n + 1.0
        self.sx = d * self.sx + rows
        self.sy = d * self.sy + seconds
        self.sxx = d * self.sxx + rows * rows
        self.sxy = d * self.sxy + rows * seconds

    def seconds(self, rows: float) -> float:
        """Predicted seconds of a ``rows``-row batch (0 before any batch ran)."""
        if self.n == 0:
            return 0.0
        mean_x, mean_y = self.sx / self.n, self.sy / self.n
        var = self.sxx / self.n - mean_x * mean_x
        proportional = mean_y * rows / max(mean_x, 1.0)
        # Too little spread in batch sizes (e.g. every batch ~125 rows after 1000-row requests were
        # cut up) makes the slope noise; a slope <= 0 would call a long queue free and admit without
        # bound (measured: admitted p99 of seconds). Then scale the mean batch instead.
        if var <= (MIN_FIT_SPREAD * mean_x) ** 2:
            return proportional
        per_row = (self.sxy / self.n - mean_x * mean_y) / var
        if per_row <= 0.0:
            return proportional
        overhead = max(0.0, mean_y - per_row * mean_x)
        return overhead + per_row * rows


@dataclass
class RefusalShare:
    """Share of admission decisions that were refusals, decayed over time (half-life ``half_life_s``)."""

    half_life_s: float = SHEDDING_HALF_LIFE_S
    decisions: float = 0.0
    refusals: float = 0.0
    at: float = 0.0

    def note(self, refused: bool, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        keep = 0.5 ** ((now - self.at) / self.half_life_s) if self.decisions else 0.0
        self.decisions = self.decisions * keep + 1.0
        self.refusals = self.refusals * keep + (1.0 if refused else 0.0)
        self.at = now

    @property
    def share(self) -> float:
        return self.refusals / self.decisions if self.decisions else 0.0


class RowDemand:
    """Rows asked per second (admitted or refused) over the last ``window`` requests.

    A window of requests, not of time: an exponentially decayed rate counts the idle past as well, so
    it reads a step to a flood only after a couple of half-lives, and the onset is what the mode is
    for. Time since the oldest request divides, so silence lowers the rate; under half a window it
    reads 0.
    """

    def __init__(self, window: int = DEMAND_WINDOW) -> None:
        self.asked: deque[tuple[float, int]] = deque(maxlen=window)

    def note(self, rows: int, now: float | None = None) -> None:
        self.asked.append((time.monotonic() if now is None else now, rows))

    def rate(self, now: float | None = None, last: int | None = None) -> float:
        """Over the whole window (0 while under half full), or over the ``last`` requests (0 while fewer)."""
        n = len(self.asked)
        if n < ((self.asked.maxlen or 0) / 2 if last is None else max(2, last)):
            return 0.0
        asked = self.asked if last is None else list(self.asked)[n - last :]
        now = time.monotonic() if now is None else now
        first = asked[0][0]
        rows = sum(r for _, r in asked) - asked[0][1]  # what arrived after the first
        return rows / (now - first) if now > first else 0.0


class RefusalPersistence:
    """Whether refusals came in every one of the last ``buckets`` complete slices of ``bucket_s``."""

    def __init__(self, bucket_s: float = PERSIST_BUCKET_S, buckets: int = PERSIST_BUCKETS) -> None:
        self.bucket_s = bucket_s
        self.buckets = buckets
        self.seen: deque[int] = deque(maxlen=buckets + 1)  # slices with a refusal, newest last

    def note(self, now: float | None = None) -> None:
        """One refusal at ``now``."""
        bucket = int((time.monotonic() if now is None else now) / self.bucket_s)
        if not self.seen or self.seen[-1] != bucket:
            self.seen.append(bucket)

    def persistent(self, now: float | None = None) -> bool:
        current = int((time.monotonic() if now is None else now) / self.bucket_s)
        return set(range(current - self.buckets, current)).issubset(self.seen)


class RefusalBurst:
    """Whether the last ``count`` refusals all came within ``window_s`` (see BURST_REFUSALS)."""

    def __init__(self, count: int = BURST_REFUSALS, window_s: float = BURST_S) -> None:
        self.window_s = window_s
        self.times: deque[float] = deque(maxlen=count)

    def note(self, now: float | None = None) -> None:
        """One refusal at ``now``."""
        self.times.append(time.monotonic() if now is None else now)

    def active(self, now: float | None = None) -> bool:
        if len(self.times) < (self.times.maxlen or 0):
            return False
        return (time.monotonic() if now is None else now) - self.times[0] < self.window_s


@dataclass
class Reservation:
    """Rows admitted but not queued yet (being parsed and looked up): they count as queued, so
    requests admitted in the same moment see each other. ``release`` is idempotent."""

    batcher: MicroBatcher
    rows: int
    held: bool = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.batcher._reserved_rows -= self.rows
            self.batcher._publish()


@dataclass
class _Running:
    """A batch handed to the pool: its rows, and when a worker began it (None while it waits in the pool)."""

    rows: int
    started: float | None = None  # perf_counter, written once by the worker thread


@dataclass
class _Item:
    model: Runnable
    cat_ids: np.ndarray
    numerics: np.ndarray
    future: asyncio.Future[np.ndarray]
    watch: ClientWatch | None = None
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = int(self.cat_ids.shape[0])

    def client_gone(self) -> bool:
        return self.watch is not None and self.watch.gone


class MicroBatcher:
    """A queue, a pool of inference threads and the dispatch rule above.

    ``submit`` returns this request's probabilities in row order. All queue
    state lives on the event loop thread; worker threads only run the model.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        max_batch_rows: int = 512,
        max_wait_ms: float = 0.0,
        workers: int = 0,
        max_queued_rows: int = 0,
        max_queue_ms: float = 0.0,
        queue_factor: float = 0.0,
        shedding_queue_factor: float | None = None,
        queue_floor_ms: float = 0.0,
        max_request_rows: int = 1000,
        worker_niceness: int = 0,
        inline_rows: int = 0,
        batches_per_worker: int = 1,
        spread_threads: int = 0,
        board: BusyBoard | None = None,
        connections: Callable[[], int] | None = None,
        metrics: ServiceMetrics | None = None,
        serial_overload: bool = False,
    ) -> None:
        if max_batch_rows < 1 or batches_per_worker < 1:
            raise ValueError("max_batch_rows and batches_per_worker must be >= 1")
        if min(workers, max_queued_rows, max_queue_ms, queue_factor, queue_floor_ms, worker_niceness, inline_rows,
               spread_threads) < 0:
            raise ValueError(
                "workers, max_queued_rows, max_queue_ms, queue_factor, queue_floor_ms, worker_niceness, inline_rows"
                " and spread_threads must be >= 0 (0 = auto / no bound / off)"
            )
        self.enabled = enabled
        self.max_batch_rows = max_batch_rows
        # Kept as the documented upper bound on waiting for company; the pool never waits on a
        # timer (it dispatches as soon as a worker is free), so the bound always holds.
        self.max_wait_ms = max_wait_ms
        self.workers = workers or usable_cores()
        self.max_queued_rows = max_queued_rows  # 0 = unbounded
        self.max_queue_s = max_queue_ms / 1000.0  # 0 = unbounded
        # relative bound: wait at most queue_factor x this request's own inference time (0 = off),
        # never less than queue_floor_ms, never more than max_queue_ms
        self.queue_factor = queue_factor
        # the factor while shedding (None: no shedding mode, queue_factor always)
        self.shedding_queue_factor = shedding_queue_factor
        self.refusal_share = RefusalShare()
        self.shedding = False
        # serial overload mode (module docstring): off unless enabled; needs shedding as well
        self.serial_overload = serial_overload
        self.demand = RowDemand()
        self.persistence = RefusalPersistence()
        self.refusal_burst = RefusalBurst()
        self.serial = False
        self.queue_floor_s = queue_floor_ms / 1000.0
        self.max_request_rows = max_request_rows
        self.worker_niceness = worker_niceness
        self.inline_rows = inline_rows  # a request this small on an idle pool runs on the loop (0 = never)
        # Batches handed to a worker at once: the running one plus the next, so a worker starts
        # its next batch the moment it finishes, not when the event loop (busy parsing the next
        # request) gets round to dispatching. Only a queue of >= MIN_SPLIT_ROWS rows is handed
        # ahead; fewer rows keep coalescing while every worker is busy.
        self.batches_per_worker = batches_per_worker
        # extra threads a big request on an idle pool shares its rows with (0 = none): kept apart from
        # the workers, so batches handed ahead to a busy worker still wait for it, not for these
        self.spread_threads = spread_threads
        # the serve group's count of running inference calls (None: a process of its own): spread
        # threads run on the other processes' cores, so they are used only while those are idle
        self.board = board
        # open client connections of this process (None: unknown, e.g. in-process tests): a small
        # batch waits for company only when another connection could bring it
        self.connections = connections
        self._spreading = 0
        self._spread_executor: ThreadPoolExecutor | None = None
        self.bytes_per_row: float | None = None  # fewest body bytes per row seen: rows from Content-Length
        self.cost = BatchCost()
        self.metrics = metrics
        self._depth_written: tuple[int, int] | None = None  # (requests, rows) last written to the gauges
        self._pending: deque[_Item] = deque()
        self._pending_rows = 0
        self._reserved_rows = 0  # admitted, still being parsed: see Reservation
        self._busy = 0
        self._dispatch_scheduled = False
        # batches handed to the pool, oldest first, with their rows: beyond the first ``workers``
        # they wait in the pool's queue and count as queued work for admission
        self._running: dict[asyncio.Future[tuple[np.ndarray, float]], _Running] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.batches_run = 0
        self.rejected = 0
        self.dropped = 0

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a worker: the queue and batches handed ahead to busy workers."""
        return self._waiting_rows()

    @property
    def busy_workers(self) -> int:
        return self._busy

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.workers,
                thread_name_prefix="dlf-infer",
                initializer=lower_thread_priority,
                initargs=(self.worker_niceness,),
            )
        if self._spread_executor is None and self.spread_threads:
            self._spread_executor = ThreadPoolExecutor(
                max_workers=self.spread_threads,
                thread_name_prefix="dlf-spread",
                initializer=lower_thread_priority,
                initargs=(self.worker_niceness,),
            )
        if self.metrics is not None:
            self.metrics.inference_workers.set(self.workers)

    async def stop(self) -> None:
        """Fail what is still queued, then wait for running batches to finish."""
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("service is shutting down"))
        self._pending_rows = 0
        self._set_depth()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        for executor in (self._executor, self._spread_executor):
            if executor is not None:
                executor.shutdown(wait=True)
        self._executor = self._spread_executor = None

    def estimated_wait_s(self, rows: int = 0) -> float:
        """How long the work ahead (plus ``rows`` more) takes, from the measured batch cost.

        The work ahead is the rows being computed and waiting (admitted, queued, handed ahead),
        spread over the workers (that is how free workers take it), as the cost of one batch of
        that many rows, less how long the batches being computed have run already (counting
        them whole refused requests that a nearly finished batch would have let through). One
        batch, not a cost per batch: the fitted per-call overhead is noisy on small batches
        (seen 10 ms for a graph whose 1-row call takes 0.4 ms), and summing it per batch
        refused requests at the margin. A free worker with nothing waiting: no wait.
        """
        queued = self._waiting_rows() + rows
        if not queued and self._free():
            return 0.0
        computing = self._pool_rows()[0]
        now = time.perf_counter()
        elapsed = sum(now - r.started for r in computing if r.started is not None) / self.workers
        total = self.cost.seconds((queued + sum(r.rows for r in computing)) / self.workers)
        return max(0.0, total - elapsed)

    def own_seconds(self, rows: int) -> float:
        """Estimated inference time of a ``rows``-row request on an idle pool: its chunks run
        ``workers`` at a time."""
        chunks = self._chunks(rows)
        return -(-chunks // self.workers) * self.cost.seconds(rows / chunks)

    def _update_shedding(self) -> bool:
        """Enter or leave shedding mode by the recent refusal share (with hysteresis); returns it."""
        if self.shedding_queue_factor is None:
            return False
        share = self.refusal_share.share
        if self.shedding:
            shedding = share > SHEDDING_LEAVE
        else:
            shedding = share > SHEDDING_ENTER and self.refusal_share.decisions >= SHEDDING_MIN_DECISIONS
        if shedding != self.shedding:
            self.shedding = shedding
            log.info("admission: shedding %s (refusal share %.2f)", "on" if shedding else "off", share)
            if self.metrics is not None:
                self.metrics.shedding.set(1 if shedding else 0)
        return shedding

    def capacity_rows_s(self) -> float:
        """Rows per second this process's workers compute, from the measured cost of full batches (0: unknown)."""
        seconds = self.cost.seconds(self.max_batch_rows)
        return self.workers * self.max_batch_rows / seconds if seconds > 0 else 0.0

    def demand_ratio(self, now: float | None = None, last: int | None = None) -> float:
        """Rows asked per second (``RowDemand.rate``) over what the workers compute; 0 while capacity is unknown."""
        capacity = self.capacity_rows_s()
        return self.demand.rate(now, last) / capacity if capacity else 0.0

    def _update_serial(self, now: float | None = None) -> bool:
        """Enter or leave serial overload mode by demand against capacity (with hysteresis); returns it.
        Never with a single inference thread: one request at a time on one core would idle the rest."""
        if not self.serial_overload or self.workers + self.spread_threads < 2:
            return False
        if not (self.shedding or self.serial):  # every request passes here: no demand reading while all is calm
            return False
        ratio = self.demand_ratio(now)
        if self.serial:
            serial = self.shedding and ratio > SERIAL_LEAVE
        else:
            serial = ratio > SERIAL_ENTER and self.persistence.persistent(now)
        if serial != self.serial:
            self.serial = serial
            log.info("admission: serial overload %s (demand %.2fx capacity)", "on" if serial else "off", ratio)
            if self.metrics is not None:
                self.metrics.serial.set(1 if serial else 0)
        return serial

    def group_idle(self) -> bool:
        """Nothing admitted, queued or computing in this process, nor (by the board) in the rest of the group."""
        if self._waiting_rows() or self._busy or self._spreading:
            return False
        return self.board is None or self.board.others() == 0

    def factor(self) -> float:
        """``queue_factor``, or the tighter ``shedding_queue_factor`` while most requests are refused."""
        if self._update_shedding():
            assert self.shedding_queue_factor is not None
            return min(self.queue_factor, self.shedding_queue_factor)
        return self.queue_factor

    def _admits_at_once(self, waiting: int) -> bool:
        """Nothing waits and a worker is free; or, unless shedding or right after a burst of
        refusals, nothing waits at all. Outside shedding a busy worker with an empty queue admits
        whatever it has left: a burst or a reload can make one batch slow, and a closed-loop client
        refused then sits out a whole second of ``Retry-After`` for a wait of milliseconds. Refusals
        close together under demand well above capacity mean a flood has begun (BURST_REFUSALS):
        the usual bound applies at once."""
        if waiting:
            return False
        if self._free():
            return True
        return not (self._update_shedding() or self._flood_begins())

    def _flood_begins(self) -> bool:
        """Refusals close together while requests arrive well above capacity (BURST_REFUSALS)."""
        return self.refusal_burst.active() and self.demand_ratio(last=BURST_DEMAND_WINDOW) > SERIAL_ENTER

    def floor_s(self) -> float:
        """The wait small requests may always have: ``queue_floor_ms``, or the running batch plus
        the next one at ``max_batch_rows`` (what coalescing small requests builds up in normal
        operation), whichever is longer; 0 when ``queue_floor_ms`` is 0. A fixed 20 ms refused
        8 clients of 10-row requests on a machine where a 128-row batch took ~17 ms."""
        if not self.queue_floor_s:
            return 0.0
        return max(self.queue_floor_s, self.batches_per_worker * self.cost.seconds(self.max_batch_rows))

    def too_long(self, rows: int) -> bool:
        """Whether a ``rows``-row request would wait too long behind the queue.

        Two bounds: the queue plus this request must drain within ``max_queue_ms``; and the wait
        ahead of it must stay within ``factor()`` x its own inference time (at least ``floor_s()``
        for requests under MIN_SPLIT_ROWS rows), so an admitted request takes
        at most about (1 + factor) x its unloaded time whatever its size, while small requests
        still batch behind each other.
        """
        if self.max_queue_s and self.estimated_wait_s(rows) > self.max_queue_s:
            return True
        if not self.queue_factor:
            return False
        factor = self.factor()
        # the floor lets small requests batch behind each other; a request big enough to be split
        # (>= MIN_SPLIT_ROWS) gains nothing from queueing, so only the relative bound holds for it,
        # and while shedding it never queues behind other waiting work, only behind running batches
        if rows >= MIN_SPLIT_ROWS and self.shedding and self._waiting_rows():
            return True
        floor = self.floor_s() if rows < MIN_SPLIT_ROWS else 0.0
        return self.estimated_wait_s() > max(floor, factor * self.own_seconds(rows))

    def _note(self, refused: bool) -> None:
        """Record one admission decision and re-evaluate shedding on it: an idle pool admits without
        asking whether the service sheds, so a flag updated only there stayed on after an overload
        (and kept a lone request from spreading: 1000 x 1 ran on one core, 12k instead of 20k rows/s)."""
        self.refusal_share.note(refused)
        if refused:
            self.persistence.note()
            self.refusal_burst.note()
        self._update_shedding()
        self._update_serial()

    def _refuse(self) -> Overloaded:
        self._note(True)
        self.rejected += 1
        if self.metrics is not None:
            self.metrics.rejected_requests.inc()
        wait_ms = self.estimated_wait_s() * 1000.0
        return Overloaded(self._waiting_rows(), wait_ms, retry_after_s=max(1, math.ceil(wait_ms / 1000.0)))

    def observe_body(self, body_bytes: int, rows: int) -> None:
        """Record an admitted body's size, so ``saturated`` can bound a request's rows by its Content-Length."""
        if rows > 0 and body_bytes > 0:
            per_row = body_bytes / rows
            self.bytes_per_row = per_row if self.bytes_per_row is None else min(self.bytes_per_row, per_row)

    def max_rows_in(self, content_length: int | None) -> int:
        """The most rows a body of ``content_length`` bytes can hold, going by the leanest body seen."""
        if content_length is None or self.bytes_per_row is None:
            return self.max_request_rows
        return max(1, min(self.max_request_rows, math.ceil(content_length / self.bytes_per_row)))

    def saturated(self, content_length: int | None = None) -> Overloaded | None:
        """``Overloaded`` when this request would be refused whatever its rows (checked before its body).

        Judged for the most rows its ``content_length`` can hold (``max_request_rows`` when
        unknown), which gets the most lenient wait bound, so this never refuses what ``admit``
        would take, and a refusal costs no parsing.
        """
        waiting = self._waiting_rows()
        if self._admits_at_once(waiting):
            return None
        wait = self.estimated_wait_s()
        full = self.max_queued_rows and waiting >= self.max_queued_rows
        capped = self.max_queue_s and wait > self.max_queue_s
        most_rows = self.max_rows_in(content_length)
        lenient = max(self.floor_s(), self.factor() * self.own_seconds(most_rows))
        behind = self.queue_factor and wait > lenient
        if full or capped or behind:
            self.demand.note(most_rows)  # admitted requests count in admit(), with their real rows
            return self._refuse()
        return None

    def admit(self, rows: int) -> None:
        """Raise ``Overloaded`` when ``rows`` more would wait too long (or queue too many rows).

        An empty queue admits (while shedding: only with a free worker), so a request bigger
        than the bounds still runs, alone; the batches running count by what they have left, so
        a refused request's retry is admitted once they finish: the bounds shed excess load
        without starving big requests.
        """
        self.demand.note(rows)
        if self.serial and MIN_SPLIT_ROWS <= rows <= self.max_batch_rows:
            if not self.group_idle():
                raise self._refuse()
            self._note(False)
            return
        waiting = self._waiting_rows()
        if not self._admits_at_once(waiting):
            too_many = self.max_queued_rows and waiting and waiting + rows > self.max_queued_rows
            if too_many or self.too_long(rows):
                raise self._refuse()  # notes the refusal
        self._note(False)

    def reserve(self, rows: int) -> Reservation:
        """``admit``, then hold the rows as queued until ``submit(reservation=...)`` queues them:
        requests admitted in the same moment (each parsing its body) then see each other."""
        self.admit(rows)
        self._reserved_rows += rows
        self._publish()
        return Reservation(self, rows)

    async def submit(
        self,
        model: Runnable,
        cat_ids: np.ndarray,
        numerics: np.ndarray,
        *,
        watch: Callable[[], Awaitable[Any]] | None = None,
        reservation: Reservation | None = None,
    ) -> np.ndarray:
        """Probabilities for these rows; ``watch`` completes when the client disconnects.

        Raises ``Overloaded`` (queue full) or ``ClientGone`` (dropped before inference).
        """
        if self._executor is None or self._loop is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        rows = int(cat_ids.shape[0])
        if reservation is None:
            self.admit(rows)
        else:  # admitted by reserve(): now queued for real
            reservation.release()
        spread = self._spread_rows(rows)
        if spread:
            return await self._submit_spread(model, cat_ids, numerics, rows - spread)
        client = ClientWatch(watch) if watch is not None else None
        try:
            return await self._submit_chunks(model, cat_ids, numerics, client)
        finally:
            if client is not None:
                client.stop()

    async def _submit_chunks(
        self, model: Runnable, cat_ids: np.ndarray, numerics: np.ndarray, client: ClientWatch | None
    ) -> np.ndarray:
        rows = int(cat_ids.shape[0])
        step = self._chunk_rows(rows)
        if not self.enabled or rows <= step:
            return await self._enqueue(model, cat_ids, numerics, client)
        # Chunks go to whichever workers are free; the answer keeps row order.
        parts = await asyncio.gather(
            *(self._enqueue(model, cat_ids[i : i + step], numerics[i : i + step], client) for i in range(0, rows, step))
        )
        return np.concatenate(parts)

    def _spread_rows(self, rows: int) -> int:
        """Rows of this request the spread threads take: none unless the whole pool (spread threads
        included) is idle, nothing else is queued or being admitted, the service is not shedding
        (then every core is busy anyway), and each thread keeps at least MIN_SPREAD_ROWS rows; in a
        serve group, only as many threads as there are cores the other processes leave idle."""
        if not (self.enabled and self._spread_executor is not None) or (self.shedding and not self.serial):
            return 0
        if self._busy or self._spreading or self._pending or self._reserved_rows:
            return 0
        spread = self.spread_threads
        if self.board is not None:  # the other processes' running calls hold the cores spread threads would use
            spread = max(0, spread - self.board.others())
        threads = min(self.workers + spread, rows // MIN_SPREAD_ROWS)
        if threads <= self.workers:
            return 0
        return rows * (threads - self.workers) // threads

    async def _submit_spread(self, model: Runnable, cat_ids: np.ndarray, numerics: np.ndarray, keep: int) -> np.ndarray:
        """The first ``keep`` rows through the pool as usual, the rest on the spread threads at once,
        as one call (the pool was idle, so there is no batch to keep small for latency)."""
        assert self._loop is not None and self._spread_executor is not None
        self._spreading += 1
        self._publish()
        tail = self._loop.run_in_executor(self._spread_executor, self._infer, model, cat_ids[keep:], numerics[keep:])
        tail.add_done_callback(self._spread_done)
        head, (rest, _) = await asyncio.gather(self._submit_chunks(model, cat_ids[:keep], numerics[:keep], None), tail)
        return np.concatenate([head, rest])

    def _spread_done(self, _: asyncio.Future[tuple[np.ndarray, float]]) -> None:
        self._spreading -= 1
        self._publish()

    def _publish(self) -> None:
        """Tell the group how many inference calls this process runs (workers busy plus spread calls)."""
        if self.board is not None:
            # in serial mode an admitted request being parsed already holds the group (admit)
            reserved = 1 if self.serial and self._reserved_rows else 0
            self.board.publish(min(self._busy, self.workers) + self._spreading + reserved)

    def _chunks(self, rows: int, workers: int | None = None) -> int:
        """Chunks a request is cut into: one per (free) worker if each keeps MIN_SPLIT_ROWS, none above
        max_batch_rows. ``workers`` defaults to the whole pool (the idle-pool estimate admission uses)."""
        workers = self.workers if workers is None else max(1, workers)
        return max(1, -(-rows // self.max_batch_rows), min(workers, rows // MIN_SPLIT_ROWS))

    def _chunk_rows(self, rows: int) -> int:
        """Split over the workers free now: with every worker busy the rows would coalesce into the
        next batches anyway, and each extra chunk is one more ONNX Runtime call and future."""
        return -(-rows // self._chunks(rows, self.workers - self._busy))

    def _enqueue(
        self,
        model: Runnable,
        cat_ids: np.ndarray,
        numerics: np.ndarray,
        client: ClientWatch | None,
    ) -> asyncio.Future[np.ndarray]:
        assert self._loop is not None
        item = _Item(model, cat_ids, numerics, self._loop.create_future(), client)
        self._pending.append(item)
        self._pending_rows += item.rows
        self._set_depth()
        if client is not None and self._busy >= self.workers:
            client.start()  # it has to wait: notice if its client goes away meanwhile
        if not self._dispatch_scheduled:
            # End of this tick, not now: requests parsed in the same tick share one batch.
            self._dispatch_scheduled = True
            self._loop.call_soon(self._gather_then_dispatch, INLINE_GATHER_TICKS)
        return item.future

    def _gather_then_dispatch(self, ticks: int) -> None:
        """Dispatch; but a batch small enough to run inline on an idle pool first waits ``ticks``
        more loop iterations, so requests whose bytes arrived meanwhile join the same call. Only
        while another client connection is open (a lone client cannot bring company, and the wait
        showed in its latency), and not for the first part of a spread request (its other part
        is already running on a spread thread)."""
        assert self._loop is not None
        if self._executor is None:  # stopped while it waited: stop() failed the queue
            self._dispatch_scheduled = False
            return
        idle = self._busy == 0 and not self._spreading
        small = self._pending_rows <= self.inline_rows
        if ticks > 0 and idle and small and self.connections is not None and self.connections() > 1:
            self._loop.call_soon(self._gather_then_dispatch, ticks - 1)
            return
        self._dispatch()

    def _free(self) -> bool:
        """A worker is idle (nothing is handed ahead while one is)."""
        return self._busy < self.workers

    def _pool_rows(self) -> tuple[list[_Running], list[_Running]]:
        """Batches in the pool: being computed (the oldest ``workers``), and handed ahead."""
        batches = list(self._running.values())
        return batches[: self.workers], batches[self.workers :]

    def _waiting_rows(self) -> int:
        """Rows not being computed yet: admitted ones still being parsed, the queue and batches
        handed ahead to busy workers."""
        return self._reserved_rows + self._pending_rows + sum(r.rows for r in self._pool_rows()[1])

    def _set_depth(self) -> None:
        if self.metrics is not None:
            # only changes are written: each write is a locked store into a shared file under
            # ``serve --processes N``, and most calls (3 per request) leave both values as they were
            depth = (len(self._pending), self._waiting_rows())
            if depth != self._depth_written:
                self._depth_written = depth
                self.metrics.queue_depth.set(depth[0])
                self.metrics.queued_rows.set(depth[1])

    def _take_batch(self, limit: int) -> list[_Item]:
        """Oldest requests of one model object, up to ``limit`` rows (batching off: one request)."""
        batch: list[_Item] = []
        rows = 0
        model = None
        while self._pending:
            item = self._pending[0]
            if batch and (not self.enabled or item.model is not model or rows + item.rows > limit):
                break
            self._pending.popleft()
            self._pending_rows -= item.rows
            if item.future.done():  # cancelled while queued
                continue
            if item.client_gone():
                self.dropped += 1
                if self.metrics is not None:
                    self.metrics.dropped_requests.inc()
                item.future.set_exception(ClientGone("client disconnected before inference"))
                continue
            batch.append(item)
            rows += item.rows
            model = item.model
        return batch

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        assert self._loop is not None and self._executor is not None
        while self._pending and (
            self._busy < self.workers
            or (self._busy < self.workers * self.batches_per_worker and self._pending_rows >= MIN_SPLIT_ROWS)
        ):
            # Spread what is queued over the free workers (one takes up to max_batch_rows), but not in
            # pieces under MIN_SPLIT_ROWS: a second hand-off costs the loop more than the second core
            # saves on a few rows (1 row x 32 connections: the loop is the bottleneck there).
            free = max(1, self.workers - self._busy)
            share = max(MIN_SPLIT_ROWS, -(-self._pending_rows // free))
            batch = self._take_batch(min(self.max_batch_rows, share))
            if not batch:
                continue
            if len(batch) == 1:
                cat, num = batch[0].cat_ids, batch[0].numerics
            else:
                cat = np.concatenate([b.cat_ids for b in batch], axis=0)
                num = np.concatenate([b.numerics for b in batch], axis=0)
            self._busy += 1
            self._publish()
            if self.inline_rows and self._busy == 1 and not self._pending and cat.shape[0] <= self.inline_rows:
                # alone on an idle pool: run it here; two thread hand-offs cost more than it does
                done: asyncio.Future[tuple[np.ndarray, float]] = self._loop.create_future()
                try:
                    done.set_result(self._infer(batch[0].model, cat, num, lone=True))
                except Exception as exc:  # noqa: BLE001 - the batch's requests get it, as from a worker
                    done.set_exception(exc)
                self._finished(done, batch)
                continue
            entry = _Running(int(cat.shape[0]))
            running = self._loop.run_in_executor(self._executor, self._infer, batch[0].model, cat, num, entry)
            self._running[running] = entry
            running.add_done_callback(lambda fut, b=batch: self._finished(fut, b))
        self._set_depth()

    def _infer(
        self,
        model: Runnable,
        cat_ids: np.ndarray,
        numerics: np.ndarray,
        entry: _Running | None = None,
        lone: bool = False,
    ) -> tuple[np.ndarray, float]:
        """Probabilities and the seconds ``run`` took, timed in the worker: timing at the event loop
        would add the loop's own backlog, and the queue estimate would then shed load it can take.
        ``entry.started`` tells admission how far along this batch is. ``lone`` (the inline path:
        every worker idle) uses the model's ``run_lone`` where it has one."""
        start = time.perf_counter()
        if entry is not None:
            entry.started = start
        run = getattr(model, "run_lone", model.run) if lone else model.run
        probs = run(cat_ids, numerics)
        seconds = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.inference_latency.observe(seconds)
            self.metrics.batch_rows.observe(int(cat_ids.shape[0]))
        return probs, seconds

    def _finished(self, running: asyncio.Future[tuple[np.ndarray, float]], batch: list[_Item]) -> None:
        self._running.pop(running, None)
        self._busy -= 1
        self._publish()
        self.batches_run += 1
        exc = running.exception() if not running.cancelled() else RuntimeError("batch cancelled")
        if exc is None:
            self.cost.observe(sum(item.rows for item in batch), running.result()[1])
        if exc is not None:  # one bad batch fails its requests, not the worker
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
        else:
            probs = running.result()[0]
            offset = 0
            for item in batch:
                if not item.future.done():
                    item.future.set_result(probs[offset : offset + item.rows])
                offset += item.rows
        if self._pending:
            self._dispatch()
        else:
            self._set_depth()
