"""What the suite measured, as a table, JSON, a summary and a plot file."""
from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field

import numpy as np

from .._version import __version__
from ..device import cuda_status
from .plot import plot
from .timing import Row


@dataclass
class Report:
    rows: list = field(default_factory=list)
    machine: dict = field(default_factory=dict)

    def to_json(self):
        return {"machine": self.machine, "rows": [asdict(r) for r in self.rows]}


def machine_info():
    ok, why = cuda_status()
    info = {"gpubp": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "cuda": why}
    try:
        import threadpoolctl
        info["blas"] = [f"{i['internal_api']} {i.get('version')} {i['num_threads']} threads ({i['prefix']})"
                        for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    except ImportError:
        pass
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info



def fill_ratios(rows):
    medians = {(r.case, r.impl): r.median_s for r in rows if r.median_s}
    for r in rows:
        floor = medians.get(tuple(r.floor)) if r.floor and r.median_s else None
        if floor:
            r.floor_ratio = r.median_s / floor


def _fmt_time(s):
    if s is None:
        return "-"
    for unit, k in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if s >= k:
            return f"{s / k:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _fmt_num(x, unit=""):
    if x is None:
        return "-"
    for suffix, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= k:
            return f"{x / k:.3g} {suffix}{unit}"
    return f"{x:.3g} {unit}".strip()


def row_line(r):
    """One progress line as a row finishes; None for a row that did not run (the reason is said once)."""
    if r.median_s is None and not r.failed:
        return None
    if r.median_s is None:
        return f"{r.group:6} {r.case:34} {r.impl:22} {r.note}"
    extra = f" x{r.floor_ratio:.2f} floor" if r.floor_ratio else ""
    if r.throughput:
        extra += f" {r.throughput:,.0f} samples/s"
    return f"{r.group:6} {r.case:34} {r.impl:22} {_fmt_time(r.median_s):>9} ±{_fmt_time(r.spread_s)}{extra}"


def format_table(report: Report) -> str:
    head = ["group", "case", "implementation", "device", "median", "spread (IQR)", "x GEMM floor",
            "bytes/call", "flops/call", "GB/s", "TFLOP/s", "% peak BW", "% peak FLOP", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.rows:
        cells = [r.group, r.case, r.impl, r.device, _fmt_time(r.median_s),
                 _fmt_time(r.spread_s) if r.spread_s is not None else "-",
                 f"{r.floor_ratio:.2f}" if r.floor_ratio else "-",
                 _fmt_num(r.bytes, "B"), _fmt_num(r.flops),
                 f"{r.gbps:.1f}" if r.gbps else "-", f"{r.tflops:.3f}" if r.tflops else "-",
                 f"{100 * r.peak_bw_fraction:.0f}%" if r.peak_bw_fraction else "-",
                 f"{100 * r.peak_flops_fraction:.0f}%" if r.peak_flops_fraction else "-",
                 (f"{r.throughput:,.0f} samples/s " if r.throughput else "") + r.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)



def write(report: Report, out_dir) -> dict:
    """Write bench.json, bench.md and bench.png into ``out_dir``; returns their paths (and a note)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "bench.json"), "table": os.path.join(out_dir, "bench.md"),
             "plot": os.path.join(out_dir, "bench.png")}
    with open(paths["json"], "w") as f:
        json.dump(report.to_json(), f, indent=1, default=float)
    with open(paths["table"], "w") as f:
        f.write(format_table(report) + "\n")
    note = plot(report, paths["plot"])
    if note:
        paths.pop("plot")
        paths["note"] = note
    return paths


def _short_net(case: str) -> str:
    """'[784, 30, 10] b10 cross_entropy' -> '784-30-10 b10 ce'."""
    if not case.startswith("["):
        return case
    net, rest = case[1:].split("] ", 1)
    return f"{net.replace(', ', '-')} {rest.replace('cross_entropy', 'ce')}"


def _table(head: list, rows: list) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()   # noqa: E731
    return [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]


def unavailable(report: Report) -> dict[str, int]:
    """Why rows were not run (the short reason) -> how many."""
    out = {}
    for r in report.rows:
        if r.median_s is None and not r.failed:
            why = r.note.removeprefix("unavailable: ")
            out[why] = out.get(why, 0) + 1
    return out


def terminal(report: Report, said=()) -> str:
    """What ``gpubp bench`` prints: the rows that did not run and why (once; reasons in ``said`` were
    already printed), a summary per net, then one short table per group; the full detail (bytes, flops,
    GB/s, spread, notes) is bench.md and bench.json."""
    out = []
    for why, n in unavailable(report).items():
        out.append(f"not run: {n} rows" + (" (the reason above)" if why in said else f": {why}"))
    steps = [r for r in report.rows if r.group == "step" and r.median_s]
    by_case = {}
    for r in steps:
        by_case.setdefault(r.case, {})[r.impl] = r
    if by_case:
        peers = [p for p in ("obvious numpy", "torch cpu", "torch cuda") if any(p in by for by in by_case.values())]
        head = ["net", "gpubp", "time", "x floor"] + [f"vs {p}" for p in peers] + ["step()"]
        rows = []
        for case, by in by_case.items():
            for backend in ("numpy", "cupy", "cupy own", "cupy graph"):
                g = by.get(f"gpubp {backend}")
                if not g:
                    continue
                cells = [_short_net(case), backend, _fmt_time(g.median_s),
                         f"{g.floor_ratio:.2f}" if g.floor_ratio else "-"]
                for p in peers:
                    o = by.get(p)
                    same = o is not None and (o.device == g.device or p == "obvious numpy")
                    cells.append(f"{o.median_s / g.median_s:.2f}x" if same else "-")
                pub = by.get(f"gpubp {backend} step()")
                cells.append(f"{pub.median_s / g.median_s:.2f}" if pub else "-")
                rows.append(cells)
        out += ["", "Summary: one SGD step, median.  x floor: time / the step's GEMMs alone (1 is the floor).",
                "vs X: X's time / gpubp's (above 1: gpubp is faster).  step(): the public net.step(X, y), which also "
                "computes the loss it returns, / gpubp's time.", ""]
        out += _table(head, rows)
    titles = {"step": "step: one SGD step", "kernel": "kernel: each fused op, its naive twin, the unfused "
              "expressions, the GEMM alone", "e2e": "e2e: training throughput",
              "dp": "dp: one data-parallel step, MPI ranks on this machine (x 1 rank: time / the 1-rank step)"}
    for group, title in titles.items():
        rows = [r for r in report.rows if r.group == group and (r.median_s or r.failed)]
        if not rows:
            continue
        out += ["", title, ""]
        if group == "kernel":
            out += _table(["op", "implementation", "median", "GB/s", "x floor"],
                          [[r.case, r.impl, "FAILED" if r.failed else _fmt_time(r.median_s),
                            f"{r.gbps:.1f}" if r.gbps else "-", f"{r.floor_ratio:.2f}" if r.floor_ratio else "-"]
                           for r in rows])
        elif group == "dp":
            out += _table(["net", "implementation", "median", "x 1 rank", "what the exchange costs"],
                          [[_short_net(r.case.removesuffix(" data-parallel")), r.impl,
                            "FAILED" if r.failed else _fmt_time(r.median_s),
                            f"{r.floor_ratio:.2f}" if r.floor_ratio else "-", r.note.split("; ")[0]] for r in rows])
        elif group == "e2e":
            out += _table(["case", "implementation", "median", "samples/s"],
                          [[r.case, r.impl, "FAILED" if r.failed else _fmt_time(r.median_s),
                            f"{r.throughput:,.0f}" if r.throughput else "-"] for r in rows])
        else:
            out += _table(["net", "implementation", "median", "x floor"],
                          [[_short_net(r.case), r.impl, "FAILED" if r.failed else _fmt_time(r.median_s),
                            f"{r.floor_ratio:.2f}" if r.floor_ratio else "-"] for r in rows])
    failed = failures(report)
    if failed:
        out += [""] + [f"FAILED: {r.case} / {r.impl}: {r.note.removeprefix('FAILED ')}" for r in failed]
    return "\n".join(out)


def failures(report: Report) -> list[Row]:
    return [r for r in report.rows if r.failed]


def summary(report: Report) -> list[str]:
    """The headline numbers: gpubp's ratio to its floor and its speed-up over the
    baselines per net; first, any case that failed."""
    lines = [f"FAILED: {r.case} / {r.impl}: {r.note.removeprefix('FAILED ')}" for r in failures(report)]
    steps = [r for r in report.rows if r.group == "step" and r.median_s]
    for case in dict.fromkeys(r.case for r in steps):
        by = {r.impl: r for r in steps if r.case == case}
        for backend in ("numpy", "cupy", "cupy own", "cupy graph"):
            g = by.get(f"gpubp {backend}")
            if not g:
                continue
            parts = [f"{case}: gpubp {backend} {_fmt_time(g.median_s)}"]
            if g.floor_ratio:
                parts.append(f"{g.floor_ratio:.2f}x its GEMM floor")
            for other in ("obvious numpy", "torch cpu", "torch cuda"):
                o = by.get(other)
                if o and (o.device == g.device or other == "obvious numpy"):
                    parts.append(f"{o.median_s / g.median_s:.2f}x the speed of {other}")
            lines.append(", ".join(parts))
    return lines
