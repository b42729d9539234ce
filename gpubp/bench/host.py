"""The ``host`` group: what one training step costs the host, with every kernel and every array call
a no-op (``gpubp.cuda.dryrun``: the cupy backend's launch path, NumPy arrays, nothing launched).

That is gpubp's own Python per step: the stepper's checks of its arguments and the replay of the
prepared launches.  A GPU step cannot run faster than this whatever the kernels do, so it is measured
here, on any machine, per net and backend option: launches per step, µs per step and per launch, and
the same in calls of this host's ``np.int32()`` (about 0.1-0.7 µs depending on the machine), so that
hosts can be compared.  Targets (benchmarks/test_targets.py): at most 5 such calls a launch of the
per-kernel step, at most 5 a step where the fused step runs K steps a launch, and at most 60 a step for
[784, 30, 10]/10 with gemm="own".  CuPy's own cost per launch (a RawKernel call,
a cuBLAS call) comes on top on a GPU; a CUDA graph's replay is one launch whatever the step.
"""
from __future__ import annotations

import statistics

from .cases import NETS
from .timing import Row

#: (label, backend options) of the host rows: the default (the fused step where it applies, K steps a launch),
#: gpubp's per-layer GEMMs, and the per-kernel step with cuBLAS's
OPTIONS = [("default", {}), ("gemm=own", {"gemm": "own"}), ("fused_step=False", {"fused_step": False})]
TARGET_PER_LAUNCH = 5
TARGET_SEED_NET = 60          # np.int32() calls a step, [784, 30, 10]/10 with gemm="own"


def measure(sizes, B, options, quick=False, unit=None) -> dict:
    """One step's host cost: launches, the median and spread (IQR) of the seconds a step, and the
    median in np.int32() calls of this host."""
    from ..plan import dry_step, host_times, int32_call_s
    unit = unit or int32_call_s()
    dry = dry_step(sizes, B, "cross_entropy", options)
    launches = len(dry.log) / dry.K           # a step's (1/K with the fused step's K steps a launch)
    times = sorted(host_times(dry, min_time=0.1 if quick else 0.3, repeat=5 if quick else 9))   # a step each
    median = statistics.median(times)
    return {"launches": launches, "steps_per_launch": dry.K, "median_s": median,
            "spread_s": times[3 * len(times) // 4] - times[len(times) // 4],
            "units": median / unit, "best_units": times[0] / unit, "unit_s": unit, "n": len(times)}


def rows(nets=None, quick=False, log=print) -> list[Row]:
    from ..plan import int32_call_s
    out = []
    unit = int32_call_s()
    for sizes, B in nets or NETS:
        for label, options in OPTIONS:
            m = measure(sizes, B, options, quick, unit)
            n, K = m["launches"], m["steps_per_launch"]
            launches = f"{n:g} launches" if K == 1 else f"1 launch per {K} steps (fused)"
            row = Row("host", f"{sizes} b{B}", f"gpubp {label}", "cpu", median_s=m["median_s"], spread_s=m["spread_s"],
                      n_calls=m["n"],
                      note=f"{launches}, {m['median_s'] / n * 1e6:.2f} µs a launch; {m['units']:.1f} np.int32() a "
                           f"step, {m['units'] / n:.1f} a launch ({unit * 1e9:.0f} ns each)")
            out.append(row)
            log(f"host   {row.case:34} {row.impl:22} {m['median_s'] * 1e6:8.1f} µs  {row.note}")
    return out
