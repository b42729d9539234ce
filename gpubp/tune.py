"""``gpubp tune``: time gpubp's GEMM kernels on the device they run on and keep the fastest tile set and
split-K for each launch shape of a net's training step, with cuBLAS's time for the same products
(``gemm="auto"`` picks by them).  The measurements go to a table per (device, CUDA version, gpubp
version) that the kernel backends read (gpubp.cuda.tuning).

A step's GEMM launches (B = batch, n_l = widths, l = 1 … L):
    forward_gemm   M = B, N = n_l, K = n_{l−1}            a_l = σ(a_{l−1} W_l + b_l)
    backward_gemm  M = B, N = n_{l−1}, K = n_l (l >= 2)    δ_{l−1} = (δ_l W_lᵀ) ⊙ σ'
    weight_grad    M = n_{l−1}, N = n_l, K = B             the update of W_l and b_l

Each is timed for every tile set of ``tuning.TILE_SETS`` and every split of 1, 2, 4, 8, 16 and the
default heuristic's (those a shape allows), with CUDA events around repeated launches; the products a
cuBLAS step would make (the forward and BP2 GEMMs with their epilogue kernel) are timed the same way.
On the emulated device tuning is refused: it runs the kernels on the CPU, whose times say nothing of a
GPU's.  The timer is a parameter, so the tuner's logic is tested on the CPU with a fake one.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .cuda import launchers, tuning
from .cuda.backend import KernelBackend
from .validation import InputError

SPLITS = (1, 2, 4, 8, 16)


def gemm_shapes(sizes, B) -> list[tuple[str, int, int, int]]:
    """(family, M, N, K) of every GEMM launch of one training step of ``sizes`` at batch B, in step order."""
    L = len(sizes) - 1
    shapes = [("forward_gemm", B, sizes[l], sizes[l - 1]) for l in range(1, L + 1)]
    shapes += [("backward_gemm", B, sizes[l - 1], sizes[l]) for l in range(L, 1, -1)]
    shapes += [("weight_grad", sizes[l - 1], sizes[l], B) for l in range(L, 0, -1)]
    return shapes


def candidates(ks, family, M, N, K) -> list[tuple[dict, int]]:
    """(tiles, splits) to time for one shape: every tile set, with the splits of SPLITS that leave each block at
    least MIN_SPLIT_CHUNKS chunks and the default heuristic's."""
    out = []
    for tiles in tuning.TILE_SETS:
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


def _operands(bk, family, M, N, K, dtype, rng):
    """Arrays of one launch's shape on the backend's device, as the step holds them."""
    put = lambda shape: bk.asarray(rng.uniform(-0.5, 0.5, shape), dtype)      # noqa: E731
    if family == "forward_gemm":                     # a_prev (B, I), W (I, O), b (O), a (B, O)
        return dict(a_prev=put((M, K)), W=put((K, N)), b=put((N,)), a=put((M, N)))
    if family == "backward_gemm":                    # delta_next (B, O), W_next (I, O), a and delta (B, I)
        return dict(delta_next=put((M, K)), W_next=put((N, K)), a=put((M, N)), delta=put((M, N)))
    return dict(a_prev=put((K, M)), delta=put((K, N)), W=put((M, N)), b=put((N,)))   # weight_grad_sgd


def _own(bk, ks, family, ops, M, N, splits, dtype):
    """The launch of gpubp's kernel for one candidate, ready to call."""
    split = bk._split_workspace(ks, family, M, N, splits, dtype)
    if family == "forward_gemm":
        return launchers.prepare_gemm_bias_sigmoid(ks, ops["a_prev"], ops["W"], ops["b"], ops["a"], **split)
    if family == "backward_gemm":
        return launchers.prepare_gemm_sigmoid_delta(ks, ops["delta_next"], ops["W_next"], ops["a"], ops["delta"],
                                                    **split)
    return launchers.prepare_weight_grad_sgd(ks, ops["a_prev"], ops["delta"], ops["W"], ops["b"], scale=1.0,
                                             eta=0.0, **split)


def _cublas(bk, family, ops):
    """cuBLAS's product with its epilogue kernel, as a cuBLAS step makes it (None: not a cuBLAS product)."""
    array_ops = super(KernelBackend, bk)
    if family == "forward_gemm":
        return lambda: array_ops.feedforward(ops["a_prev"], ops["W"], ops["b"], ops["a"])
    if family == "backward_gemm":
        return lambda: array_ops.backprop(ops["delta_next"], ops["W_next"], ops["a"], ops["delta"])
    return None


def tune(bk, sizes, B, dtype=np.float32, *, timer=None, table=None, device=None, cuda=None,
         log=lambda line: None) -> tuning.Table:
    """Time every candidate of every GEMM shape of a step of ``sizes`` at batch ``B`` on the kernel backend
    ``bk`` and return the table with the winners (``table``'s entries kept for other shapes).  On the cupy
    backend the timer is CUDA events and the device is the current one; elsewhere both must be given (a
    fake timer: the tests).  The emulated device is refused."""
    if not isinstance(bk, KernelBackend):
        raise InputError(f"gpubp tune times gpubp's CUDA kernels; backend {bk.name!r} has none (use backend='cupy')")
    if bk.name == "emulated":
        raise InputError("gpubp tune is refused on the emulated device: it runs the kernels on the CPU, whose "
                         "times say nothing of a GPU's; run it on a machine with an NVIDIA GPU (backend='cupy')")
    if bk.name == "cupy":
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        device = device or (props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]))
        cuda = cuda or cupy.cuda.runtime.runtimeGetVersion()
        timer = timer or cuda_event_timer()
    elif timer is None or device is None or cuda is None:
        raise InputError(f"gpubp tune on the {bk.name} backend needs a timer, a device name and a CUDA version")
    table = table or tuning.Table(device, int(cuda))
    rng = np.random.default_rng(0)
    seen = set()
    for family, M, N, K in gemm_shapes(sizes, B):
        if (family, M, N, K) in seen or min(M, N) == 0:
            continue
        seen.add((family, M, N, K))
        ops = _operands(bk, family, M, N, K, dtype, rng)
        best = None
        t0 = time.perf_counter()
        for tiles, splits in candidates(bk.ks, family, M, N, K):
            ks = bk.ks.variant(tiles)
            launch = _own(bk, ks, family, ops, M, N, splits, dtype)
            t = timer(launch, {"family": family, "M": M, "N": N, "K": K, "tiles": tiles, "splits": splits,
                               "impl": "own"})
            if best is None or t < best[0]:
                best = (t, tiles, splits)
        cublas = _cublas(bk, family, ops)
        t_cublas = None if cublas is None else timer(cublas, {"family": family, "M": M, "N": N, "K": K,
                                                              "impl": "cublas"})
        entry = tuning.Entry(best[1], best[2], best[0] * 1e6, None if t_cublas is None else t_cublas * 1e6)
        table.put(family, dtype, M, N, K, entry)
        tiles = " ".join(f"{k}={v}" for k, v in best[1].items())
        log(f"{family:13} M={M:<5} N={N:<5} K={K:<5} {tiles:<29} splits={best[2]:<2} {entry.us:8.2f} us" + (f"  cuBLAS {entry.cublas_us:8.2f} us "
                                                          f"({'own' if entry.own_wins else 'cuBLAS'} wins)"
                                                          if entry.cublas_us is not None else "")
            + f"  [{time.perf_counter() - t0:.1f}s]")
    return table
