"""The ONNX Runtime session of one bundle, and the holder that says which one is current.

A request takes ``holder.current`` once at its start and uses that
``LoadedModel`` (session + schema + version) to the end, so swapping in a new
bundle is one reference assignment and never mixes two versions in one answer.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.contract import BundleSchema, load_schema, resolve_current
from service.provider_guard import preload_cuda_libraries

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(available: Sequence[str]) -> list[str]:
    """CUDA first (CPU as fallback for unsupported ops) when this onnxruntime build has it, else CPU."""
    return [CUDA, CPU] if CUDA in available else [CPU]


# The fixed 1-row session runs on the CPU even where batches run on CUDA: on an H100 a CUDA call
# of the Frappe graph took ~1.9 ms at any batch from 1 to 1,000 rows (kernel launches, not
# arithmetic), a 1-row CPU call 0.8 ms; through the service a lone 1-row request went from 2.8 to
# 1.1 ms p50 and 1 row x 32 connections from 1.3k to 9.0k rows/s (docs/gpu.md). Which one wins
# depends on the graph and the host's CPU, so it is kept only if it times faster than the main session
# at load (``faster_single_row``); on the H100 it won for both the Frappe bundle and the paper preset,
# whose CUDA call is launch-bound at ~14 ms (docs/gpu.md, session 12). On the CPU it won while the
# exported graph kept its batch arithmetic (ONNX Runtime folds it once the batch is fixed); with that
# folded at export (training/bundle/batch_shapes.py) the dynamic session is the faster one (Frappe:
# 593 vs 665 us, ``python -m bench.single_row_session``), and timing picks it.
SINGLE_ROW_PROVIDERS = [CPU]
# 1-row calls timed on each session at load, alternating; the medians decide (with 50, eight loads in
# a row chose the same session for a Frappe bundle of each kind on a noisy 2-core VM).
SINGLE_ROW_TIMING_CALLS = 50
# CUDA's float32 kernels (TF32 matrix products) differ from the CPU's by up to ~6e-4 in probability
# (docs/gpu.md); the fixed-batch session must agree with the main one within that when they differ.
CROSS_PROVIDER_ATOL = 2e-3


GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class OrtOptions:
    """Session options chosen by measurement (docs/benchmarks.md, "ONNX Runtime session options").

    One intra-op thread per session: the pool runs one batch per core, so
    parallelism comes from workers, and a second intra-op thread per call was
    slower. Spinning off: a spinning idle thread takes the core the event loop needs.
    """

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    memory_arena: bool = True
    allow_spinning: bool = False
    single_row_session: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> OrtOptions:
        return cls(
            intra_op_threads=settings.ort_intra_op_threads,
            inter_op_threads=settings.ort_inter_op_threads,
            graph_optimization=settings.ort_graph_optimization,
            memory_arena=settings.ort_memory_arena,
            allow_spinning=settings.ort_allow_spinning,
            single_row_session=settings.ort_single_row_session,
        )


def session_options(
    intra_op_threads: int = 0, inter_op_threads: int = 0, options: OrtOptions | None = None
) -> ort.SessionOptions:
    o = options or OrtOptions(intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = o.intra_op_threads
    opts.inter_op_num_threads = o.inter_op_threads
    opts.graph_optimization_level = GRAPH_LEVELS[o.graph_optimization]
    opts.enable_cpu_mem_arena = o.memory_arena
    spin = "1" if o.allow_spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return opts


@dataclass(frozen=True)
class LoadedModel:
    """Everything a request needs from one bundle version; immutable so it can be shared freely."""

    version: str
    bundle_dir: Path
    schema: BundleSchema
    session: ort.InferenceSession
    providers: list[str]
    # the same graph with its batch dimension fixed to 1 (None: off, or the batch dim is not symbolic)
    single_row_session: ort.InferenceSession | None = None

    @property
    def provider(self) -> str:
        """The execution provider actually in use (first of session.get_providers())."""
        return self.providers[0]

    def run(self, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray:
        """Probabilities float32 [B]; inputs absent from the bundle (F = 0) are not fed."""
        return self._run(self.session, cat_ids, numerics)

    def run_lone(self, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray:
        """``run`` for a call made while no inference worker is busy (the batcher's inline path): a
        1-row one goes to the fixed-batch session. Only then: a busy pool switching between the two sessions (their weights
        competing for cache) lost 5-25 % rows/s at 1 row x 8 and x 32 connections."""
        if cat_ids.shape[0] == 1 and self.single_row_session is not None:
            return self._run(self.single_row_session, cat_ids, numerics)
        return self._run(self.session, cat_ids, numerics)

    def _run(self, session: ort.InferenceSession, cat_ids: np.ndarray, numerics: np.ndarray) -> np.ndarray:
        feeds: dict[str, np.ndarray] = {}
        if self.schema.categorical:
            feeds[self.schema.cat_input] = np.ascontiguousarray(cat_ids, dtype=np.int64)
        if self.schema.numeric:
            feeds[self.schema.num_input] = np.ascontiguousarray(numerics, dtype=np.float32)
        (probs,) = session.run([self.schema.output], feeds)
        return np.asarray(probs, dtype=np.float32).reshape(-1)

    def neutral_row(self) -> tuple[np.ndarray, np.ndarray]:
        """One row of OOV ids and numeric fills ([1, F_cat], [1, F_num]): a valid input whatever the bundle."""
        cat = np.array([[f.oov_id for f in self.schema.categorical]], dtype=np.int64)  # [1, 0] when none
        num = np.array([[f.fill for f in self.schema.numeric]], dtype=np.float32)
        return cat, num

    def warm_up(self, lone: bool = False) -> np.ndarray:
        """One inference on a neutral row so the first real request does not pay for lazy init
        (``lone``: through ``run_lone``, i.e. the fixed-batch session when there is one)."""
        out = (self.run_lone if lone else self.run)(*self.neutral_row())
        if out.shape != (1,) or not np.isfinite(out).all() or not ((out >= 0) & (out <= 1)).all():
            raise RuntimeError(
                f"warm-up inference of {self.version} returned {out!r} (want one finite p in [0, 1])"
            )
        return out


def resolve_version(registry: Path, override: str | None) -> str:
    version = override or resolve_current(registry)
    if version is None:
        raise FileNotFoundError(f"no model bundle in registry {registry} (and no DLF_MODEL_VERSION set)")
    if not (registry / version / "model.onnx").exists():
        raise FileNotFoundError(f"bundle {version!r} has no model.onnx in {registry}")
    return version


def load_model(
    bundle_dir: str | Path,
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    available_providers: Sequence[str] | None = None,
    options: OrtOptions | None = None,
) -> LoadedModel:
    """Open the bundle's ONNX session, check its inputs against the schema and warm it up."""
    bundle_dir = Path(bundle_dir)
    schema = load_schema(bundle_dir)
    wanted = choose_providers(
        ort.get_available_providers() if available_providers is None else available_providers
    )
    if CUDA in wanted:
        preload_cuda_libraries()
    o = options or OrtOptions(intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads)
    session = ort.InferenceSession(
        str(bundle_dir / "model.onnx"), sess_options=session_options(options=o), providers=wanted
    )
    inputs = {i.name for i in session.get_inputs()}
    expected = set()
    if schema.categorical:
        expected.add(schema.cat_input)
    if schema.numeric:
        expected.add(schema.num_input)
    if inputs != expected:
        raise ValueError(f"model.onnx inputs {sorted(inputs)} do not match schema {sorted(expected)}")
    model = LoadedModel(
        version=schema.version,
        bundle_dir=bundle_dir,
        schema=schema,
        session=session,
        providers=list(session.get_providers()),
    )
    warm = model.warm_up()
    if o.single_row_session:
        model = faster_single_row(with_single_row_session(model, o, SINGLE_ROW_PROVIDERS, warm))
    log.info("loaded model %s (requested providers %s, in use %s)", model.version, wanted, model.providers)
    return model


def batch_dim(session: ort.InferenceSession) -> str | None:
    """The symbolic name every input's first dimension shares, or None (static, or mixed)."""
    names = {i.shape[0] if i.shape else None for i in session.get_inputs()}
    name = names.pop() if len(names) == 1 else None
    return name if isinstance(name, str) and name else None


def with_single_row_session(
    model: LoadedModel, o: OrtOptions, providers: list[str], expected: np.ndarray
) -> LoadedModel:
    """``model`` plus a session whose batch dimension is fixed to 1, when the graph has a symbolic one.

    With the batch size known, ONNX Runtime folds the graph's shape arithmetic (Shape, Gather,
    Concat feeding Reshape) into constants: 523 -> 322 nodes and 385 -> 314 us per 1-row call on
    the Frappe bundle, same probabilities (``python -m bench.single_row_session``). A lone 1-row
    request is the common real-time call, and at that size the per-node cost is the whole call.
    Kept only if it agrees with the main session's ``expected`` warm-up answer; an optimisation, so
    any failure to build it leaves the model as it was.
    """
    dim = batch_dim(model.session)
    if dim is None:
        return model
    opts = session_options(options=o)
    opts.add_free_dimension_override_by_name(dim, 1)
    try:
        single = ort.InferenceSession(str(model.bundle_dir / "model.onnx"), sess_options=opts, providers=providers)
        candidate = dataclasses.replace(model, single_row_session=single)
        got = candidate.warm_up(lone=True)
    except Exception as exc:  # noqa: BLE001 - serve with the one session rather than not at all
        log.warning("single-row session of %s not built: %s", model.version, exc)
        return model
    atol = 1e-6 if single.get_providers()[0] == model.provider else CROSS_PROVIDER_ATOL
    if not np.allclose(expected, got, rtol=1e-5, atol=atol):
        log.warning("single-row session of %s disagrees (%s vs %s): not used", model.version, got, expected)
        return model
    return candidate


def median_call_s(runs: Sequence[Any], calls: int = SINGLE_ROW_TIMING_CALLS) -> list[float]:
    """Median seconds per call of each of ``runs``, called in turn ``calls`` times each, so a change
    in load (a reload runs beside traffic) reaches all of them alike."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(calls):
        for run, spent in zip(runs, times, strict=True):
            start = time.perf_counter()
            run()
            spent.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def faster_single_row(model: LoadedModel, calls: int = SINGLE_ROW_TIMING_CALLS) -> LoadedModel:
    """``model`` with its fixed 1-row session only if a 1-row call is faster there than on the main
    session: which wins depends on the graph (was its batch arithmetic folded at export?) and, on a
    GPU host where the two run on different providers, on the host."""
    if model.single_row_session is None:
        return model
    cat, num = model.neutral_row()
    single, main = median_call_s([lambda: model.run_lone(cat, num), lambda: model.run(cat, num)], calls)
    keep = single < main
    log.info(
        "1-row calls of %s: %.3f ms on the %s session, %.3f ms on the %s one: %s",
        model.version, single * 1e3, model.single_row_session.get_providers()[0], main * 1e3, model.provider,
        "fixed-batch session kept" if keep else "main session used",
    )
    return model if keep else dataclasses.replace(model, single_row_session=None)


class ModelHolder:
    """Points at the current ``LoadedModel``; ``swap`` is atomic (one attribute assignment).

    ``lease`` counts requests in flight per version (all on the event loop thread,
    so a plain counter suffices); a hot reload waits until the old version's
    count drops to zero before it releases that version's vocabulary.
    """

    def __init__(self) -> None:
        self._current: LoadedModel | None = None
        self._in_flight: Counter[str] = Counter()

    def acquire(self, model: LoadedModel) -> None:
        """Mark ``model`` as used by one request until ``release`` (in a finally: a generator context
        manager here cost ~5 % of a 1-row request)."""
        self._in_flight[model.version] += 1

    def release(self, model: LoadedModel) -> None:
        self._in_flight[model.version] -= 1
        if self._in_flight[model.version] <= 0:
            del self._in_flight[model.version]

    def in_flight(self, version: str) -> int:
        return self._in_flight.get(version, 0)

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> LoadedModel:
        model = self._current
        if model is None:
            raise RuntimeError("no model loaded yet")
        return model

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Install ``model``; in-flight requests keep the reference they already took."""
        old, self._current = self._current, model
        return old
