"""Markdown + PNG report of bench/serving_engine.py, and the issue's done-when checks on its numbers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.machine_noise import NoiseProfile

START = "<!-- serving-engine:start -->"
END = "<!-- serving-engine:end -->"
# bench/serving_engine.py's machine_noise probes: (when, key in the result's meta)
NOISE_PROBES = (("before the grid", "noise_start"), ("right before the overload", "noise_before_overload"))


def _cell(result: dict[str, Any], server: str, rows: int, conns: int) -> dict[str, Any]:
    for c in result["cells"]:
        if c["server"] == server and c["rows"] == rows and c["conns"] == conns:
            return c["result"]
    raise KeyError((server, rows, conns))


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else ("peer served nothing" if ours > 0 else "-")


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def checks(result: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(done-when line, holds?, the numbers) for each line the benchmark can judge."""
    cells = result["cells"]
    rows_list = sorted({c["rows"] for c in cells})
    conns_list = sorted({c["conns"] for c in cells})
    out = []
    ratios = {
        (r, c): _cell(result, "service", r, c)["rows_per_s"]
        / max(_cell(result, "naive", r, c)["rows_per_s"], 1e-9)
        for r in rows_list
        for c in conns_list
    }
    worst = min(ratios, key=lambda k: ratios[k])
    out.append(
        (
            "service >= 1.0x the naive peer's rows/s in every cell",
            all(v >= 1.0 for v in ratios.values()),
            f"lowest {ratios[worst]:.2f}x at {worst[0]} rows x {worst[1]} conns",
        )
    )
    if (1, 32) in ratios:
        out.append(
            (
                "service >= 3x the naive peer at 1 row x 32 conns",
                ratios[(1, 32)] >= 3.0,
                f"{ratios[(1, 32)]:.2f}x",
            )
        )
    parts, ok = [], True
    for r in (r for r in rows_list if r >= 100):
        best = max(_cell(result, "service", r, c)["rows_per_s"] for c in conns_list)
        ceil = result["ceilings"][str(r)]["rows_per_s"]
        ok &= best >= 0.8 * ceil
        parts.append(f"{r} rows: {best:,.0f} / {ceil:,.0f} = {best / ceil:.2f}x")
    out.append(
        (
            "at >= 100 rows/request, service (best over connections) >= 0.8x the raw-ORT all-cores ceiling",
            ok,
            "; ".join(parts),
        )
    )
    s11, n11 = _cell(result, "service", 1, 1), _cell(result, "naive", 1, 1)
    out.append(
        (
            "1 row x 1 conn: service p50 <= naive p50 + 0.5 ms",
            s11["p50_ms"] <= n11["p50_ms"] + 0.5,
            f"{s11['p50_ms']:.2f} ms vs {n11['p50_ms']:.2f} ms",
        )
    )
    ov = result["overload"]
    svc = ov["service"]
    out.append(
        (
            "overload: no client timeouts",
            svc["timeouts"] == 0 and svc["errors"] == 0,
            f"{svc['timeouts']} timeouts, {svc['errors']} other errors",
        )
    )
    max503 = svc["max_503_ms"]
    out.append(
        (
            "overload: excess gets 503 + Retry-After within 50 ms",
            svc["status_503"] > 0
            and max503 is not None
            and max503 <= 50
            and svc["retry_after_on_503"] == svc["status_503"],
            f"{svc['status_503']} x 503 (all with Retry-After: {svc['retry_after_on_503'] == svc['status_503']}), "
            f"p99 {_fmt(svc['p99_503_ms'])} ms, max {_fmt(max503)} ms",
        )
    )
    out.append(
        (
            "overload: admitted p99 <= 2x unloaded p99 at that size",
            svc["p99_ms"] is not None and svc["p99_ms"] <= 2 * ov["unloaded_p99_ms"],
            f"{_fmt(svc['p99_ms'])} ms vs 2 x {_fmt(ov['unloaded_p99_ms'])} ms",
        )
    )
    rob = result.get("robustness")
    if rob:
        rl = rob["reloads"]
        failed = rl["requests"] - rl["ok"]  # anything but 200
        reload_ok = all(a[0] == 200 and a[1] == "ok" for a in rl["reload_answers"])
        # every process of the group on the new version before the next reload (older runs: no 4th item)
        reload_ok &= all(len(a) < 4 or a[3] is not None for a in rl["reload_answers"])
        reload_ok &= bool(rl.get("load_ran_through_all_reloads"))
        out.append(
            (
                "10 hot reloads under load: 0 failed requests",
                failed == 0 and reload_ok,
                f"{rl['requests']} requests, {failed} failed; reload answers all ok: {reload_ok}",
            )
        )
        ro = rob["redis_outage"]
        five = ro["status_503"] + ro["errors"] + ro["timeouts"]  # errors exclude timeouts
        out.append(
            (
                "Redis stopped under load: 0 5xx (degraded answers)",
                five == 0,
                f"{ro['requests']} requests, {five} 5xx/errors/timeouts; probe while down "
                f"(status, degraded) = {ro['degraded_answer_seen']}; {ro['redis_errors']:.0f} Redis errors",
            )
        )
    return out


def _plots(result: dict[str, Any], img: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    cells = result["cells"]
    rows_list = sorted({c["rows"] for c in cells})
    conns_list = sorted({c["conns"] for c in cells})
    fig, axes = plt.subplots(
        1, len(conns_list), figsize=(4.2 * len(conns_list), 3.6), sharey=True, squeeze=False
    )
    axes = axes[0]
    for ax, conns in zip(axes, conns_list, strict=True):
        for server, style in (("service", "o-"), ("naive", "s--")):
            ax.plot(
                rows_list,
                [_cell(result, server, r, conns)["rows_per_s"] for r in rows_list],
                style,
                label="this service" if server == "service" else "naive peer",
            )
        ceil = [result["ceilings"][str(r)]["rows_per_s"] for r in rows_list]
        ax.plot(rows_list, ceil, "k:", label="raw ORT, all cores")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{conns} connection{'s' if conns > 1 else ''}")
        ax.set_xlabel("rows / request")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("rows / s (200 answers)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    names = ["serving_rows_per_s.png"]
    fig.savefig(img / names[0], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    cdf_rows, cdf_conns = min(rows_list), max(conns_list)  # 1 row x 32 connections in the full grid
    for server, style in (("service", "-"), ("naive", "--")):
        cdf = _cell(result, server, cdf_rows, cdf_conns)["cdf_ms"]
        if cdf:
            ax.plot(
                cdf,
                [i / (len(cdf) - 1) for i in range(len(cdf))],
                style,
                label="this service" if server == "service" else "naive peer",
            )
    ax.set_xscale("log")
    ax.set_xlabel(f"latency ms ({cdf_rows} row/request, {cdf_conns} connections)")
    ax.set_ylabel("fraction of requests")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    names.append("serving_latency_cdf.png")
    fig.savefig(img / names[1], dpi=110)
    plt.close(fig)
    return names


def markdown(result: dict[str, Any], plots: list[str]) -> str:
    meta = result["meta"]
    cells = result["cells"]
    rows_list = sorted({c["rows"] for c in cells})
    conns_list = sorted({c["conns"] for c in cells})
    lines = [
        START,
        "## Serving engine: this service vs a naive peer vs raw ONNX Runtime",
        "",
        f"Command (one sitting, {meta['minutes']:.1f} min): `{meta['command']}`",
        "",
        f"Run {meta['started']} on {meta['cores']} usable cores shared with other jobs: load average "
        f"before {meta['load_before']}, after {meta['load_after']}. Bundle `{meta['bundle']}` "
        f"({meta.get('bundle_note', 'see below')}). Service: Redis backend (vocab published to the "
        "shared redis-server under a fresh prefix), "
        f"`serve` ({meta.get('service_processes', 1)} processes), every other setting default "
        f"({meta.get('service_info')}). Naive peer: bench/naive_peer.py (plain `def` endpoint, one "
        "`session.run` per request, dict vocab, no batching, no Redis). Load: bench/load_client.py in its "
        f"own process, closed loop, {meta['seconds']:.0f} s per cell after a warm-up, {meta['timeout']:.0f} s client timeout, "
        "Retry-After honoured; service and peer alternate cell by cell. rows/s counts 200 answers only; "
        "p50/p99 are of 200 answers.",
        "",
        "| rows/req x conns | service rows/s | p50 ms | p99 ms | 503s | timeouts+errors | naive rows/s | "
        "p50 ms | p99 ms | timeouts+errors | service / naive | raw ORT ceiling rows/s | service / ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows_list:
        ceil = result["ceilings"][str(r)]["rows_per_s"]
        for c in conns_list:
            s, n = _cell(result, "service", r, c), _cell(result, "naive", r, c)
            lines.append(
                f"| {r} x {c} | {s['rows_per_s']:,.0f} | {_fmt(s['p50_ms'])} | {_fmt(s['p99_ms'])} | "
                f"{s['status_503']} | {s['timeouts'] + s['errors']} | {n['rows_per_s']:,.0f} | "
                f"{_fmt(n['p50_ms'])} | {_fmt(n['p99_ms'])} | {n['timeouts'] + n['errors']} | "
                f"{_ratio(s['rows_per_s'], n['rows_per_s'])} | {ceil:,.0f} | {s['rows_per_s'] / ceil:.2f}x |"
            )
    ov = result["overload"]
    lines += [
        "",
        f"Raw ORT ceiling: bench/ort_ceiling.py, one session (1 intra-op thread) per core in "
        f"{meta['cores']} processes side by side, batch = rows/request, no HTTP; the mean of a run right "
        "before and one right after that size's cells (before / after: "
        + ", ".join(
            f"{r} rows {c['before']:,.0f} / {c['after']:,.0f}" if "before" in c else f"{r} rows {c['rows_per_s']:,.0f}"
            for r, c in ((r, result["ceilings"][str(r)]) for r in rows_list)
        )
        + ").",
        "",
        f"### Overload: open loop at {ov['rate_req_s']:.1f} requests/s of {ov['rows']} rows "
        f"({ov['rate_req_s'] / ov['capacity_req_s']:.1f}x the service's best closed-loop rate, "
        f"{ov['capacity_req_s']:.1f} req/s)",
        "",
        "| server | requests | 200 | 503 (with Retry-After) | 503 p99 / max ms | timeouts | errors | "
        "200 p50 ms | 200 p99 ms | unloaded p99 ms (1 conn) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("service", "naive"):
        o = ov[name]
        lines.append(
            f"| {name} | {o['requests']} | {o['ok']} | {o['status_503']} ({o['retry_after_on_503']}) | "
            f"{_fmt(o['p99_503_ms'])} / {_fmt(o['max_503_ms'])} | {o['timeouts']} | {o['errors']} | "
            f"{_fmt(o['p50_ms'])} | {_fmt(o['p99_ms'])} | {_fmt(ov['unloaded_p99_ms'])} |"
        )
    by_slice = timeline_line(ov["service"])
    if by_slice:
        lines += ["", by_slice]
    if ov.get("service_slowest"):
        lines += ["", f"Service, from a scheduler trace of the run (`bench/sched_trace.py`): {ov['service_slowest']}."]
    noise = noise_line(meta)
    if noise:
        lines += ["", noise]
    rob = result.get("robustness")
    if rob:
        rl, ro = rob["reloads"], rob["redis_outage"]
        lines += [
            "",
            "### Robustness under load (private redis-server, 8 connections x 10 rows)",
            "",
            f"- 10 hot reloads (`POST /admin/reload`, alternating two versions): {rl['requests']} requests, "
            f"{rl['ok']} answered 200, {rl['status_503']} x 503, {rl['timeouts']} timeouts, "
            f"{rl['errors']} other errors; reload answers {[tuple(a[:2]) for a in rl['reload_answers']]}"
            + _settled(rl["reload_answers"]) + ".",
            f"- Redis stopped for a third of the run, then restarted: {ro['requests']} requests, {ro['ok']} "
            f"answered 200, {ro['status_503']} x 503, {ro['timeouts']} timeouts, {ro['errors']} other errors; "
            f"a probe with unseen values while Redis was down got (status, degraded) = "
            f"{ro['degraded_answer_seen']}.",
        ]
    lines += ["", "### Done-when checks (computed from the numbers above)", ""]
    for line, holds, numbers in checks(result):
        lines.append(f"- [{'x' if holds else ' '}] {line}: {'holds' if holds else 'FAILS'} ({numbers})")
    lines += [""] + [f"![{p}](img/{p})" for p in plots] + ["", END]
    return "\n".join(lines) + "\n"


def timeline_line(summary: dict[str, Any]) -> str | None:
    """Where in the run the service's slow admitted answers were: one p99 per slice of its timeline
    (the onset of the overload, a stall, or throughout), so a failing p99 can be read at a glance."""
    slices = [b for b in summary.get("timeline") or [] if b["ok"]]
    if len(slices) < 2:
        return None
    step = slices[1]["from_s"] - slices[0]["from_s"]
    worst = max(b["p99_ms"] for b in slices)
    cells = ", ".join(
        f"**{b['p99_ms']:.0f}**" if b["p99_ms"] == worst else f"{b['p99_ms']:.0f}" for b in slices
    )
    line = (
        f"Service, admitted p99 per {step:g} s of the run, in ms (slices by start time; the worst in bold): "
        f"{cells}."
    )
    lags = [b.get("send_lag_max_ms") for b in slices]
    if all(lag is not None for lag in lags):  # open loop: how late the load client itself was
        at_worst = next(lag for b, lag in zip(slices, lags, strict=True) if b["p99_ms"] == worst)
        line += f" The load client sent at most {at_worst:.0f} ms late in the worst slice ({max(lags):.0f} ms in any)."
    return line


def noise_line(meta: dict[str, Any]) -> str | None:
    """How steady the CPU was, from bench/machine_noise.py run idle before the grid and the overload."""
    probes = [(when, meta[key]) for when, key in NOISE_PROBES if key in meta]
    if not probes:
        return None
    said = "; ".join(f"{when}, {NoiseProfile(**p).line()}" for when, p in probes)
    return (
        "Machine steadiness (`python -m bench.machine_noise`: one process per core times fixed CPU work while "
        f"both servers idle): {said}. A steady host shows neither (one of four lent H100 hosts, docs/gpu.md); "
        "where they show, every request in flight at that moment slows at once, and the overload's p99 moves "
        "with them."
    )


def write_report(result: dict[str, Any], doc: Path, img: Path) -> None:
    """Replace the section between the markers in ``doc`` (appended when absent)."""
    section = markdown(result, _plots(result, img))
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END) + "\n?", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = doc.with_name(f".{doc.name}.tmp")
    tmp.write_text(text)
    tmp.replace(doc)  # never a half-written docs/benchmarks.md


def _settled(answers: list[list]) -> str:
    """How long each reload took to reach every process (bench/robustness.py ``group_settled_s``)."""
    times = [a[3] for a in answers if len(a) >= 4]
    if not times:
        return ""
    if any(t is None for t in times):
        return "; some reloads did not reach every process within 10 s"
    return f"; every process served the new version {min(times):.2f}-{max(times):.2f} s after the answer"
