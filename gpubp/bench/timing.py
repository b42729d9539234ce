"""Timing: CPU cases in interleaved rounds, GPU cases with CUDA events; a
case is checked before it is timed, and one that fails is reported, not timed.

    CPU   ``time.perf_counter`` over many repetitions (auto-ranged batches of
          calls, median of the batches)
    GPU   CUDA events around each call (``cupyx.profiler.benchmark``)

Rows on different devices never share a timer.  Each row keeps its samples (per-call seconds, one
a round), so a ratio of two rows timed in the same rounds is read from the rounds' own ratios; a
group of cases whose spread (IQR) is above ``NOISY`` of a median is timed once more, for twice as
long, and a row still that noisy says so (``Row.noisy``).
"""
from __future__ import annotations

import contextlib
import itertools
import statistics
import time
from dataclasses import dataclass

import numpy as np

from .. import blas
from ..device import gpu_name
from .cases import Case

#: a row whose interquartile range is above this share of its median is noisy: its group is timed
#: again, and if it stays noisy the summary says so instead of reading a difference into it
NOISY = 0.25

_rounds = itertools.count(1)        # ids of the interleaved timings (rows with the same id are paired)

#: OpenBLAS, and PyTorch's OpenMP, keep idle threads spinning for a while after
#: a call; two libraries spinning at once on 2 cores slow each other tenfold.
#: Each case starts after this pause so the previous library's threads sleep.
SETTLE_S = 0.3


@dataclass
class Row:
    group: str
    case: str
    impl: str
    device: str
    median_s: float | None = None
    spread_s: float | None = None   # interquartile range of the per-call times
    n_calls: int = 0
    floor: tuple | None = None
    floor_ratio: float | None = None
    flops: float | None = None
    bytes: float | None = None
    gbps: float | None = None
    tflops: float | None = None
    peak_bw_fraction: float | None = None
    peak_flops_fraction: float | None = None
    throughput: float | None = None   # items per second (e2e)
    note: str = ""
    failed: bool = False              # its check failed (or it raised): not timed, and the run fails
    samples: list | None = None       # per-call seconds, one a timed round (or a CUDA event)
    timed_with: int | None = None     # rows with the same id were timed in the same rounds (paired)
    floor_ratio_iqr: list | None = None   # [q25, q75] of the ratio to the floor, round by round
    threads: int | None = None        # BLAS threads it ran on (None: not a BLAS case, or not known)
    reruns: int = 0                   # times its group was timed again for being noisy
    noisy: bool = False               # IQR above NOISY of the median even after the rerun

    @property
    def rel_spread(self) -> float | None:
        """IQR / median, or None."""
        return self.spread_s / self.median_s if self.median_s and self.spread_s is not None else None



def time_gpu(fn, min_time=0.5):
    """Per-call GPU times (s) from CUDA events (cupyx.profiler.benchmark)."""
    from cupyx.profiler import benchmark
    probe = benchmark(fn, n_repeat=3, n_warmup=3)
    per = max(float(np.median(probe.gpu_times[0])), 1e-6)
    n = int(min(max(min_time / per, 10), 2000))
    result = benchmark(fn, n_repeat=n, n_warmup=5)
    return list(result.gpu_times[0]), n


def gpu_peaks():
    """(peak GB/s, peak FP32 TFLOP/s, description) read from device 0, or Nones."""
    try:
        import cupy
        rt = cupy.cuda.runtime
        dev = cupy.cuda.Device(0)
        attr = dev.attributes
        sms = attr["MultiProcessorCount"]
        clock_khz = attr.get("ClockRate") or rt.deviceGetAttribute(13, 0)
        mem_khz = attr.get("MemoryClockRate") or rt.deviceGetAttribute(36, 0)
        bus_bits = attr.get("GlobalMemoryBusWidth") or rt.deviceGetAttribute(37, 0)
        cc = dev.compute_capability
        cores = {"75": 64, "80": 64}.get(cc, 128)    # FP32 lanes per SM: 64 on sm_75/sm_80, 128 on sm_86+
        bw = 2 * mem_khz * 1e3 * bus_bits / 8 / 1e9
        tf = sms * cores * 2 * clock_khz * 1e3 / 1e12
        name = gpu_name(rt.getDeviceProperties(0))
        return bw, tf, f"{name} (sm_{cc}, {sms} SMs): peak {bw:.0f} GB/s, {tf:.1f} FP32 TFLOP/s"
    except Exception as e:
        return None, None, f"device peaks unavailable: {e}"


def time_cpu_interleaved(fns, min_time=0.5, rounds=None, contexts=None):
    """Per-call times (s) of several functions timed in alternating rounds
    (A B C A B C …), so that drift in the machine's speed (a shared VM's
    neighbours, frequency changes) falls on all of them alike and their
    ratios stay honest.  Each round times one auto-ranged batch of calls;
    ``contexts`` (one per function, or None) are entered around each batch,
    outside the timed span (the BLAS threads a case runs on)."""
    contexts = contexts or [None] * len(fns)
    ctx = [c if c is not None else contextlib.nullcontext() for c in contexts]
    batch = []
    for fn, c in zip(fns, ctx):          # warm up and size each batch to ≥ 5 ms
        with c:
            fn()
            n = 1
            while True:
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                if time.perf_counter() - t0 >= 0.005 or n >= 1 << 20:
                    break
                n *= 2
        batch.append(n)
    samples = [[] for _ in fns]
    end = time.perf_counter() + min_time * len(fns)
    k = 0
    while k < (rounds or 5) or (rounds is None and time.perf_counter() < end):
        for i, fn in enumerate(fns):
            n = batch[i]
            with ctx[i]:
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                samples[i].append((time.perf_counter() - t0) / n)
        k += 1
    return [(s, batch[i] * len(s)) for i, s in enumerate(samples)]


def _new_row(case: Case) -> Row:
    row = Row(case.group, case.case, case.impl, case.device, flops=case.flops, bytes=case.bytes, floor=case.floor,
              threads=case.threads)
    if case.fn is None:
        row.note = f"unavailable: {case.unavailable}"
    return row


def _finish_row(row: Row, case: Case, samples, n, peaks, timed_with=None) -> Row:
    row.median_s = statistics.median(samples)
    q = np.percentile(samples, [25, 75])
    row.spread_s, row.n_calls = float(q[1] - q[0]), n
    row.samples, row.timed_with = [float(s) for s in samples], timed_with
    if case.items:
        row.throughput = case.items / row.median_s
    if case.bytes:
        row.gbps = case.bytes / row.median_s / 1e9
    if case.flops:
        row.tflops = case.flops / row.median_s / 1e12
    if case.device == "gpu":
        bw, tf = peaks
        if bw and row.gbps:
            row.peak_bw_fraction = row.gbps / bw
        if tf and row.tflops:
            row.peak_flops_fraction = row.tflops / tf
    return row


def _pool(case: Case) -> str:
    """Which thread pool a case runs on: cases of one pool are timed together,
    interleaved; a different pool starts after a pause (see SETTLE_S)."""
    if case.device == "gpu":
        return "gpu"
    return "torch" if case.impl.startswith("torch") else "numpy"


def _failed(row: Row, when: str, e: Exception):
    first = (str(e).strip().splitlines() or [""])[0]
    row.failed, row.note = True, f"FAILED {when}: {type(e).__name__}: {first}"


def run_cases(cases, quick=False, peaks=(None, None)) -> list:
    """Check every case, then time the ones that passed: consecutive CPU cases
    of one thread pool interleaved, GPU cases with CUDA events one by one.
    A case whose check fails, or that raises (a CUDA error, a compile error),
    is never timed: its row says FAILED and why, and the rest still run."""
    min_time = 0.15 if quick else 0.6
    rows = [_new_row(c) for c in cases]
    live = []
    for case, row in zip(cases, rows):
        if case.fn is None:
            continue
        try:
            if case.check is not None:
                case.check()
        except Exception as e:
            _failed(row, "its check", e)
            continue
        live.append((case, row))
    groups = []
    for case, row in live:
        key = (_pool(case), case.case)
        if groups and groups[-1][0] == key and key[0] != "gpu":
            groups[-1][1].append((case, row))
        else:
            groups.append((key, [(case, row)]))
    for (pool, _), members in groups:
        for attempt in (0, 1):             # a noisy group is timed once more, for twice as long
            time.sleep(SETTLE_S / 3 if quick else SETTLE_S)
            try:
                _time_group(pool, members, min_time * (1 + attempt), peaks)
            except Exception as e:
                for _, row in members:
                    _failed(row, "while timed", e)
                break
            noisy = [row for _, row in members if row.rel_spread is not None and row.rel_spread > NOISY]
            if not noisy or attempt or members[0][0].group == "e2e":
                for row in noisy:
                    row.noisy = True
                break
            for _, row in members:
                row.reruns += 1
    return rows


def pinned(case: Case):
    """The context a case is timed in: the BLAS threads it is pinned to (gpubp's own choice off), or none."""
    return blas.pinned(case.threads) if case.pin_threads and case.threads is not None else None


def _time_group(pool, members, min_time, peaks):
    """Time one group: a GPU case by CUDA events, CPU cases of one pool interleaved (paired rounds)."""
    if pool == "gpu":
        (case, row), = members
        _finish_row(row, case, *time_gpu(case.fn, min_time), peaks, timed_with=None)
        return
    rounds = 3 if members[0][0].group == "e2e" else None
    timed = time_cpu_interleaved([c.fn for c, _ in members], min_time, rounds, [pinned(c) for c, _ in members])
    group_id = next(_rounds)
    for (case, row), (samples, n) in zip(members, timed):
        _finish_row(row, case, samples, n, peaks, timed_with=group_id)
