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

import numpy as np

from .cuda import tuner, tuning
from .cuda.backend import KernelBackend
from .validation import InputError


def gemm_shapes(sizes, B) -> list[tuple[str, int, int, int]]:
    """(family, M, N, K) of every GEMM launch of one training step of ``sizes`` at batch B, in step order."""
    L = len(sizes) - 1
    shapes = [("forward_gemm", B, sizes[l], sizes[l - 1]) for l in range(1, L + 1)]
    shapes += [("backward_gemm", B, sizes[l - 1], sizes[l]) for l in range(L, 1, -1)]
    shapes += [("weight_grad", sizes[l - 1], sizes[l], B) for l in range(L, 0, -1)]
    return shapes


def _timing(bk, timer, device, cuda) -> tuple:
    """(timer, device name, CUDA version) to tune with on ``bk``: CUDA events and the current device on the
    cupy backend; the ones given elsewhere (a fake timer: the tests).  The emulated device is refused."""
    if not isinstance(bk, KernelBackend):
        raise InputError(f"gpubp tune times gpubp's CUDA kernels; backend {bk.name!r} has none (use backend='cupy')")
    if bk.name == "emulated":
        raise InputError(f"gpubp tune is refused on the emulated device: {tuner.EMULATED_TIMES}; run it on a "
                         f"machine with an NVIDIA GPU (backend='cupy')")
    if bk.name == "cupy":
        here, here_cuda = tuner.current_device()
        return timer or tuner.cuda_event_timer(), device or here, int(cuda or here_cuda)
    if timer is None or device is None or cuda is None:
        raise InputError(f"gpubp tune on the {bk.name} backend needs a timer, a device name and a CUDA version")
    return timer, device, int(cuda)


def tune(bk, sizes, B, dtype=np.float32, *, timer=None, table=None, device=None, cuda=None,
         log=lambda line: None) -> tuning.Table:
    """Time every candidate of every GEMM shape of a step of ``sizes`` at batch ``B`` on the kernel backend
    ``bk`` and return the table with the winners (``table``'s entries kept for other shapes).  On the cupy
    backend the timer is CUDA events and the device is the current one; elsewhere both must be given (a
    fake timer: the tests).  The emulated device is refused."""
    timer, device, cuda = _timing(bk, timer, device, cuda)
    table = table or tuning.Table(device, cuda)
    rng = np.random.default_rng(0)
    seen = set()
    for family, M, N, K in gemm_shapes(sizes, B):
        if (family, M, N, K) in seen or min(M, N) == 0:
            continue
        seen.add((family, M, N, K))
        t0 = time.perf_counter()
        entry = tuner.tune_shape(bk, family, dtype, M, N, K, timer, rng)
        table.put(family, dtype, M, N, K, entry)
        log(f"{family:13} M={M:<5} N={N:<5} K={K:<5} {tuning.tiles_text(entry.tiles):<29} splits={entry.splits:<2} {entry.us:8.2f} us"
            + (f"  cuBLAS {entry.cublas_us:8.2f} us ({'own' if entry.own_wins else 'cuBLAS'} wins)"
               if entry.cublas_us is not None else "")
            + f"  [{time.perf_counter() - t0:.1f}s]")
    return table


def tune_and_keep(bk, sizes, B, dtype=np.float32, *, timer=None, device=None, cuda=None,
                  log=lambda line: None) -> tuple:
    """``gpubp tune``'s job: time the shapes of a step of ``sizes`` at batch ``B`` into the device's table
    (the shapes of other nets already in it stay) and save it.  Interrupted (Ctrl-C, or SIGTERM as the
    command takes it), the shapes timed so far are saved all the same.  Returns (the table's path, the
    number of shapes timed, what interrupted it or None)."""
    timer, device, cuda = _timing(bk, timer, device, cuda)
    table = tuning.for_device(device, cuda) or tuning.Table(device, cuda)
    timed = []
    try:
        tune(bk, sizes, B, dtype, timer=timer, table=table, device=device, cuda=cuda,
             log=lambda line: (timed.append(line), log(line)))
        interrupted = None
    except KeyboardInterrupt as e:
        interrupted = str(e) or "Ctrl-C"
    return table.save(), len(timed), interrupted
