"""What the suite measured, as a table, JSON, a summary and a plot file.

A ratio of two rows (x floor, vs a peer, step(), threads) is read from their rounds: the rounds'
own ratios when the rows were timed in the same rounds, else every pair of their samples.  It is
shown with a mark when it is not a result:

    ~   within the noise: the middle half of the ratios spans 1 (no difference is shown)
    ?   below what the work done allows (a step faster than its own GEMMs, the public step() faster
        than the fit step it contains): noise or a disturbed run, named below the table
    ±N% after a time: the row stayed noisy (IQR above timing.NOISY of its median) after a rerun

and every line ``gpubp bench`` prints stays within ``MAX_LINE`` characters.
"""
from __future__ import annotations

import json
import os
import platform
import textwrap
from dataclasses import asdict, dataclass, field

import numpy as np

from .._version import __version__
from ..device import cuda_status
from .plot import plot
from .stats import mark, not_run, ratio_stats
from .timing import NOISY, Row

#: the longest line gpubp bench prints; longer ones are wrapped, the rest indented
MAX_LINE = 200


@dataclass
class Report:
    rows: list = field(default_factory=list)
    machine: dict = field(default_factory=dict)

    def to_json(self):
        return {"machine": self.machine, "rows": [asdict(r) for r in self.rows]}


def machine_info():
    ok, why = cuda_status()
    info = {"gpubp": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "cuda": why,
            "load_avg_start": _load()}
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



def _load():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def fill_ratios(rows):
    by = {(r.case, r.impl): r for r in rows if r.median_s}
    for r in rows:
        floor = by.get(tuple(r.floor)) if r.floor and r.median_s else None
        if floor:
            stats = ratio_stats(r, floor)
            r.floor_ratio = r.median_s / floor.median_s
            r.floor_ratio_iqr = None if stats[1] is None else [stats[1], stats[2]]


def fit_lines(text: str, width: int = MAX_LINE) -> str:
    """``text`` with every line longer than ``width`` wrapped at spaces, its continuation indented."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        out += textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False) or [line[:width]]
    return "\n".join(out)


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


#: the column widths of the progress lines when the suite does not give them (case, implementation)
WIDTHS = (34, 22)


def line_widths(cases) -> tuple[int, int]:
    """Column widths for the progress lines of ``cases`` (anything with .case and .impl), so that every
    line of a run keeps its columns however long its case names."""
    cw = max([len(_short_net(c.case)) for c in cases] + [10])
    iw = max([len(c.impl) for c in cases] + [10])
    return min(cw, 60), min(iw, 40)


def row_line(r, widths=WIDTHS):
    """One progress line as a row finishes (within MAX_LINE); None for a row that did not run (the
    reason is said once, at the end)."""
    if r.median_s is None and not r.failed:
        return None
    cw, iw = widths
    head = f"{r.group:7} {_short_net(r.case):{cw}} {r.impl:{iw}}"
    if r.median_s is None:
        return fit_lines(f"{head} {r.note}")
    extra = ""
    if r.rel_spread is not None and r.rel_spread > NOISY:
        extra += f" (IQR {r.rel_spread:.0%} of the median: noisy{', after a rerun' if r.reruns else ''})"
    elif r.reruns:
        extra += " (timed again: the first timing was noisy)"
    if r.floor_ratio:
        extra += f" x{r.floor_ratio:.2f} floor"
    if r.throughput:
        extra += f" {r.throughput:,.0f} samples/s"
    spread = f" ±{_fmt_time(r.spread_s)}" if r.spread_s is not None else ""
    return fit_lines(f"{head} {_fmt_time(r.median_s):>9}{spread}{extra}")


def format_table(report: Report) -> str:
    head = ["group", "case", "implementation", "device", "median", "spread (IQR)", "x GEMM floor",
            "bytes/call", "flops/call", "GB/s", "TFLOP/s", "% peak BW", "% peak FLOP", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if report.machine.get("interrupted"):
        lines = [f"**Incomplete:** {report.machine['interrupted']}.", ""] + lines
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


def _time_cell(r) -> str:
    """A row's median for a table: FAILED, the time, and its spread when it stayed noisy."""
    if r.failed:
        return "FAILED"
    cell = _fmt_time(r.median_s)
    return f"{cell} ±{r.rel_spread:.0%}" if r.noisy and r.rel_spread is not None else cell


def _bounded(r) -> bool:
    """Whether a step row cannot be faster than its floor: it runs the floor's own GEMMs (same library,
    same launches), and more.  PyTorch's BLAS is not NumPy's, and gpubp's own GEMM kernels and graph
    replays are not the floor's eager cuBLAS calls: those may be below 1."""
    return r.group == "step" and not r.impl.startswith("torch") and r.impl not in ("gpubp cupy own",
                                                                                    "gpubp cupy graph")


def _floor_mark(r) -> str:
    if not r.floor_ratio:
        return ""
    return mark((r.floor_ratio, *(r.floor_ratio_iqr or (None, None))), _bounded(r))


def _floor_cell(r) -> str:
    return f"{r.floor_ratio:.2f}{_floor_mark(r)}" if r.floor_ratio else "-"


#: per group: its title and its table (columns, and a row's cells); a new group adds an entry here
TABLES = {
    "step": ("step: one SGD step", ["net", "implementation", "median", "x floor"],
             lambda r: [_short_net(r.case), r.impl, _time_cell(r), _floor_cell(r)]),
    "kernel": ("kernel: each fused op, its naive twin, the unfused expressions, the GEMM alone",
               ["op", "implementation", "median", "GB/s", "x floor"],
               lambda r: [r.case, r.impl, _time_cell(r), f"{r.gbps:.1f}" if r.gbps else "-", _floor_cell(r)]),
    "e2e": ("e2e: training throughput", ["case", "implementation", "median", "samples/s"],
            lambda r: [r.case, r.impl, _time_cell(r), f"{r.throughput:,.0f}" if r.throughput else "-"]),
    "dp": ("dp: one data-parallel step, MPI ranks on this machine (x 1 rank: time / the 1-rank step)",
           ["net", "implementation", "median", "x 1 rank", "what the exchange costs"],
           lambda r: [_short_net(r.case.removesuffix(" data-parallel")), r.impl, _time_cell(r),
                      _floor_cell(r), r.note.split("; ")[0]]),
    "host": ("host: one fit step's host cost, every kernel and array call a no-op (gpubp's own Python)",
             ["net", "implementation", "median", "launches, per launch, np.int32() calls"],
             lambda r: [_short_net(r.case), r.impl, _time_cell(r), r.note]),
}


def _threads_table(rows, wrong) -> list[str]:
    """The threads group: per net and batch, one BLAS thread against the default count, and whether
    gpubp's choice (gpubp.blas.threads_for) is the faster one (``wrong`` collects where it is not)."""
    from .. import blas
    from .cases import gpubp_threads
    by = {}
    for r in rows:
        by.setdefault(r.case, {})[r.threads] = r
    counts = sorted({n for b in by.values() for n in b if n})
    if len(counts) < 2:
        return [f"the BLAS has {counts[0] if counts else '?'} thread(s) here: nothing to compare"]
    one, many = counts[0], counts[-1]
    table = []
    for case, b in by.items():
        r1, rn = b.get(one), b.get(many)
        if not (r1 and rn and r1.median_s and rn.median_s):
            continue
        sizes, B = [int(x) for x in case[1:].split("]")[0].split(", ")], int(case.rsplit(" b", 1)[1])
        stats = ratio_stats(rn, r1)
        m = mark(stats)
        faster = "no difference (within the noise)" if m else (f"{one} thread" if stats[0] > 1 else f"{many} threads")
        pick = gpubp_threads(sizes, B)
        verdict = "" if m else ("yes" if (pick == one) == (stats[0] > 1) else "NO!")
        if verdict == "NO!":
            wrong.append(f"{_short_net(case)} ({blas.step_macs(sizes, B):.2g}): {pick} thread(s), {faster} "
                         f"faster ({many}/{one}: {stats[0]:.2f})")
        table.append([_short_net(case), f"{blas.step_macs(sizes, B):.2g}", _time_cell(r1), _time_cell(rn),
                      f"{stats[0]:.2f}{m}", faster, f"{pick}", verdict or "-"])
    return _table(["net", "multiply-adds", f"{one} thread", f"{many} threads", f"{many}/{one}", "faster here",
                   "gpubp uses", "the faster?"], table)


def terminal(report: Report, said=()) -> str:
    """What ``gpubp bench`` prints: a summary per net (ratios marked where they are noise, see the
    module doc, with a note naming each), then one short table per group, then the rows that did not
    run, each with its own reason (reasons in ``said`` were already printed); every line within
    MAX_LINE.  The full detail (bytes, flops, GB/s, spread, samples, notes) is bench.md and bench.json."""
    out, problems = [], []
    steps = [r for r in report.rows if r.group == "step" and r.median_s]
    by_case = {}
    for r in steps:
        by_case.setdefault(r.case, {})[r.impl] = r
    within_noise = False
    if by_case:
        peers = [p for p in ("obvious numpy", "torch cpu", "torch cuda") if any(p in by for by in by_case.values())]
        head = ["net", "gpubp", "time", "x floor"] + [f"vs {p}" for p in peers] + ["step()"]
        rows = []
        for case, by in by_case.items():
            for backend in ("numpy", "cupy", "cupy own", "cupy graph"):
                g = by.get(f"gpubp {backend}")
                if not g:
                    continue
                net = _short_net(case)
                cells = [net, backend, _time_cell(g), _floor_cell(g)]
                for p in peers:
                    o = by.get(p)
                    same = o is not None and (o.device == g.device or p == "obvious numpy")
                    stats = ratio_stats(o, g) if same else None
                    cells.append(f"{stats[0]:.2f}x{mark(stats)}" if stats else "-")
                pub = by.get(f"gpubp {backend} step()")
                stats = ratio_stats(pub, g) if pub else None
                cells.append(f"{stats[0]:.2f}{mark(stats, at_least_one=True)}" if stats else "-")
                if cells[-1].endswith("?"):
                    problems.append(f"{net} {backend}: step() {stats[0]:.2f}: net.step(X, y) does the fit step's "
                                    f"work and more (the checks, the loss), so it cannot be faster")
                within_noise |= any(c.endswith("~") for c in cells)
                rows.append(cells)
        out += ["Summary: one SGD step, median.  x floor: time / the step's GEMMs alone (1 is the floor).",
                "vs X: X's time / gpubp's (above 1: gpubp is faster).  step(): the public net.step(X, y), which also "
                "computes the loss it returns, / gpubp's time.  NumPy rows of a net all run on the BLAS threads "
                "gpubp picks for it.", ""]
        out += _table(head, rows)
    for group, (title, columns, cells) in TABLES.items():
        rows = [r for r in report.rows if r.group == group and (r.median_s or r.failed)]
        if rows:
            table = [cells(r) for r in rows]
            within_noise |= any(c.endswith("~") for t in table for c in t)
            problems += [f"{_short_net(r.case)} / {r.impl}: x floor {r.floor_ratio:.2f}: it timed faster than "
                         f"its own GEMMs alone, which it cannot be" for r in rows if _floor_mark(r) == "?"]
            out += ["", title, ""] + _table(columns, table)
    threads, wrong = [r for r in report.rows if r.group == "threads" and r.median_s], []
    if threads:
        out += ["", "threads: gpubp's fit step (numpy) with the BLAS pinned to each thread count, timed in the "
                    "same rounds (multiply-adds: the step's GEMMs)", ""] + _threads_table(threads, wrong)
    noisy = [r for r in report.rows if r.noisy]
    notes = []
    if within_noise:
        notes.append("~  within the noise: the middle half of the round-by-round ratios spans 1, so no difference "
                     "is shown")
    if problems:
        notes.append("?  not a result (noise, or a disturbed run): " + "; ".join(problems))
    if noisy:
        load = report.machine.get("load_avg_end") or report.machine.get("load_avg_start")
        notes.append(f"±N%  {len(noisy)} row(s) stayed noisy after a rerun (IQR above {NOISY:.0%} of the median"
                     + (f"; load average {', '.join(map(str, load))} on {report.machine.get('cores')} cores"
                        if load else "") + "): "
                     + "; ".join(f"{_short_net(r.case)} / {r.impl} ±{r.rel_spread:.0%}" for r in noisy)
                     + ": rerun gpubp bench on a quieter machine, or with --groups and --sizes for those rows")
    if wrong:
        from .. import blas
        notes.append(f"!  gpubp's BLAS threads were the slower choice here for {len(wrong)} net(s): "
                     + "; ".join(wrong) + f".  gpubp uses 1 thread below {blas.ONE_THREAD_BELOW:.2g} multiply-adds "
                     f"a step (gpubp.blas.ONE_THREAD_BELOW); GPUBP_BLAS_THREADS=N sets the count for this machine")
    if notes:
        out += [""] + notes
    missing = not_run(report.rows)
    if missing:
        out += [""] + [f"not run: {which}: " + ("the reason above" if why in said else why) for which, why in missing]
    failed = failures(report)
    if failed:
        out += [""] + [f"FAILED: {r.case} / {r.impl}: {r.note.removeprefix('FAILED ')}" for r in failed]
    return fit_lines("\n".join(out))


def failures(report: Report) -> list[Row]:
    return [r for r in report.rows if r.failed]


def summary(report: Report) -> list[str]:
    """The headline numbers: gpubp's ratio to its floor and its speed-up over the
    baselines per net (a ratio within the noise, or below what the work allows, says so);
    first, any case that failed."""
    lines = [f"FAILED: {r.case} / {r.impl}: {r.note.removeprefix('FAILED ')}" for r in failures(report)]
    steps = [r for r in report.rows if r.group == "step" and r.median_s]
    words = {"~": " (within the noise)", "?": " (not a result: below what the work allows)", "": ""}
    for case in dict.fromkeys(r.case for r in steps):
        by = {r.impl: r for r in steps if r.case == case}
        for backend in ("numpy", "cupy", "cupy own", "cupy graph"):
            g = by.get(f"gpubp {backend}")
            if not g:
                continue
            parts = [f"{case}: gpubp {backend} {_time_cell(g)}"]
            if g.floor_ratio:
                parts.append(f"{g.floor_ratio:.2f}x its GEMM floor{words[_floor_mark(g)]}")
            for other in ("obvious numpy", "torch cpu", "torch cuda"):
                o = by.get(other)
                if o and (o.device == g.device or other == "obvious numpy"):
                    stats = ratio_stats(o, g)
                    parts.append(f"{stats[0]:.2f}x the speed of {other}{words[mark(stats)]}")
            lines.append(", ".join(parts))
    return lines
