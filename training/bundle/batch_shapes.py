"""Fold the exported graph's batch-size arithmetic into constant shapes.

Why: with a symbolic batch axis the TorchScript exporter writes every ``unflatten``/``view`` as
``Shape -> Gather/Slice -> Concat -> Reshape``; ONNX Runtime cannot constant-fold that chain
(the batch is unknown until a call), so it runs ~200 extra nodes on every call, which is a third
of a 1-row call's CPU on a DLF. The target shapes themselves only ever hold the batch size
times a constant in one place, which ONNX's ``Reshape`` spells ``-1``.

How: the values computed only from ``Shape`` (never from the data) that feed a data node are
evaluated with ONNX Runtime at a few batch sizes. A value that does not change with the batch
becomes a constant; a ``Reshape`` target that changes in exactly one entry, by a whole multiple
of the batch, becomes a constant with ``-1`` there. Everything else is left as exported, and the
result must reproduce the original graph at batch sizes the probe never saw, or the original is
kept. Hand-rolled: onnx's shape inference (``data_prop``), onnxsim and ONNX Runtime's symbolic
shape inference each left 45-54 ``Shape`` nodes of the DLF graph in place (measured).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger("training")

PROBE_BATCHES = (1, 2, 3, 5)
CHECK_BATCHES = (1, 7, 64)
CHECK_TOL = 1e-6
_SHAPE_OPS = {"Shape", "Size"}


@dataclass(frozen=True)
class FoldResult:
    model: onnx.ModelProto
    folded: int  # shape values replaced by constants
    nodes_before: int
    nodes_after: int


def _shape_frontier(graph: onnx.GraphProto) -> list[str]:
    """Values computed from shapes only (not from the data) that a data-computing node consumes."""
    data = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    producer: dict[str, onnx.NodeProto] = {}
    frontier: dict[str, None] = {}  # ordered set
    for node in graph.node:
        for out in node.output:
            producer[out] = node
        if node.op_type in _SHAPE_OPS or not any(i in data for i in node.input):
            continue
        data.update(node.output)
        for i in node.input:
            p = producer.get(i)
            if i and i not in data and p is not None and p.op_type != "Constant":
                frontier[i] = None
    return list(frontier)


def _probe_feeds(graph: onnx.GraphProto, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Valid inputs at ``batch`` rows: id 0 is every field's OOV id, so zeros are always in range."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for value in graph.input:
        if value.name in inits:
            continue
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        kind = np.dtype(dtype).kind
        feeds[value.name] = (
            np.zeros(shape, dtype=dtype) if kind in "iub" else rng.standard_normal(shape).astype(dtype)
        )
    return feeds


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _evaluate(model: onnx.ModelProto, names: list[str]) -> dict[int, dict[str, np.ndarray]]:
    """``names`` computed at each probe batch (those whose element type shape inference knows)."""
    typed = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.output]}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [n for n in names if types.get(n, TensorProto.UNDEFINED) != TensorProto.UNDEFINED]
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(n, types[n], None) for n in names)
    session = _session(probe)
    return {
        b: dict(zip(names, session.run(names, _probe_feeds(model.graph, b, seed=b)), strict=True))
        for b in PROBE_BATCHES
    }


def _batch_free(values: dict[int, np.ndarray]) -> np.ndarray | None:
    """The value if it is the same at every probe batch."""
    first = values[PROBE_BATCHES[0]]
    same = all(
        v.shape == first.shape and v.dtype == first.dtype and np.array_equal(v, first)
        for v in values.values()
    )
    return first if same else None


def _reshape_target(out_shapes: dict[int, tuple[int, ...]]) -> np.ndarray | None:
    """The Reshape's output shape with ``-1`` for its one dimension that is a multiple of the batch."""
    stacked = np.array([out_shapes[b] for b in PROBE_BATCHES], dtype=np.int64)
    if stacked.ndim != 2 or not stacked.all():  # a 0 in a target means "copy the input's dimension"
        return None
    varying = np.flatnonzero((stacked != stacked[0]).any(axis=0))
    if len(varying) != 1:
        return None
    column, batches = stacked[:, varying[0]], np.asarray(PROBE_BATCHES)
    if np.any(column % batches) or len(set((column // batches).tolist())) != 1:
        return None
    target = stacked[0].copy()
    target[varying[0]] = -1
    return target


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers nothing reads any more."""
    needed = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    unused = [t for t in graph.initializer if t.name not in needed]
    for t in unused:
        graph.initializer.remove(t)


def _max_abs_diff(a: onnx.ModelProto, b: onnx.ModelProto) -> float:
    """Largest output difference at the check batches (inf: an output's shape differs)."""
    sa, sb = _session(a), _session(b)
    worst = 0.0
    for batch in CHECK_BATCHES:
        feeds = _probe_feeds(a.graph, batch, seed=1000 + batch)
        for x, y in zip(sa.run(None, feeds), sb.run(None, feeds), strict=True):
            if x.shape != y.shape:
                return float("inf")
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y), initial=0.0)))
    return worst


def fold_batch_shapes(model: onnx.ModelProto) -> FoldResult:
    """A copy of ``model`` with its batch-size arithmetic folded (see the module docstring), or
    ``model`` itself when there is nothing to fold or the fold fails its check (a warning)."""
    before = len(model.graph.node)
    unchanged = FoldResult(model, 0, before, before)
    # a subgraph (If/Loop/Scan) reads outer values without naming them as inputs: pruning could drop them
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in model.graph.node
        for a in n.attribute
    ):
        return unchanged
    try:
        folded = _fold(model)
        diff = _max_abs_diff(model, folded.model) if folded is not None else 0.0
    except Exception as exc:  # noqa: BLE001 - an optimisation: the exported graph is still right
        log.warning("folding the batch arithmetic failed (%s); keeping the exported graph", exc)
        return unchanged
    if folded is None:
        return unchanged
    if not diff <= CHECK_TOL:
        log.warning(
            "folding the batch arithmetic changed the outputs by %g; keeping the exported graph", diff
        )
        return unchanged
    return folded


def _fold(model: onnx.ModelProto) -> FoldResult | None:
    before = len(model.graph.node)
    frontier = _shape_frontier(model.graph)
    if not frontier:
        return None
    wanted = set(frontier)
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape" and n.input[1] in wanted]
    seen = _evaluate(model, [*frontier, *(n.output[0] for n in reshapes)])

    def at_probes(name: str) -> dict[int, np.ndarray] | None:
        return {b: seen[b][name] for b in PROBE_BATCHES} if name in seen[PROBE_BATCHES[0]] else None

    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    constants: dict[str, np.ndarray] = {}
    for name in frontier:
        values = at_probes(name)
        constant = _batch_free(values) if values is not None else None
        if constant is not None:
            constants[name] = constant
    # Constant nodes, as the exporter writes its own: an initializer that a re-save moves to external
    # data is one ONNX Runtime cannot read as a Reshape target ("Cannot parse data from external tensors")
    new_nodes: list[onnx.NodeProto] = []
    by_output = {n.output[0]: n for n in folded.graph.node if n.op_type == "Reshape"}
    for reshape in reshapes:
        outputs = at_probes(reshape.output[0])
        target = _reshape_target({b: v.shape for b, v in outputs.items()}) if outputs is not None else None
        if target is not None and reshape.input[1] not in constants:
            name = f"{reshape.output[0]}__target"
            new_nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(target)))
            by_output[reshape.output[0]].input[1] = name
    for name, constant in constants.items():
        new_name = f"{name}__batch_free"
        new_nodes.append(
            helper.make_node("Constant", [], [new_name], value=numpy_helper.from_array(constant))
        )
        for node in folded.graph.node:
            for k, i in enumerate(node.input):
                if i == name:
                    node.input[k] = new_name
    count = len(new_nodes)
    nodes = [*new_nodes, *folded.graph.node]  # constants first: the graph stays topologically sorted
    del folded.graph.node[:]
    folded.graph.node.extend(nodes)
    _prune(folded.graph)
    return FoldResult(folded, count, before, len(folded.graph.node)) if count else None
