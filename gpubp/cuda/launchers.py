"""One thin launcher per kernel of ``kernels/*.cu``: validate, pick the dtype's
kernel, own the launch shape, launch.

Every launcher takes a :class:`gpubp.cuda.sources.KernelSet` first and arrays that
live on its device (NumPy arrays for the emulated device, CuPy arrays for a
GPU); it uses only ``.dtype``, ``.shape``, ``.size`` and ``.flags.c_contiguous``
of them, so the same code serves both.  Raw kernels ignore strides and check
nothing, so the launchers check instead: every array float32 or float64, all
of one dtype, C-contiguous, of the right shape; scalars finite.  Each error
names the argument and the fix.  ``naive=True`` runs the plain version of a
kernel kept beside the fast one (same results).

Shapes (batch-first, row-major): B = batch, I = inputs, O = outputs of a layer.
Memory: no output may share memory with another argument, except where said
(in place): z in bias_sigmoid; delta may be g or a in sigmoid_delta, a or y in
output_delta, a in gemm_sigmoid_delta.  Each launcher refuses any other overlap, partial or whole.

    gather_rows(ks, X, Y, idx, x, y)             X: n×I, Y: n×O, idx: B int64, x: B×I, y: B×O
    bias_sigmoid(ks, z, b)                       z: B×O (in place), b: O
    gemm_bias_sigmoid(ks, a_prev, W, b, a)       a_prev: B×I, W: I×O, b: O, a: B×O
    gemm_sigmoid_delta(ks, delta_next, W_next, a, delta)  delta_next: B×O, W_next: I×O, a, delta: B×I
    sigmoid_delta(ks, g, a, delta)               all one shape; delta may be g
    output_delta(ks, kernel, a, y, delta, loss)  a, y, delta: B×O; loss: B or None;
                                                 kernel: a cost's kernel, "output_delta_mse" / "_ce"
    weight_grad(ks, a_prev, delta, dW, db)       a_prev: B×I, delta: B×O, dW: I×O, db: O or None
    weight_grad_sgd(ks, a_prev, delta, W, b, vW, vb)  W, vW: I×O, b, vb: O (W, b, vW, vb in place)

The math of each is at the top of its ``.cu`` file and in ``gpubp.reference``
(the NumPy version with the same signature minus ``ks`` and ``naive``).
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import archs, sources
from .sources import KernelSet

#: threads per block of the 1-D kernels (elementwise kernels, the naive row kernels)
BLOCK = 256
#: block of the naive weight gradients: 32 threads along o (a warp reads one row of delta), 8 along i
NAIVE_WG_BLOCK = (32, 8)
#: the kernels index with 32-bit ints: every index they compute must stay at most INT_MAX, which
#: each launcher checks for its kernel's largest index (the array's size plus the last block's
#: overshoot past its end: BLOCK*EPT elements for the fast elementwise kernels); grid.y <= 65535
INT_MAX = 2**31 - 1
GRID_Y_MAX = 65535

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


# -- one record per launcher: what its kernels cost ------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """What a kernel may use at the launcher's block size: registers per thread and static shared
    memory per block, and the occupancy that buys on sm_80 (the target in numbers; gpubp.cuda.nvrtc
    checks every arch against it)."""
    threads: int            # threads per block the launcher uses
    registers: int          # per thread
    smem: int               # static shared memory per block (bytes)
    occupancy_sm80: float

    @property
    def target(self) -> str:
        return f"{self.occupancy_sm80:.1%}".replace(".0%", "%")


@dataclass(frozen=True)
class Spec:
    """One launcher's record, read by the bench (bytes and flops per call) and by NVRTC (budgets),
    so that neither keeps a list of kernel names of its own.

    ``kernels`` are the base names it launches (each compiled as ``_f32``, ``_f64`` and their
    ``_naive`` twins).  ``napkin(B, I, O, itemsize)`` gives (bytes the fused kernel must move, bytes
    the unfused array expressions ``unfused`` move with every temporary written and read back,
    flops); ``budgets(tunables, itemsize)`` gives the (fast, naive) Budget at the default launch."""
    family: str
    kernels: tuple
    math: str
    unfused: str
    napkin: Callable[[int, int, int, int], tuple]
    budgets: Callable[[dict, int], tuple]


def _elementwise(tunables, size):
    """Bound by memory: every warp slot wanted (32 registers f32 = 100 %; f64 needs more for the
    same EPT loads in flight: 40 = 75 % on sm_80)."""
    b = Budget(BLOCK, 32, 0, 1.0) if size == 4 else Budget(BLOCK, 40, 0, 0.75)
    return b, b


def _row_reduction(tunables, size):
    """The fast output_delta: ROW_THREADS × ROWS_PER_BLOCK threads and one partial per thread in shared memory."""
    fast, naive = _elementwise(tunables, size)
    threads = tunables["ROW_THREADS"] * tunables["ROWS_PER_BLOCK"]
    return Budget(threads, fast.registers, threads * size, fast.occupancy_sm80), naive


def gemm_threads(tunables, size) -> int:
    """Threads of a fast GEMM block (gemm_mainloop.cuh's GEMM_THREADS): (TILE / TM)², TM = MICRO in f32 and
    MICRO / 2 in f64 (a double takes two registers)."""
    micro = tunables["MICRO"] if size == 4 else max(1, tunables["MICRO"] // 2)
    return (tunables["TILE"] // micro) ** 2


def _gemm(tunables, size):
    """The main loop of gemm_mainloop.cuh keeps an 8×8 (f32) or 4×4 (f64) accumulator tile a thread, its two
    fragments and a chunk's staged loads, as its __launch_bounds__ say: <= 168 registers in f32 (6 blocks of 64
    threads per SM, 19 % on sm_80, at worst: the kernels take 116-155; capped at 128 the f32 tile spilled on
    sm_100 and sm_120), <= 128 in f64 (2 blocks of 256, 25 %), the price of 16 FFMA per shared load; two
    stages of both operands in shared memory (one under PIPELINE 1), each row padded by 16 bytes.  The naive
    kernel (one dot product per thread) may take 64 (50 % on sm_80)."""
    tile, bk, vec = tunables["TILE"], tunables["BK"], 16 // size
    pad = vec if tile % vec == 0 and bk % vec == 0 else 1
    stages = 1 if tunables["PIPELINE"] == 1 else 2
    smem = stages * 2 * bk * (tile + pad) * size + 16   # + split_fixup's flag, padded to the stages' 16-byte alignment
    if size == 4:        # 6 blocks of 64 threads at 168: 12 warps of 64 on sm_80
        fast = Budget(gemm_threads(tunables, size), 168, smem, 0.1875)
    else:
        fast = Budget(gemm_threads(tunables, size), 128, smem, 0.25)
    return fast, Budget(NAIVE_WG_BLOCK[0] * NAIVE_WG_BLOCK[1], 64, 0, 0.5)


def _gather(tunables, size):
    """Bound by memory like the elementwise kernels: 32 × ROWS threads (one warp a row)."""
    fast, naive = _elementwise(tunables, size)
    return Budget(32 * tunables["ROWS"], fast.registers, 0, fast.occupancy_sm80), naive


SPECS = {
    "gather_rows": Spec(
        "gather", ("gather_rows",), "x = X[idx], y = Y[idx]", "xp.take(X, idx, axis=0); xp.take(Y, idx, axis=0)",
        lambda B, I, O, s: (2 * B * (I + O) * s + 8 * B, 2 * B * (I + O) * s + 16 * B, 0), _gather),
    "bias_sigmoid": Spec(
        "forward", ("bias_sigmoid",), "z = sigmoid(z + b)", "1 / (1 + exp(-(z + b)))",
        lambda B, I, O, s: ((2 * B * O + O) * s, (10 * B * O + O) * s, 4 * B * O), _elementwise),
    "gemm_bias_sigmoid": Spec(
        "forward_gemm", ("gemm_bias_sigmoid",), "a = sigmoid(a_prev W + b)", "a_prev @ W; bias_sigmoid(z, b)",
        lambda B, I, O, s: ((B * I + I * O + O + B * O) * s, (B * I + I * O + O + 3 * B * O) * s,
                            2 * B * I * O + 4 * B * O), _gemm),
    "gemm_sigmoid_delta": Spec(
        "backward_gemm", ("gemm_sigmoid_delta",), "delta = (delta_next W_next^T) * a * (1 - a)",
        "delta_next @ W_next.T; sigmoid_delta(g, a, g)",
        lambda B, I, O, s: ((B * O + I * O + 2 * B * I) * s, (B * O + I * O + 4 * B * I) * s,
                            2 * B * I * O + 3 * B * I), _gemm),
    "sigmoid_delta": Spec(
        "delta", ("sigmoid_delta",), "delta = g*a*(1-a)", "g * a * (1 - a)",
        lambda B, I, O, s: (3 * B * O * s, 8 * B * O * s, 3 * B * O), _elementwise),
    "output_delta": Spec(
        "delta", ("output_delta_mse", "output_delta_ce"), "delta = (a-y)*a*(1-a), loss = sum_O (a-y)^2 / 2",
        "(a - y) * a * (1 - a); 0.5 * ((a - y) ** 2).sum(1)",
        lambda B, I, O, s: ((3 * B * O + B) * s, (19 * B * O + B) * s, 7 * B * O), _row_reduction),
    "weight_grad": Spec(
        "weight_grad", ("weight_grad",), "dW = a_prev^T delta, db = sum_B delta", "a_prev.T @ delta; delta.sum(0)",
        lambda B, I, O, s: ((B * I + B * O + I * O + O) * s, (B * I + 2 * B * O + I * O + O) * s,
                            2 * B * I * O + B * O), _gemm),
    "weight_grad_sgd": Spec(
        "weight_grad", ("weight_grad_sgd",), "W -= eta a_prev^T delta, b -= eta sum_B delta",
        "dW = a_prev.T @ delta; W -= eta * dW; b -= eta * delta.sum(0)",
        lambda B, I, O, s: ((B * I + B * O + 2 * I * O + 2 * O) * s, (B * I + 2 * B * O + 6 * I * O + 6 * O) * s,
                            2 * B * I * O + B * O + 2 * I * O + 2 * O), _gemm),
    # the whole step of the one-layer net [I, O] (the napkin of any net: fused_step_napkin)
    "fused_step": Spec(
        "fused_step", ("fused_step_mse", "fused_step_ce"), "one SGD step: gather, forward, BP1, BP2, BP3+4, update",
        "the per-kernel step (gather_rows, gemm_bias_sigmoid, output_delta, gemm_sigmoid_delta, weight_grad_sgd)",
        lambda B, I, O, s: fused_step_napkin((B, B, I, O), s), lambda tunables, size: _fused(tunables, size)),
}


#: the layers fused_step.cu takes (its MAX_LAYERS: an argument slot each for W_l, b_l, vW_l, vb_l)
FUSED_MAX_LAYERS = 4
#: fused_step.cu's static shared memory (its tables of layer pointers and widths: NVRTC reports 432 B on every
#: arch) rounded up: what the per-block ceiling must hold beside the dynamic part
FUSED_STATIC_SMEM = 512


def _fused(tunables, size):
    """One block for the whole step: its occupancy does not matter (one block a launch), only that
    FUSED_THREADS threads fit with their registers and no register spills (64 a thread at most: at 256
    threads that is 50 % on sm_80, as the GEMMs' budget)."""
    b = Budget(tunables["FUSED_THREADS"], 64, FUSED_STATIC_SMEM, 0.5)
    return b, b


def fused_step_smem(sizes, B: int, itemsize: int, keep_weights: bool = False, momentum: bool = False) -> int:
    """Bytes of dynamic shared memory fused_step.cu takes (its header's formula): a_l and δ_l of the
    batch, 2·B·(n_1 + … + n_L) elements, and with ``keep_weights`` a copy of every W_l and b_l (and of
    vW_l, vb_l with momentum)."""
    acts = 2 * B * sum(sizes[1:])
    weights = sum((sizes[l - 1] + 1) * sizes[l] for l in range(1, len(sizes))) * (2 if momentum else 1)
    return (acts + (weights if keep_weights else 0)) * itemsize


def fused_step_napkin(dims, itemsize: int) -> tuple:
    """(bytes the fused launch must move, bytes the per-kernel step moves, FLOPs) of ``dims`` = (B, total,
    n_0, …, n_L): K = ceil(total / B) steps, each reading its rows of X and Y, and reading and writing every
    W_l and b_l (the momentum buffers are not counted); FLOPs: forward, BP2, BP3 and the update."""
    B, total, *sizes = dims
    K = -(-total // B)
    params = sum((sizes[l - 1] + 1) * sizes[l] for l in range(1, len(sizes)))
    macs = sum(sizes[l - 1] * sizes[l] for l in range(1, len(sizes)))
    back = sum(sizes[l - 1] * sizes[l] for l in range(2, len(sizes)))            # BP2 (layer 1 has no δ_0)
    flops = K * (2 * B * macs + 2 * B * back + 2 * B * macs + 3 * params)
    fused = total * (sizes[0] + sizes[-1]) * itemsize + total * 8 + 2 * params * itemsize
    acts = sum(sizes[1:]) * B
    per_kernel = fused + K * (6 * acts + 2 * params) * itemsize        # activations and deltas through memory
    return fused, per_kernel, flops


def ceil_div(n: int, d: int) -> int:
    return -(-n // d)


# -- validation ----------------------------------------------------------------------------------

def _dtype_of(kernel: str, **arrays) -> np.dtype:
    """The one dtype of the given arrays (None entries are skipped), after checking each is a
    C-contiguous float32/float64 array."""
    dtype = first = None
    for name, x in arrays.items():
        if x is None:
            continue
        if not all(hasattr(x, attr) for attr in ("dtype", "shape", "size", "flags")):
            raise TypeError(f"{kernel}: {name} must be a NumPy or CuPy array, got {type(x).__name__}")
        dt = np.dtype(x.dtype)
        if dt not in _SUFFIX:
            raise TypeError(f"{kernel}: {name} has dtype {dt}; the kernels take float32 or float64 "
                            f"(convert with {name}.astype(np.float32))")
        if dtype is None:
            dtype, first = dt, name
        elif dt != dtype:
            raise TypeError(f"{kernel}: {name} is {dt} but {first} is {dtype}; all arrays must have one dtype "
                            f"(convert with {name}.astype({first}.dtype))")
        if not x.flags.c_contiguous:
            raise ValueError(f"{kernel}: {name} is not C-contiguous (a transposed or sliced view?) and raw kernels "
                             f"ignore strides; pass xp.ascontiguousarray({name})")
    return dtype


def _check_shape(kernel: str, name: str, x, expected: tuple, meaning: str) -> None:
    if x is not None and tuple(x.shape) != tuple(expected):
        raise ValueError(f"{kernel}: {name} has shape {tuple(x.shape)} but must be {tuple(expected)} ({meaning})")


def _check_2d(kernel: str, name: str, x, dims: str) -> tuple[int, int]:
    if len(x.shape) != 2:
        raise ValueError(f"{kernel}: {name} must be 2-D {dims} (batch-first), got shape {tuple(x.shape)}")
    return tuple(int(s) for s in x.shape)


def _check_sizes(kernel: str, overshoot: int, **sizes: int) -> None:
    """The kernel's largest index, each size plus ``overshoot`` (how far past the end its last block
    computes an index before the bounds test), fits its 32-bit ints."""
    for what, n in sizes.items():
        if n + overshoot > INT_MAX:
            raise ValueError(f"{kernel}: {what} = {n} is too large for the kernels' 32-bit indices: the last block "
                             f"computes indices up to {what} + {overshoot}, past 2^31 - 1 (at most "
                             f"{INT_MAX - overshoot} with these tunables); split the batch")


def _vec(ks: KernelSet, x, ld: int) -> np.int32:
    """1 if the fast GEMMs may read ``x`` (rows of ``ld`` elements) 16 bytes at a time: its address on the
    device 16-byte aligned (``ks.aligned16``) and ``ld`` a multiple of 16 / itemsize, so that every row
    starts aligned; else 0 (element-wise loads)."""
    return np.int32(1 if ks.aligned16(x) and ld % (16 // x.dtype.itemsize) == 0 else 0)


#: split-K (gemm_mainloop.cuh): a GEMM launch gets at least min(SMs, FLOPs / SPLIT_FLOPS) blocks, its
#: output tiles times a split of the reduction; while the SMs have room, no block walks more than
#: KCHUNKS_PER_BLOCK chunks of BK (a long walk of one block is a launch's latency: the tiny net's first
#: layer is 1 tile with K = 784, 196 chunks); each split at least MIN_SPLIT_CHUNKS chunks long.  Modeled
#: choices (gpubp plan shows them); a tuner on the device is to replace them.
SPLIT_FLOPS = 2e6
KCHUNKS_PER_BLOCK = 16
MIN_SPLIT_CHUNKS = 2
MAX_SPLITS = 16


def gemm_splits(ks: KernelSet, family: str, M: int, N: int, K: int) -> int:
    """How many blocks share each output tile's reduction (gridDim.z) for the launch of an M×N output with
    reduction K: enough for min(SMs, 2·M·N·K / SPLIT_FLOPS) blocks (the large net's 1024-wide layers: 128
    tiles on 132 SMs, split in 2), and, where the SMs leave room, enough that no block walks more than
    KCHUNKS_PER_BLOCK chunks (the tiny net's first layer: 13 blocks of 64 k); 1 where the tiles suffice."""
    tile, bk = ks.param(family, "TILE"), ks.param(family, "BK")
    tiles = ceil_div(M, tile) * ceil_div(N, tile)
    if tiles == 0:
        return 1
    for_flops = ceil_div(min(ks.sms, math.ceil(2.0 * M * N * K / SPLIT_FLOPS)), tiles)
    for_latency = min(ceil_div(K, KCHUNKS_PER_BLOCK * bk), max(1, ks.sms // tiles))
    return max(1, min(max(for_flops, for_latency), K // (MIN_SPLIT_CHUNKS * bk), MAX_SPLITS))


#: the tiles of an f32 GEMM launch whose output is at most NARROW_EDGE rows or columns wide, where the default
#: 64-wide tile would compute mostly padding (a 10-wide output layer: 16 % of a 64×64 tile's FMAs are
#: useful, 31 % of a 32×32 one's); the 32 × 32 tile of 4×4 micro-tiles still issues 8 FFMA a shared load.
#: f64 keeps its tiles (at MICRO 4 its micro-tile would be 2×2: 2 DFMA a shared load).  Modeled, like
#: split-K: a table from gpubp tune replaces both.
NARROW_TILES = {"TILE": 32, "MICRO": 4}
NARROW_EDGE = 32


def gemm_tiles(ks: KernelSet, family: str, dtype, M: int, N: int) -> dict:
    """The tunables of the GEMM launch of an M×N output where nothing was tuned: NARROW_TILES for a narrow f32
    output on the default tiles, else the KernelSet's own (tiles a user chose are kept)."""
    narrow = min(M, N) <= NARROW_EDGE and np.dtype(dtype) == np.float32 and not ks.defines
    return dict(NARROW_TILES) if narrow and ks.param(family, "TILE") > NARROW_TILES["TILE"] else dict(ks.defines)


def _split_args(k: str, ks: KernelSet, family: str, dtype, M: int, N: int, splits: int, partial, counters,
                naive: bool) -> tuple[tuple, dict]:
    """(the fast kernel's (splits, partial, counters) arguments, the workspace arrays for the aliasing check),
    checked: partial splits×M×N of the dtype, counters an int32 a tile (zero between launches: each launch's
    last block per tile resets its own).  The naive kernels take none."""
    if naive:
        return (), {}
    if isinstance(splits, bool) or not isinstance(splits, numbers.Integral) or splits < 1:
        raise ValueError(f"{k}: splits must be a positive int, got {splits!r}")
    if splits == 1:
        return (np.int32(1), ks.NULL, ks.NULL), {}
    tile = ks.param(family, "TILE")
    tiles = ceil_div(M, tile) * ceil_div(N, tile)
    if partial is None or counters is None:
        raise ValueError(f"{k}: splits = {splits} needs its workspace: partial ({splits}, {M}, {N}) and counters "
                         f"({tiles},) int32 zeros")
    _dtype_of(k, partial=partial)
    _check_shape(k, "partial", partial, (splits, M, N), "splits × the output")
    if np.dtype(partial.dtype) != dtype:
        raise TypeError(f"{k}: partial is {partial.dtype} but the output is {dtype}")
    if np.dtype(counters.dtype) != np.int32 or not counters.flags.c_contiguous:
        raise TypeError(f"{k}: counters must be a C-contiguous int32 array, got {counters.dtype}")
    _check_shape(k, "counters", counters, (tiles,), "an int a tile of the output")
    _check_sizes(k, 0, **{"splits*M*N": splits * M * N})
    return (np.int32(splits), partial, counters), {"partial": partial, "counters": counters}


def _check_reduction(ks: KernelSet, kernel: str, family: str, naive: bool, what: str, n: int) -> None:
    """A tiled kernel's reduction loop ``for (int k0 = 0; k0 < n; k0 += BK)`` ends with k0 up to
    n − 1 + BK in a 32-bit int: n + BK must fit it (a signed overflow, then an out-of-bounds access,
    otherwise).  The naive kernels step by 1."""
    if naive:
        return
    bk = ks.param(family, "BK")
    if n + bk > INT_MAX:
        raise ValueError(f"{kernel}: {what} = {n} is too large for the kernel's 32-bit reduction loop: it steps "
                         f"{what} in chunks of BK = {bk}, up to {what} + BK, past 2^31 - 1 (at most {INT_MAX - bk} "
                         f"with these tunables); split the layer")


def _span(x) -> tuple[int, int]:
    """[first byte, last byte + 1) of a C-contiguous NumPy or CuPy array."""
    start = sources.data_address(x)
    return start, start + x.nbytes


def _check_row_index(k: str, idx, non_empty: bool = False) -> int:
    """idx as the gather kernels read it: a C-contiguous 1-D int64 array of row numbers (not empty, if
    ``non_empty``); its length."""
    if not all(hasattr(idx, attr) for attr in ("dtype", "shape", "flags")) or np.dtype(idx.dtype) != np.int64 \
            or len(idx.shape) != 1 or not idx.flags.c_contiguous or (non_empty and idx.shape[0] == 0):
        raise TypeError(f"{k}: idx must be a {'non-empty ' if non_empty else ''}C-contiguous 1-D int64 array of "
                        f"row numbers, got {type(idx).__name__} {getattr(idx, 'dtype', '')} "
                        f"{getattr(idx, 'shape', '')}")
    return int(idx.shape[0])


def _check_aliasing(kernel: str, outputs: tuple, in_place: dict, **arrays) -> None:
    """Refuse arguments that share memory, except an output that *is* one of the inputs it may
    overwrite (``in_place[output]``; the kernel loads that input before it stores).  Inputs may
    share memory with each other (they are only read)."""
    live = {n: _span(x) for n, x in arrays.items() if x is not None and x.size}
    end = -1                            # the usual case, no overlap at all: one sweep over the sorted spans
    for start, stop in sorted(live.values()):
        if start < end:
            break
        end = max(end, stop)
    else:
        return
    names = list(live)
    for i, p in enumerate(names):
        for q in names[i + 1:]:
            if p not in outputs and q not in outputs:
                continue
            (s1, e1), (s2, e2) = live[p], live[q]
            if not (s1 < e2 and s2 < e1):
                continue
            same = (s1, e1) == (s2, e2)
            if same and (q in in_place.get(p, ()) or p in in_place.get(q, ())):
                continue
            rule = "; ".join(f"{o} may be {' or '.join(ins)} itself (in place)" for o, ins in in_place.items())
            raise ValueError(f"{kernel}: {q} {'is' if same else 'overlaps'} {p} in memory; "
                             f"{rule + ', and ' if rule else ''}no other two arguments may share memory: "
                             f"pass a separate array (xp.empty_like)")


def _scalar(kernel: str, name: str, value, dtype: np.dtype):
    """``value`` as the C type of ``dtype`` (np.float32 / np.float64), finite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{kernel}: {name} must be a real number, got {value!r}")
    with np.errstate(over="ignore"):  # overflow is reported below, with the argument's name
        cast = dtype.type(value)
    if not math.isfinite(float(value)) or not np.isfinite(cast):
        raise ValueError(f"{kernel}: {name} = {value!r} is not finite in {dtype}; pass a finite number")
    return cast


class Launch:
    """One validated kernel launch, ready to run: ``launch()`` makes the raw call and checks nothing.

    A launcher validates its arguments once and returns one of these (``prepare_<kernel>``); the
    eager launcher (``<kernel>``) runs it at once.  A prepared training step (``gpubp.cuda.prepared``)
    keeps them and replays them: the arrays in ``args`` are bound (kept alive) and their shapes,
    dtypes and aliasing were checked when it was made.  ``spec`` names the launcher's record in
    ``SPECS``, ``dims`` its (B, I, O) and ``defines`` the tunables its kernel was compiled with (its
    KernelSet's: a tuned or narrow tile set), for the napkin math and resources of ``gpubp plan``."""

    __slots__ = ("name", "fn", "grid", "block", "args", "shared_mem", "spec", "dims", "defines")

    def __init__(self, name, fn, grid, block, args, shared_mem=0, spec=None, dims=None, defines=None):
        self.name, self.fn, self.grid, self.block, self.args = name, fn, grid, block, args
        self.shared_mem, self.spec, self.dims, self.defines = shared_mem, spec, dims, dict(defines or {})

    def __call__(self) -> None:
        self.fn(self.grid, self.block, self.args, shared_mem=self.shared_mem)

    def __repr__(self):
        return f"<Launch {self.name} grid={self.grid} block={self.block}>"


def _launch(ks: KernelSet, kernel: str, naive: bool, dtype: np.dtype, grid: tuple, block: tuple, args: tuple,
            spec: str | None = None, dims: tuple | None = None) -> Launch:
    """The Launch of ``kernel`` (its ``_naive`` twin if asked) in ``dtype``: the raw function, ``None``
    arguments already the device's NULL."""
    name = f"{kernel}{'_naive' if naive else ''}_{_SUFFIX[dtype]}"
    null = ks.NULL
    return Launch(name, ks.raw_function(name), grid, block, tuple(null if a is None else a for a in args), 0,
                  spec or kernel, dims, ks.defines)


def _eager(prepare):
    """The launcher that validates and launches at once, from its ``prepare_`` twin."""
    def launcher(*args, **kwargs) -> None:
        launch = prepare(*args, **kwargs)
        if launch is not None:
            launch()
    launcher.__name__ = prepare.__name__.removeprefix("prepare_")
    launcher.__qualname__ = launcher.__name__
    launcher.__doc__ = prepare.__doc__
    launcher.__wrapped__ = prepare
    return launcher


# -- gather.cu -----------------------------------------------------------------------------------

def prepare_gather_rows(ks: KernelSet, X, Y, idx, x, y, *, naive: bool = False) -> Launch | None:
    """x = X[idx], y = Y[idx] in one launch; X: n×I, Y: n×O, idx: B int64 row numbers in [0, n)
    (a number outside it gives NaN rows, never an access outside X or Y), x: B×I, y: B×O.
    No argument may share memory with another (the inputs only with each other)."""
    k = "gather_rows"
    dtype = _dtype_of(k, X=X, Y=Y, x=x, y=y)
    n, I = _check_2d(k, "X", X, "(n, I)")
    n_Y, O = _check_2d(k, "Y", Y, "(n, O)")
    if n_Y != n:
        raise ValueError(f"{k}: Y has {n_Y} rows but X has {n}; X (n, I) and Y (n, O) must hold the same samples")
    B = _check_row_index(k, idx)
    _check_shape(k, "x", x, (B, I), "(B, I): a row per index, X's columns")
    _check_shape(k, "y", y, (B, O), "(B, O): a row per index, Y's columns")
    if B == 0:
        return None
    _check_aliasing(k, ("x", "y"), {}, X=X, Y=Y, idx=idx, x=x, y=y)
    _check_sizes(k, 0, **{"n*I": n * I, "n*O": n * O, "B*I": B * I, "B*O": B * O})
    if naive:
        _check_sizes(k, BLOCK, **{"B*(I+O)": B * (I + O)})
        grid, block = (ceil_div(B * (I + O), BLOCK),), (BLOCK,)
    else:
        rows = ks.param("gather", "ROWS")
        grid, block = (ceil_div(B, rows),), (32, rows)
    return _launch(ks, k, naive, dtype, grid, block,
                   (X, Y, idx, x, y, np.int32(B), np.int32(I), np.int32(O), np.int32(n)), dims=(B, I, O))


# -- forward.cu ----------------------------------------------------------------------------------

def prepare_bias_sigmoid(ks: KernelSet, z, b, *, naive: bool = False) -> Launch | None:
    """z ← σ(z + b) in place; z: B×O, b: O."""
    k = "bias_sigmoid"
    dtype = _dtype_of(k, z=z, b=b)
    B, O = _check_2d(k, "z", z, "(B, O)")
    _check_shape(k, "b", b, (O,), "one bias per column of z")
    if z.size == 0:
        return
    _check_aliasing(k, ("z",), {}, z=z, b=b)
    ept = 1 if naive else ks.param("forward", "EPT")
    _check_sizes(k, BLOCK * ept, **{"B*O": B * O})
    return _launch(ks, k, naive, dtype, (ceil_div(B * O, BLOCK * ept),), (BLOCK,), (z, b, np.int32(B), np.int32(O)),
                   dims=(B, 0, O))


# -- forward_gemm.cu, backward_gemm.cu ----------------------------------------------------------

def _tile_grid(ks: KernelSet, k: str, family: str, naive: bool, rows: tuple, cols: tuple, itemsize: int,
               at_least_one_row: bool = False, splits: int = 1) -> tuple[tuple, tuple]:
    """(grid, block) covering a rows × cols output, x along the columns: the naive kernels' NAIVE_WG_BLOCK
    threads, or one TILE×TILE tile per block of gemm_threads(…) threads (1-D) of the fast ones.  ``rows``,
    ``cols`` are (name, size) pairs, for the messages; ``at_least_one_row`` keeps grid.y >= 1 (the weight
    gradients compute the bias gradient in the first row of blocks even when I == 0)."""
    (row_name, n_rows), (col_name, n_cols) = rows, cols
    if naive:
        bx, by = NAIVE_WG_BLOCK
        grid, block, overshoot = (ceil_div(n_cols, bx), ceil_div(n_rows, by)), (bx, by), max(bx, by)
    else:
        tile = ks.param(family, "TILE")
        threads = gemm_threads({"TILE": tile, "MICRO": ks.param(family, "MICRO")}, itemsize)
        grid, block, overshoot = (ceil_div(n_cols, tile), ceil_div(n_rows, tile), splits), (threads,), tile
    if at_least_one_row:
        grid = (grid[0], max(1, grid[1]), *grid[2:])
    if grid[1] > GRID_Y_MAX:
        raise ValueError(f"{k}: {row_name} = {n_rows} needs {grid[1]} blocks along grid.y, more than {GRID_Y_MAX}"
                         + ("; split the batch" if row_name == "B" else ""))
    _check_sizes(k, overshoot, **{row_name: n_rows, col_name: n_cols})   # a block's indices, before its bounds test
    return grid, block


def prepare_gemm_bias_sigmoid(ks: KernelSet, a_prev, W, b, a, *, naive: bool = False, splits: int = 1,
                              partial=None, counters=None) -> Launch | None:
    """a = σ(a_prev W + b) in one kernel (z never written); a_prev: B×I, W: I×O, b: O, a: B×O.
    a shares memory with nothing.  ``splits`` > 1 (the fast kernel): split-K over I, with its workspace
    partial (splits, B, O) and counters (an int32 zero a tile) (``gemm_splits`` picks splits)."""
    k = "gemm_bias_sigmoid"
    dtype = _dtype_of(k, a_prev=a_prev, W=W, b=b, a=a)
    B, I = _check_2d(k, "a_prev", a_prev, "(B, I)")
    I_W, O = _check_2d(k, "W", W, "(I, O)")
    if I_W != I:
        raise ValueError(f"{k}: W has {I_W} rows but a_prev has {I} columns; W must be (I, O), I = a_prev's columns")
    _check_shape(k, "b", b, (O,), "one bias per column of W")
    _check_shape(k, "a", a, (B, O), "(B, O): a row per row of a_prev, a column per column of W")
    if B == 0 or O == 0:
        return
    split, workspace = _split_args(k, ks, "forward_gemm", dtype, B, O, splits, partial, counters, naive)
    _check_aliasing(k, ("a", "partial", "counters"), {}, a_prev=a_prev, W=W, b=b, a=a, **workspace)
    _check_sizes(k, 0, **{"B*I": B * I, "I*O": I * O, "B*O": B * O})
    _check_reduction(ks, k, "forward_gemm", naive, "I", I)
    grid, block = _tile_grid(ks, k, "forward_gemm", naive, ("B", B), ("O", O), dtype.itemsize,
                             splits=1 if naive else splits)
    args = (a_prev, W, b, a, np.int32(B), np.int32(I), np.int32(O))
    if not naive:
        args += (_vec(ks, a_prev, I), _vec(ks, W, O), *split)
    return _launch(ks, k, naive, dtype, grid, block, args, dims=(B, I, O))


def prepare_gemm_sigmoid_delta(ks: KernelSet, delta_next, W_next, a, delta, *, naive: bool = False, splits: int = 1,
                               partial=None, counters=None) -> Launch | None:
    """delta = (delta_next W_nextᵀ) ⊙ a ⊙ (1 − a) in one kernel (BP2; W_nextᵀ read in place);
    delta_next: B×O, W_next: I×O, a, delta: B×I.  delta may be a (in place).  ``splits`` > 1: split-K
    over O, with partial (splits, B, I) and counters, as gemm_bias_sigmoid."""
    k = "gemm_sigmoid_delta"
    dtype = _dtype_of(k, delta_next=delta_next, W_next=W_next, a=a, delta=delta)
    B, O = _check_2d(k, "delta_next", delta_next, "(B, O)")
    I, O_W = _check_2d(k, "W_next", W_next, "(I, O)")
    if O_W != O:
        raise ValueError(f"{k}: W_next has {O_W} columns but delta_next has {O}; W_next must be (I, O), "
                         f"O = delta_next's columns")
    _check_shape(k, "a", a, (B, I), "(B, I): a row per row of delta_next, a column per row of W_next")
    _check_shape(k, "delta", delta, (B, I), "the shape of a")
    if B == 0 or I == 0:
        return
    split, workspace = _split_args(k, ks, "backward_gemm", dtype, B, I, splits, partial, counters, naive)
    _check_aliasing(k, ("delta", "partial", "counters"), {"delta": ("a",)}, delta_next=delta_next, W_next=W_next,
                    a=a, delta=delta, **workspace)
    _check_sizes(k, 0, **{"B*I": B * I, "I*O": I * O, "B*O": B * O})
    _check_reduction(ks, k, "backward_gemm", naive, "O", O)
    grid, block = _tile_grid(ks, k, "backward_gemm", naive, ("B", B), ("I", I), dtype.itemsize,
                             splits=1 if naive else splits)
    args = (delta_next, W_next, a, delta, np.int32(B), np.int32(I), np.int32(O))
    if not naive:
        args += (_vec(ks, delta_next, O), _vec(ks, W_next, O), *split)
    return _launch(ks, k, naive, dtype, grid, block, args, dims=(B, I, O))


# -- delta.cu ------------------------------------------------------------------------------------

def prepare_sigmoid_delta(ks: KernelSet, g, a, delta, *, naive: bool = False) -> Launch | None:
    """delta = g ⊙ a ⊙ (1 − a), elementwise; g, a, delta of one shape; delta may be g or a (in place)."""
    k = "sigmoid_delta"
    dtype = _dtype_of(k, g=g, a=a, delta=delta)
    _check_shape(k, "g", g, a.shape, "the shape of a")
    _check_shape(k, "delta", delta, a.shape, "the shape of a")
    n = int(a.size)
    if n == 0:
        return
    _check_aliasing(k, ("delta",), {"delta": ("g", "a")}, g=g, a=a, delta=delta)
    ept = 1 if naive else ks.param("delta", "EPT")
    _check_sizes(k, BLOCK * ept, n=n)
    return _launch(ks, k, naive, dtype, (ceil_div(n, BLOCK * ept),), (BLOCK,), (g, a, delta, np.int32(n)),
                   dims=(n, 0, 1))


@functools.lru_cache(maxsize=None)
def output_delta_kernels() -> tuple[str, ...]:
    """The output-layer kernels of delta.cu, one per cost (``"output_delta_mse"``, ``"output_delta_ce"``):
    what a cost class names as its ``kernel`` (read from the source once; every output_delta launch asks)."""
    return tuple(n.removesuffix("_f32") for n in sources.kernel_names("delta")
                 if n.startswith("output_delta_") and n.endswith("_f32") and "_naive" not in n)


def prepare_output_delta(ks: KernelSet, kernel: str, a, y, delta, loss=None, *, naive: bool = False) -> Launch | None:
    """delta = δ_L(a, y) of the cost whose kernel is ``kernel`` ("output_delta_mse": (a − y) a (1 − a);
    "output_delta_ce": a − y) and, if ``loss`` is given, loss[r] = the per-sample cost;
    a, y, delta: B×O, loss: B.  delta may be a or y (in place); loss shares memory with nothing."""
    k = "output_delta"
    if kernel not in output_delta_kernels():
        raise ValueError(f"{k}: kernel must be one of {', '.join(map(repr, output_delta_kernels()))} "
                         f"(a cost's .kernel), got {kernel!r}")
    dtype = _dtype_of(k, a=a, y=y, delta=delta, loss=loss)
    B, O = _check_2d(k, "a", a, "(B, O)")
    _check_shape(k, "y", y, (B, O), "the shape of a: one target per output")
    _check_shape(k, "delta", delta, (B, O), "the shape of a")
    _check_shape(k, "loss", loss, (B,), "one loss per row of a")
    if B == 0:
        return
    _check_aliasing(k, ("delta", "loss"), {"delta": ("a", "y")}, a=a, y=y, delta=delta, loss=loss)
    _check_sizes(k, 0, **{"B*O": B * O})
    _check_sizes(k, BLOCK, B=B)            # the naive kernel's row index, before its bounds test
    args = (a, y, delta, loss, np.int32(B), np.int32(O))
    if naive:
        grid, block = (ceil_div(B, BLOCK),), (BLOCK,)
    else:
        rows = ks.param("delta", "ROWS_PER_BLOCK")
        grid, block = (ceil_div(B, rows),), (ks.param("delta", "ROW_THREADS"), rows)
    return _launch(ks, kernel, naive, dtype, grid, block, args, spec=k, dims=(B, 0, O))


# -- weight_grad.cu ------------------------------------------------------------------------------

def _weight_grad_shapes(k: str, a_prev, delta, W, W_name: str, b, b_name: str) -> tuple[int, int, int]:
    B, I = _check_2d(k, "a_prev", a_prev, "(B, I)")
    B_delta, O = _check_2d(k, "delta", delta, "(B, O)")
    if B_delta != B:
        raise ValueError(f"{k}: delta has {B_delta} rows but a_prev has {B}; a_prev (B, I) and delta (B, O) "
                         f"must cover the same batch")
    _check_shape(k, W_name, W, (I, O), "(I, O): inputs of a_prev by outputs of delta")
    _check_shape(k, b_name, b, (O,), "one bias per column of delta")
    _check_sizes(k, 0, **{"B*I": B * I, "B*O": B * O, "I*O": I * O})
    return B, I, O


def prepare_weight_grad(ks: KernelSet, a_prev, delta, dW, db=None, *, scale=1.0, naive: bool = False, splits: int = 1,
                        partial=None, counters=None) -> Launch | None:
    """dW = scale · a_prevᵀ delta and, if ``db`` is given, db = scale · Σ_r delta[r, :] (both overwritten);
    a_prev: B×I, delta: B×O, dW: I×O, db: O.  ``splits`` > 1: split-K over the batch, with partial
    (splits, I, O) and counters, as gemm_bias_sigmoid."""
    k = "weight_grad"
    dtype = _dtype_of(k, a_prev=a_prev, delta=delta, dW=dW, db=db)
    B, I, O = _weight_grad_shapes(k, a_prev, delta, dW, "dW", db, "db")
    scale = _scalar(k, "scale", scale, dtype)
    if O == 0:
        return
    split, workspace = _split_args(k, ks, "weight_grad", dtype, I, O, splits, partial, counters, naive)
    _check_aliasing(k, ("dW", "db", "partial", "counters"), {}, a_prev=a_prev, delta=delta, dW=dW, db=db,
                    **workspace)
    _check_reduction(ks, k, "weight_grad", naive, "B", B)
    grid, block = _tile_grid(ks, k, "weight_grad", naive, ("I", I), ("O", O), dtype.itemsize, at_least_one_row=True,
                             splits=1 if naive else splits)
    args = (a_prev, delta, dW, db, np.int32(B), np.int32(I), np.int32(O), scale)
    if not naive:
        args += (_vec(ks, a_prev, I), _vec(ks, delta, O), *split)
    return _launch(ks, k, naive, dtype, grid, block, args, dims=(B, I, O))


def prepare_weight_grad_sgd(ks: KernelSet, a_prev, delta, W, b, vW=None, vb=None, *, scale=1.0, eta, lmbda=0.0,
                            mu=0.0, naive: bool = False, splits: int = 1, partial=None,
                            counters=None) -> Launch | None:
    """One SGD step with L2 decay and momentum from the weight gradient of one layer, fused (dW is never
    stored):  g = scale · a_prevᵀ delta + lmbda · W,  vW ← mu · vW + g,  W ← W − eta · vW  and for the
    bias gb = scale · Σ_r delta[r, :] (no decay),  vb ← mu · vb + gb,  b ← b − eta · vb.  Without buffers
    (vW = vb = None, only allowed when mu == 0) W ← W − eta · g,  b ← b − eta · gb.
    a_prev: B×I, delta: B×O, W, vW: I×O, b, vb: O; W, b, vW, vb are updated in place.  ``splits`` > 1:
    split-K over the batch (the update applied once, by the last block of each tile), as weight_grad."""
    k = "weight_grad_sgd"
    dtype = _dtype_of(k, a_prev=a_prev, delta=delta, W=W, b=b, vW=vW, vb=vb)
    if b is None:
        raise TypeError(f"{k}: b is required (the layer's biases, shape (O,))")
    if (vW is None) != (vb is None):
        raise ValueError(f"{k}: pass the momentum buffers vW and vb together (got only "
                         f"{'vW' if vb is None else 'vb'})")
    B, I, O = _weight_grad_shapes(k, a_prev, delta, W, "W", b, "b")
    _check_shape(k, "vW", vW, (I, O), "the shape of W")
    _check_shape(k, "vb", vb, (O,), "the shape of b")
    scalars = tuple(_scalar(k, name, v, dtype)
                    for name, v in (("scale", scale), ("eta", eta), ("lmbda", lmbda), ("mu", mu)))
    if mu != 0 and vW is None:
        raise ValueError(f"{k}: mu = {mu!r} needs momentum buffers; pass vW and vb "
                         f"(zeros of W's and b's shapes before the first step)")
    if O == 0:
        return
    split, workspace = _split_args(k, ks, "weight_grad", dtype, I, O, splits, partial, counters, naive)
    _check_aliasing(k, ("W", "b", "vW", "vb", "partial", "counters"), {}, a_prev=a_prev, delta=delta, W=W, b=b,
                    vW=vW, vb=vb, **workspace)
    _check_reduction(ks, k, "weight_grad", naive, "B", B)
    grid, block = _tile_grid(ks, k, "weight_grad", naive, ("I", I), ("O", O), dtype.itemsize, at_least_one_row=True,
                             splits=1 if naive else splits)
    args = (a_prev, delta, W, b, vW, vb, np.int32(B), np.int32(I), np.int32(O), *scalars)
    if not naive:
        args += (_vec(ks, a_prev, I), _vec(ks, delta, O), *split)
    return _launch(ks, k, naive, dtype, grid, block, args, dims=(B, I, O))


# -- the eager launchers: validate and launch at once (what tests and one-off calls use) -----------------

gather_rows = _eager(prepare_gather_rows)
bias_sigmoid = _eager(prepare_bias_sigmoid)
gemm_bias_sigmoid = _eager(prepare_gemm_bias_sigmoid)
gemm_sigmoid_delta = _eager(prepare_gemm_sigmoid_delta)
sigmoid_delta = _eager(prepare_sigmoid_delta)
output_delta = _eager(prepare_output_delta)
weight_grad = _eager(prepare_weight_grad)
weight_grad_sgd = _eager(prepare_weight_grad_sgd)


# -- fused_step.cu ------------------------------------------------------------------------------

def prepare_fused_step(ks: KernelSet, kernel: str, X, Y, idx, W, b, vW, vb, loss, *, B: int, eta, lmbda=0.0,
                       mu=0.0, keep_weights: bool | None = None) -> Launch:
    """K = ceil(len(idx) / B) SGD steps in one launch, the k-th on rows idx[k·B : (k+1)·B] (the last batch
    may be short): ``kernel`` "fused_step_mse" or "fused_step_ce"; X: n×n_0, Y: n×n_L, idx: int64 row
    numbers (a number outside [0, n) reads nothing: NaN rows), W, b, vW, vb: lists indexed by layer as
    ``MLP.W`` (index 0 None; vW, vb None without momentum), updated in place; loss: K·B per-sample costs
    (entries past a short last batch untouched), or None.  ``keep_weights``: W (and vW) in shared memory
    for the launch; None chooses it when it fits and the launch runs more than one step.  No output may
    share memory with another argument."""
    k = "fused_step"
    if kernel not in ("fused_step_mse", "fused_step_ce"):
        raise ValueError(f"{k}: kernel must be 'fused_step_mse' or 'fused_step_ce', got {kernel!r}")
    L = len(W) - 1
    if not 1 <= L <= FUSED_MAX_LAYERS:
        raise ValueError(f"{k}: {L} layers; the fused step takes 1 to {FUSED_MAX_LAYERS} (fused_step.cu's "
                         f"MAX_LAYERS); use the per-kernel step")
    momentum = vW is not None
    for name, lst in (("b", b), ("vW", vW), ("vb", vb)):
        if lst is not None and len(lst) != L + 1:
            raise ValueError(f"{k}: {name} has {len(lst) - 1} layers but W has {L}; index both by layer (0 unused)")
    if momentum != (vb is not None):
        raise ValueError(f"{k}: vW and vb go together (momentum buffers for weights and biases)")
    if mu and not momentum:
        raise ValueError(f"{k}: mu = {mu} needs momentum buffers; pass vW and vb")
    layer_arrays = {}
    for l in range(1, L + 1):
        layer_arrays.update({f"W{l}": W[l], f"b{l}": b[l]})
        if momentum:
            layer_arrays.update({f"vW{l}": vW[l], f"vb{l}": vb[l]})
    dtype = _dtype_of(k, X=X, Y=Y, loss=loss, **layer_arrays)
    n, n0 = _check_2d(k, "X", X, "(n, n_0)")
    n_Y, nL = _check_2d(k, "Y", Y, "(n, n_L)")
    if n_Y != n:
        raise ValueError(f"{k}: Y has {n_Y} rows but X has {n}; X and Y must hold the same samples")
    sizes = [n0]
    for l in range(1, L + 1):
        rows_W, O = _check_2d(k, f"W{l}", W[l], "(n_{l-1}, n_l)")
        if rows_W != sizes[-1]:
            raise ValueError(f"{k}: W{l} has {rows_W} rows but layer {l - 1} has {sizes[-1]} units "
                             f"({'X' if l == 1 else f'W{l - 1}'}'s columns)")
        sizes.append(O)
        _check_shape(k, f"b{l}", b[l], (O,), f"one bias per column of W{l}")
        if momentum:
            _check_shape(k, f"vW{l}", vW[l], (rows_W, O), f"W{l}'s shape")
            _check_shape(k, f"vb{l}", vb[l], (O,), f"b{l}'s shape")
    if sizes[-1] != nL:
        raise ValueError(f"{k}: Y has {nL} columns but the output layer has {sizes[-1]} units")
    total = _check_row_index(k, idx, non_empty=True)
    if isinstance(B, bool) or not isinstance(B, numbers.Integral) or B < 1:
        raise ValueError(f"{k}: B (rows a step) must be a positive int, got {B!r}")
    steps = ceil_div(total, int(B))
    if loss is not None and loss.size != steps * B:
        raise ValueError(f"{k}: loss has {loss.size} elements but {steps} steps of {B} rows write {steps * B} "
                         f"(a row of B costs a step)")
    outputs = tuple(layer_arrays) + ("loss",)
    _check_aliasing(k, outputs, {}, X=X, Y=Y, idx=idx, loss=loss, **layer_arrays)
    _check_sizes(k, 0, **{"n*n_0": n * n0, "n*n_L": n * nL, "total": total},
                 **{f"B*n_{l}": B * sizes[l] for l in range(1, L + 1)},
                 **{f"n_{l - 1}*n_{l}": sizes[l - 1] * sizes[l] for l in range(1, L + 1)})
    itemsize = dtype.itemsize
    limit = ks.smem_per_block_optin - FUSED_STATIC_SMEM
    need = fused_step_smem(sizes, B, itemsize)
    if need > limit:
        raise ValueError(f"{k}: a batch of {B} rows of {sizes} needs {need} B of shared memory for its "
                         f"activations and deltas (2·B·(n_1 + … + n_L) elements), more than the {limit} B a block "
                         f"has on this device ({ks.arch}); use the per-kernel step or a smaller batch")
    with_weights = fused_step_smem(sizes, B, itemsize, keep_weights=True, momentum=momentum)
    if keep_weights is None:          # a copy in and out pays when several steps read it
        keep_weights = with_weights <= limit and steps > 1
    elif keep_weights and with_weights > limit:
        raise ValueError(f"{k}: keeping the weights{' and momentum' if momentum else ''} of {sizes} in shared "
                         f"memory takes {with_weights} B, more than the {limit} B a block has on this device "
                         f"({ks.arch})")
    smem = with_weights if keep_weights else need
    scalars = tuple(_scalar(k, name, v, dtype) for name, v in (("eta", eta), ("lmbda", lmbda), ("mu", mu)))
    name = f"{kernel}_{_SUFFIX[dtype]}"
    fn = ks.raw_function(name)
    if FUSED_STATIC_SMEM + smem > archs.SMEM_PER_BLOCK_DEFAULT and \
            getattr(fn, "max_dynamic_shared_size_bytes", 0) < smem:
        fn.max_dynamic_shared_size_bytes = smem          # CUDA's opt-in above 48 KiB (cuFuncSetAttribute)
    null = ks.NULL
    per_layer = []
    for l in range(1, FUSED_MAX_LAYERS + 1):
        if l <= L:
            per_layer += [W[l], b[l], vW[l] if momentum else null, vb[l] if momentum else null]
        else:
            per_layer += [null] * 4
    widths = [np.int32(sizes[l]) if l <= L else np.int32(0) for l in range(FUSED_MAX_LAYERS + 1)]
    args = (X, Y, idx, null if loss is None else loss, np.int32(n), np.int32(total), np.int32(B), np.int32(L),
            *widths, *per_layer, *scalars, np.int32(1 if keep_weights else 0))
    return Launch(name, fn, (1,), (ks.param("fused_step", "FUSED_THREADS"),), args, smem, "fused_step",
                  (int(B), total, *sizes), ks.defines)


fused_step = _eager(prepare_fused_step)
