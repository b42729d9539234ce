"""The suite's picture: time per step of each net and implementation."""
from __future__ import annotations

import numpy as np

from .._version import __version__


def plot(report, path) -> str | None:
    """Time per step (log scale) for each net and implementation, GEMM floor
    marked, and the speed-up of gpubp over the obvious NumPy step.  Returns
    None when matplotlib is missing (the reason is the caller's to print)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed (pip install 'gpubp[bench]'): no plot"
    steps = [r for r in report.rows if r.group == "step"]
    cases = list(dict.fromkeys(r.case for r in steps))
    impls = [i for i in dict.fromkeys(r.impl for r in steps if r.median_s) if not i.startswith("GEMM floor")]
    if not impls:
        return "no training step was timed: no plot"
    missing = {r.impl: r.note for r in steps if not r.median_s and r.impl not in impls}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(1, len(impls))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x = np.arange(len(cases))
    for k, impl in enumerate(impls):
        vals = [next((r.median_s for r in steps if r.case == c and r.impl == impl and r.median_s), np.nan)
                for c in cases]
        ax.bar(x + (k - (len(impls) - 1) / 2) * width, np.array(vals) * 1e3, width, label=impl,
               color=colors[k % len(colors)])
    for dev, style in (("numpy", "-"), ("cupy", "--")):
        for i, c in enumerate(cases):
            f = next((r.median_s for r in steps if r.case == c and r.impl == f"GEMM floor {dev}" and r.median_s), None)
            if f:
                ax.hlines(f * 1e3, i - 0.45, i + 0.45, colors="black", linestyles=style, linewidth=2,
                          label=f"GEMM floor {dev}" if i == 0 else None)
    ax.set_yscale("log")
    def short(c):   # "[784, 30, 10] b10 mse" → "784-30-10\nbatch 10\nmse"
        net, rest = c.split("] ")
        B, loss = rest.split(" ", 1)
        return f"{net.strip('[').replace(', ', '-')}\nbatch {B[1:]}\n{loss.replace('cross_entropy', 'cross-entropy')}"
    ax.set_xticks(x)
    ax.set_xticklabels([short(c) for c in cases], fontsize=8)
    if missing:
        ax.text(0.01, 0.99, "\n".join(f"{k}: {v}" for k, v in missing.items()), transform=ax.transAxes,
                fontsize=7, va="top", ha="left", color="dimgray", wrap=True)
    ax.set_ylabel("time per SGD step (ms, log scale)")
    ax.set_title("One training step: gpubp against baselines (black: GEMM floor)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.94))
    ax.grid(axis="y", which="both", alpha=0.3)
    # speed-up over the obvious NumPy step
    ref = {c: next((r.median_s for r in steps if r.case == c and r.impl == "obvious numpy" and r.median_s), None)
           for c in cases}
    for impl in (i for i in impls if i != "obvious numpy"):
        vals = [ref[c] / next((r.median_s for r in steps if r.case == c and r.impl == impl and r.median_s), np.nan)
                if ref[c] else np.nan for c in cases]
        ax2.plot(x, vals, "o-", label=impl, color=colors[(impls.index(impl)) % len(colors)])
    ax2.axhline(1.0, color="gray", linewidth=1)
    ax2.set_yscale("log")
    ax2.set_xticks(x)
    ax2.set_xticklabels([short(c) for c in cases], fontsize=6)
    ax2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax2.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x" if v in (0.2, 0.5, 2, 5) else ""))
    ax2.set_ylabel("speed-up over the obvious NumPy step (log scale)")
    ax2.set_title("Speed-up (higher is better)")
    ax2.legend(fontsize=8)
    ax2.grid(which="both", alpha=0.3)
    fig.suptitle(f"gpubp {__version__} on {report.machine.get('cpu')} ({report.machine.get('cores')} cores); "
                 f"GPU: {report.machine.get('gpu_peaks') or report.machine.get('cuda')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
