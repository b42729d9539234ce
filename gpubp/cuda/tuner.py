"""Time one GEMM launch shape's candidates on the device and keep the winner: what ``gpubp tune`` does for
every shape of a step, and what the kernel backends do for a shape on its first launch when asked to
(``backend_options={"tune": "lazy"}``: :class:`LazyTuner`).

A candidate is a tile set of ``tuning.TILE_SETS`` with a split of SPLITS (those that leave each block at
least ``launchers.MIN_SPLIT_CHUNKS`` chunks) or the default heuristic's; each is launched on operands of
the shape (a_prev and W, or δ_next and W_next, or a_prev and δ for the weight-gradient update, uniform in
[−0.5, 0.5)) and timed by ``timer(fn, what) -> seconds a call``: CUDA events around repeated launches on
a GPU (:func:`cuda_event_timer`), a fake one in the tests.  cuBLAS's product with its epilogue kernel, as
a cuBLAS step makes it, is timed the same way for the forward and BP2 shapes (``gemm="auto"`` picks by
it).
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable

import numpy as np

from ..device import gpu_name
from ..numpy_backend import ArrayBackend
from . import launchers, tuning

SPLITS = (1, 2, 4, 8, 16)
#: why no tuning runs on the emulated device
EMULATED_TIMES = "it runs the kernels on the CPU, whose times say nothing of a GPU's"

log = logging.getLogger("gpubp.tune")


def current_device() -> tuple[str, int]:
    """(name, CUDA runtime version) of the current CUDA device: a tuning table's key."""
    import cupy
    name = gpu_name(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id))
    return name, int(cupy.cuda.runtime.runtimeGetVersion())


def candidates(ks, family, M, N, K) -> list[tuple[dict, int]]:
    """(tiles, splits) to time for one shape: every tile set (but the register-staged schedule below sm_80,
    where it is the default's), with the splits of SPLITS that leave each block at least MIN_SPLIT_CHUNKS
    chunks and the default heuristic's."""
    out = []
    for tiles in tuning.TILE_SETS:
        if tiles.get("PIPELINE") == 2 and int(ks.arch.removeprefix("sm_")) < 80:
            continue                     # below sm_80 the default schedule is this one (no cp.async)
        variant = ks.variant(tiles)
        bk = variant.param(family, "BK")
        splits = {s for s in SPLITS if s == 1 or K >= s * launchers.MIN_SPLIT_CHUNKS * bk}
        splits.add(launchers.gemm_splits(variant, family, M, N, K))
        out += [(dict(tiles), s) for s in sorted(splits)]
    return out


def cuda_event_timer(repeat=20) -> Callable:
    """timer(fn, what) -> seconds a call of fn, from CUDA events around ``repeat`` calls after one warm-up."""
    import cupy

    def timer(fn, what):
        fn()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(repeat):
            fn()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / 1e3 / repeat
    return timer


def operands(bk, family, M, N, K, dtype, rng) -> dict:
    """Arrays of one launch's shape on the backend's device, as the step holds them."""
    put = lambda shape: bk.asarray(rng.uniform(-0.5, 0.5, shape), dtype)      # noqa: E731
    if family == "forward_gemm":                     # a_prev (B, I), W (I, O), b (O), a (B, O)
        return dict(a_prev=put((M, K)), W=put((K, N)), b=put((N,)), a=put((M, N)))
    if family == "backward_gemm":                    # delta_next (B, O), W_next (I, O), a and delta (B, I)
        return dict(delta_next=put((M, K)), W_next=put((N, K)), a=put((M, N)), delta=put((M, N)))
    return dict(a_prev=put((K, M)), delta=put((K, N)), W=put((M, N)), b=put((N,)))   # weight_grad_sgd


def own_launch(bk, ks, family, ops, M, N, splits, dtype):
    """The launch of gpubp's kernel for one candidate, ready to call."""
    split = bk._split_workspace(ks, family, M, N, splits, dtype)
    if family == "forward_gemm":
        return launchers.prepare_gemm_bias_sigmoid(ks, ops["a_prev"], ops["W"], ops["b"], ops["a"], **split)
    if family == "backward_gemm":
        return launchers.prepare_gemm_sigmoid_delta(ks, ops["delta_next"], ops["W_next"], ops["a"], ops["delta"],
                                                    **split)
    return launchers.prepare_weight_grad_sgd(ks, ops["a_prev"], ops["delta"], ops["W"], ops["b"], scale=1.0,
                                             eta=0.0, **split)


def cublas_call(bk, family, ops):
    """cuBLAS's product with its epilogue kernel, as a cuBLAS step makes it (None: not a cuBLAS product)."""
    if family == "forward_gemm":
        return lambda: ArrayBackend.feedforward(bk, ops["a_prev"], ops["W"], ops["b"], ops["a"])
    if family == "backward_gemm":
        return lambda: ArrayBackend.backprop(bk, ops["delta_next"], ops["W_next"], ops["a"], ops["delta"])
    return None


def tune_shape(bk, family, dtype, M, N, K, timer, rng=None) -> tuning.Entry:
    """Every candidate of one launch shape and cuBLAS's product timed on the kernel backend ``bk``: the
    fastest tile set and split, its time and cuBLAS's (µs)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    ops = operands(bk, family, M, N, K, dtype, rng)
    best = None
    for tiles, splits in candidates(bk.ks, family, M, N, K):
        launch = own_launch(bk, bk.ks.variant(tiles), family, ops, M, N, splits, dtype)
        t = timer(launch, {"family": family, "M": M, "N": N, "K": K, "tiles": tiles, "splits": splits, "impl": "own"})
        if best is None or t < best[0]:
            best = (t, tiles, splits)
    cublas = cublas_call(bk, family, ops)
    t_cublas = None if cublas is None else timer(cublas, {"family": family, "M": M, "N": N, "K": K, "impl": "cublas"})
    return tuning.Entry(best[1], best[2], best[0] * 1e6, None if t_cublas is None else t_cublas * 1e6)


class LazyTuner:
    """``backend_options={"tune": "lazy"}``: the first launch of a GEMM shape that ``table`` has no entry for
    times that shape's candidates (:func:`tune_shape`) before it runs, puts the winner in the table and saves
    it (``save``: the table's file under ``tuning.cache_dir()``), so that later launches, and later processes
    on the same device, CUDA and gpubp, take it.  A shape is timed once a process, even if saving fails.

    The first shape may take seconds (each tile set's kernels compile once, then CuPy's cache has them), so
    each timing says what it does through ``say`` (a line to stderr by default; the user asked for it) and
    the ``gpubp.tune`` logger."""

    def __init__(self, table: tuning.Table, timer: Callable, *, save: bool = True, capturing=lambda: False,
                 say: Callable[[str], None] | None = None):
        self.table = table
        self.timer = timer
        self.save = save
        self.capturing = capturing       # a CUDA graph is being captured: time nothing (its launches would be kept)
        self.say = say if say is not None else (lambda line: print(line, file=sys.stderr, flush=True))
        self.timed = []                  # (family, dtype name, M, N, K) timed by this tuner, in order

    def __call__(self, bk, family, dtype, M, N, K) -> tuning.Entry | None:
        if self.capturing():
            return None
        t0 = time.perf_counter()
        entry = tune_shape(bk, family, dtype, M, N, K, self.timer)
        self.table.put(family, dtype, M, N, K, entry)
        self.timed.append((family, np.dtype(dtype).name, M, N, K))
        cublas = "" if entry.cublas_us is None else f" (cuBLAS {entry.cublas_us:.2f} us)"
        where = ""
        if self.save:
            try:
                where = f"; kept in {self.table.save()}"
            except OSError as e:         # the measurement still serves this process
                where = f"; not kept ({e}): the next process times it again"
                log.warning("could not keep the tuning table (%s): this process uses it, the next times again", e)
        line = (f"gpubp tune='lazy': {family} {np.dtype(dtype).name} M={M} N={N} K={K} timed on its first launch: "
                f"{tuning.tiles_text(entry.tiles)} splits={entry.splits} {entry.us:.2f} us{cublas} [{time.perf_counter() - t0:.1f} s]{where}")
        log.info(line)
        self.say(line)
        return entry
