"""The suite's picture, bench.png: per net, the time of one SGD step of every
implementation (log scale: the nets differ a thousandfold) with its GEMM floor
marked, and beside it each one's speed-up over the obvious NumPy step on a
linear scale around the 1× line.  Error bars are the spread: the middle half
(25th to 75th percentile) of the timed rounds, and of the round-by-round
ratios for a speed-up.  Legend and notes sit outside the axes; at the bottom,
each row that did not run, with its own reason."""
from __future__ import annotations

import textwrap

import numpy as np

from .._version import __version__
from .stats import not_run, ratio_stats

#: the default size (inches) and resolution: 1320 × 726 pixels
FIGSIZE, DPI = (12.0, 6.6), 110


def _labels(cases: list) -> tuple[list, str]:
    """Short x labels, and what they leave out: '[784, 30, 10] b10 cross_entropy' -> '30\\nb10 ce' when
    every net shares its input and output widths (then said once: '784-…-10')."""
    parsed = []
    for case in cases:
        net, rest = case[1:].split("] ", 1)
        parsed.append(([int(n) for n in net.split(", ")], rest.replace("cross_entropy", "ce")))
    ends = {(w[0], w[-1]) for w, _ in parsed}
    if len(ends) == 1 and all(len(w) > 2 for w, _ in parsed):
        (first, last), = ends
        return [f"{'-'.join(map(str, w[1:-1]))}\n{rest}" for w, rest in parsed], f"nets {first}-(hidden)-{last}"
    return [f"{'-'.join(map(str, w))}\n{rest}" for w, rest in parsed], "nets"


def plot(report, path) -> str | None:
    """Draw bench.png; returns why not (matplotlib missing, no step timed), else None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'gpubp[bench]'): no plot"
    steps = [r for r in report.rows if r.group == "step"]
    timed = [r for r in steps if r.median_s]
    cases = list(dict.fromkeys(r.case for r in timed))
    impls = [i for i in dict.fromkeys(r.impl for r in timed) if not i.startswith("GEMM floor")]
    if not impls:
        return "no training step was timed: no plot"
    t = {(r.case, r.impl): r.median_s for r in timed}
    row = {(r.case, r.impl): r for r in timed}

    def time_err(c, impl):
        """(below, above) the median, ms: its 25th and 75th percentiles."""
        r = row.get((c, impl))
        if r is None or not r.samples:
            return 0.0, 0.0
        q25, q75 = np.percentile(r.samples, [25, 75])
        return max(0.0, (r.median_s - q25) * 1e3), max(0.0, (q75 - r.median_s) * 1e3)

    def speed(c, impl):
        """(speed-up over the obvious step, below, above): from their round-by-round ratios."""
        if (c, impl) not in row or (c, "obvious numpy") not in row:
            return np.nan, 0.0, 0.0
        r, q25, q75 = ratio_stats(row[(c, "obvious numpy")], row[(c, impl)])
        return r, (r - q25 if q25 is not None else 0.0), (q75 - r if q75 is not None else 0.0)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {impl: colors[k % len(colors)] for k, impl in enumerate(impls)}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=FIGSIZE, dpi=DPI, gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(cases))
    labels, nets = _labels(cases)
    width = 0.8 / len(impls)
    for k, impl in enumerate(impls):
        err = np.array([time_err(c, impl) for c in cases]).T
        ax.bar(x + (k - (len(impls) - 1) / 2) * width, [t.get((c, impl), np.nan) * 1e3 for c in cases], width,
               label=impl, color=color[impl], yerr=err, error_kw={"elinewidth": 0.8, "capsize": 1.5})
    for device, style in (("numpy", "-"), ("cupy", "--")):
        for i, c in enumerate(cases):
            floor = t.get((c, f"GEMM floor {device}"))
            if floor:
                ax.hlines(floor * 1e3, i - 0.45, i + 0.45, colors="black", linestyles=style, linewidth=2,
                          label=f"GEMM floor ({device})" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel(f"{nets}, batch, loss", fontsize=8)
    ax.set_ylabel("time per SGD step (ms, log scale)")
    ax.set_title("One SGD step (lower is better)", fontsize=11)
    ax.grid(axis="y", which="both", alpha=0.3)

    peers = [i for i in impls if i != "obvious numpy"]
    width2 = 0.8 / max(1, len(peers))
    tops = [1.0]
    for k, impl in enumerate(peers):
        sp = np.array([speed(c, impl) for c in cases])
        ax2.bar(x + (k - (len(peers) - 1) / 2) * width2, sp[:, 0], width2, color=color[impl], yerr=sp[:, 1:].T,
                error_kw={"elinewidth": 0.8, "capsize": 1.5})
        tops += [v for v in sp[:, 0] + sp[:, 2] if np.isfinite(v)]
    ax2.axhline(1.0, color="black", linewidth=1)
    ax2.set_xticks(x, labels, fontsize=8)
    ax2.set_xlabel(f"{nets}, batch, loss", fontsize=8)
    ax2.set_ylabel("speed-up over the obvious NumPy step (×)")
    ax2.set_title("Speed-up (above the 1× line: faster)", fontsize=11)
    ax2.grid(axis="y", alpha=0.3)
    ax2.set_ylim(0, max(1.2, max(tops) * 1.1))

    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.085))
    m = report.machine
    fig.suptitle(f"gpubp {__version__} bench on {m.get('cpu')} ({m.get('cores')} cores)"
                 + (f"; {m['gpu_peaks']}" if m.get("gpu_peaks") else ""), fontsize=10)
    lines = ["error bars: the middle half (25th-75th percentile) of the timed rounds; for a speed-up, of the "
             "round-by-round ratios"]
    for which, why in not_run(steps):          # each row that did not run, with its own reason
        lines += textwrap.wrap(f"not run: {which}: {why.split('; ')[0]}", 200)
    fig.text(0.5, 0.012, "\n".join(lines[:5]), ha="center", va="bottom", fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.15, 1, 0.96))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return None
