"""Every kernel of kernels/*.cu, naive and fast, f32 and f64, against the float64
NumPy reference (``gpubp.reference``) on shapes that straddle every block and
tile edge.  ``tests/test_kernels.py`` and ``gpubp check`` run these same checks:
on the emulated device (NumPy arrays, the .cu source compiled for the CPU) and
on a GPU (inputs made with NumPy, moved with ``cupy.asarray``).

Outputs are poisoned with NaN before every launch, so an element a kernel never
writes fails.  Each check raises AssertionError (from ``assert_close``, naming
the shape and the worst element) at the first mismatch, else returns how many
shapes it ran.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from .. import reference
from . import describe
from ..cuda import launchers, sources, tuning
from ..numpy_backend import to_numpy
from ..testing import assert_close

DTYPES = (np.float32, np.float64)

# (B, O) of the elementwise and row kernels.  Edges: 256 threads per block, EPT = 4 -> 1024
# elements per fast block; output_delta: 8 rows x 32 columns per block.
ROW_SHAPES = [
    (1, 1), (1, 7), (7, 1), (1, 257), (257, 1), (7, 31), (31, 7), (127, 3), (3, 127),
    (63, 64), (64, 65), (65, 63), (8, 32), (9, 33), (7, 31),
    (3, 341), (4, 256), (5, 205),        # 1023, 1024, 1025 elements
    (31, 33), (32, 32), (41, 25),        # 1023, 1024, 1025 elements
    (257, 10), (100, 257),
]
# (B, I, O) of the weight gradients.  Edges: TILE = 64 (I and O), BK = 16 (B).
WG_SHAPES = [
    (1, 1, 1), (1, 7, 31), (7, 1, 1), (1, 1, 7), (31, 127, 7), (127, 7, 31), (7, 31, 127),
    (257, 3, 5), (3, 257, 5), (5, 3, 257),
    (63, 64, 65), (64, 65, 63), (65, 63, 64),
    (15, 16, 17), (16, 17, 15), (17, 15, 16),
    (129, 128, 127), (2, 129, 1), (33, 1, 129),
    (100, 30, 10), (10, 257, 30), (257, 65, 63),
]


class Device(NamedTuple):
    name: str
    ks: sources.KernelSet
    put: Callable                    # NumPy array -> an array on the device (a copy)
    kernels: Callable                # defines -> KernelSet


def emulated_device() -> Device:
    return Device("emulated", sources.emulated_kernels(), lambda x: np.array(x, copy=True), sources.emulated_kernels)


def cupy_device() -> Device:
    """The current CUDA device; raises DeviceUnavailable (with the reason) without one."""
    ks = sources.cupy_kernels()
    import cupy
    return Device("cupy", ks, cupy.asarray, sources.cupy_kernels)


def nan_like(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


# -- gather.cu ----------------------------------------------------------------------------------

def gather_rows(dev: Device, dtype, naive: bool) -> int:
    """x = X[idx], y = Y[idx] on the weight-gradient shapes read as (B, I, O), from n = B + 3 rows with
    repeats, in any order; then a row number outside [0, n) (-1 and n) gives NaN rows, nothing else."""
    rng = np.random.default_rng(12)
    for B, I, O in WG_SHAPES:
        n = B + 3
        X, Y = rng.normal(size=(n, I)).astype(dtype), rng.uniform(size=(n, O)).astype(dtype)
        idx = rng.integers(0, n, B).astype(np.int64)
        expected_x, expected_y = np.empty((B, I)), np.empty((B, O))
        reference.gather_rows(X, Y, idx, expected_x, expected_y)
        x, y = dev.put(nan_like((B, I), dtype)), dev.put(nan_like((B, O), dtype))
        launchers.gather_rows(dev.ks, dev.put(X), dev.put(Y), dev.put(idx), x, y, naive=naive)
        assert_close(x, expected_x, dtype, what=f"gather_rows x {(B, I, O)}")
        assert_close(y, expected_y, dtype, what=f"gather_rows y {(B, I, O)}")
        bad = idx.copy()
        bad[:: 2] = np.where(np.arange(len(bad[::2])) % 2, n, -1)        # every other row out of range
        x, y = dev.put(np.full((B, I), 7, dtype)), dev.put(np.full((B, O), 7, dtype))   # finite poison
        launchers.gather_rows(dev.ks, dev.put(X), dev.put(Y), dev.put(bad), x, y, naive=naive)
        reference.gather_rows(X, Y, bad, expected_x, expected_y)
        for name, got, want in (("x", x, expected_x), ("y", y, expected_y)):
            got = to_numpy(got).astype(np.float64)
            if not np.array_equal(np.isnan(got), np.isnan(want)) or not np.array_equal(got[~np.isnan(want)],
                                                                                       want[~np.isnan(want)]):
                raise AssertionError(f"gather_rows {name} {(B, I, O)} with rows out of range: expected NaN rows "
                                     f"exactly where the index is outside [0, {n})")
    return len(WG_SHAPES)


# -- forward.cu ---------------------------------------------------------------------------------

def bias_sigmoid(dev: Device, dtype, naive: bool) -> int:
    rng = np.random.default_rng(1)
    for B, O in ROW_SHAPES:
        z = rng.normal(0.0, 4.0, (B, O)).astype(dtype)
        z.flat[::5] = rng.choice([-1000.0, -90.0, 90.0, 1000.0], size=z.flat[::5].shape)  # σ saturates, no overflow
        b = rng.normal(size=O).astype(dtype)
        expected = z.astype(np.float64)
        reference.bias_sigmoid(expected, b)
        z_dev = dev.put(z)
        launchers.bias_sigmoid(dev.ks, z_dev, dev.put(b), naive=naive)
        assert_close(z_dev, expected, dtype, what=f"bias_sigmoid z {(B, O)}")
    return len(ROW_SHAPES)


# -- forward_gemm.cu, backward_gemm.cu ------------------------------------------------------------

def split_workspace(dev: Device, family: str, M: int, N: int, splits: int, dtype, naive: bool) -> dict:
    """The split-K arguments of a fast GEMM launch (none for the naive kernels or splits = 1): partial
    NaN-poisoned, counters zero (the launch must leave them zero)."""
    if naive or splits == 1:
        return {}
    tile = dev.ks.param(family, "TILE")
    tiles = launchers.ceil_div(M, tile) * launchers.ceil_div(N, tile)
    return {"splits": splits, "partial": dev.put(nan_like((splits, M, N), dtype)),
            "counters": dev.put(np.zeros(tiles, np.int32))}


def _counters_reset(split: dict, what: str) -> None:
    if split:
        counters = to_numpy(split["counters"])
        assert not counters.any(), f"{what}: split-K counters not reset to 0: {counters}"


def gemm_bias_sigmoid(dev: Device, dtype, naive: bool, splits: int = 1) -> int:
    """a = σ(a_prev W + b) on the weight-gradient shapes read as (B, I, O), z pushed into both tails;
    ``splits`` > 1: split-K (the naive kernel has none)."""
    rng = np.random.default_rng(10)
    for B, I, O in WG_SHAPES:
        a_prev = rng.uniform(0.0, 1.0, (B, I)).astype(dtype)
        W = rng.normal(0.0, 3.0 / np.sqrt(I), (I, O)).astype(dtype)
        b = rng.normal(0.0, 2.0, O).astype(dtype)
        b[::7] = rng.choice([-40.0, 40.0], size=b[::7].shape)                 # σ saturates, no overflow
        expected = np.empty((B, O))
        reference.gemm_bias_sigmoid(a_prev, W, b, expected)
        a = dev.put(nan_like((B, O), dtype))
        split = split_workspace(dev, "forward_gemm", B, O, splits, dtype, naive)
        launchers.gemm_bias_sigmoid(dev.ks, dev.put(a_prev), dev.put(W), dev.put(b), a, naive=naive, **split)
        assert_close(a, expected, dtype, what=f"gemm_bias_sigmoid a {(B, I, O)}{' split ' + str(splits) if split else ''}")
        _counters_reset(split, f"gemm_bias_sigmoid {(B, I, O)}")
    return len(WG_SHAPES)


def gemm_sigmoid_delta(dev: Device, dtype, naive: bool, splits: int = 1) -> int:
    """delta = (delta_next W_nextᵀ) ⊙ a(1 − a), shapes (B, I, O) with W_next I×O; also in place over a."""
    rng = np.random.default_rng(11)
    for B, I, O in WG_SHAPES:
        delta_next = rng.normal(0.0, 0.5, (B, O)).astype(dtype)
        W_next = rng.normal(0.0, 1.0, (I, O)).astype(dtype)
        a = rng.uniform(0.0, 1.0, (B, I)).astype(dtype)
        expected = np.empty((B, I))
        reference.gemm_sigmoid_delta(delta_next, W_next, a, expected)
        dn, Wn = dev.put(delta_next), dev.put(W_next)
        delta = dev.put(nan_like((B, I), dtype))
        split = split_workspace(dev, "backward_gemm", B, I, splits, dtype, naive)
        launchers.gemm_sigmoid_delta(dev.ks, dn, Wn, dev.put(a), delta, naive=naive, **split)
        assert_close(delta, expected, dtype, what=f"gemm_sigmoid_delta {(B, I, O)}{' split ' + str(splits) if split else ''}")
        _counters_reset(split, f"gemm_sigmoid_delta {(B, I, O)}")
        a_dev = dev.put(a)                       # in place: delta is a
        launchers.gemm_sigmoid_delta(dev.ks, dn, Wn, a_dev, a_dev, naive=naive, **split)
        assert_close(a_dev, expected, dtype, what=f"gemm_sigmoid_delta in place {(B, I, O)}")
    return len(WG_SHAPES)


# -- delta.cu -----------------------------------------------------------------------------------

def sigmoid_delta(dev: Device, dtype, naive: bool) -> int:
    rng = np.random.default_rng(2)
    shapes = ROW_SHAPES + [(1025,), (3, 5, 7)]     # any shape: the kernel sees n elements
    for shape in shapes:
        g = rng.normal(size=shape).astype(dtype)
        a = rng.uniform(0.0, 1.0, shape).astype(dtype)
        expected = np.empty(shape)
        reference.sigmoid_delta(g, a, expected)

        delta = dev.put(nan_like(shape, dtype))
        launchers.sigmoid_delta(dev.ks, dev.put(g), dev.put(a), delta, naive=naive)
        assert_close(delta, expected, dtype, what=f"sigmoid_delta {shape}")

        g_dev = dev.put(g)  # in place: delta is g
        launchers.sigmoid_delta(dev.ks, g_dev, dev.put(a), g_dev, naive=naive)
        assert_close(g_dev, expected, dtype, what=f"sigmoid_delta in place {shape}")
    return len(shapes)


def output_layer(rng, B, O, dtype):
    """a in (0, 1) with some exact 0s and 1s (the clamp ε of the cross-entropy), y one-hot or soft."""
    a = rng.uniform(0.0, 1.0, (B, O))
    a.flat[::7] = rng.choice([0.0, 1.0, 1e-9, 1 - 1e-9], size=a.flat[::7].shape)
    y = rng.uniform(0.0, 1.0, (B, O)) if B % 2 else np.eye(O)[rng.integers(0, O, B)]
    return a.astype(dtype), y.astype(dtype)


def output_delta(dev: Device, dtype, naive: bool, kernel: str) -> int:
    rng = np.random.default_rng(3)
    for B, O in ROW_SHAPES:
        a, y = output_layer(rng, B, O, dtype)
        expected_delta, expected_loss = np.empty((B, O)), np.empty(B)
        reference.output_delta(kernel, a, y, expected_delta, expected_loss)

        delta, loss = dev.put(nan_like((B, O), dtype)), dev.put(nan_like(B, dtype))
        launchers.output_delta(dev.ks, kernel, dev.put(a), dev.put(y), delta, loss, naive=naive)
        assert_close(delta, expected_delta, dtype, what=f"{kernel} delta {(B, O)}")
        assert_close(loss, expected_loss, dtype, what=f"{kernel} loss {(B, O)}")

        delta = dev.put(nan_like((B, O), dtype))  # loss=None: the delta alone
        launchers.output_delta(dev.ks, kernel, dev.put(a), dev.put(y), delta, None, naive=naive)
        assert_close(delta, expected_delta, dtype, what=f"{kernel} delta without loss {(B, O)}")
    return len(ROW_SHAPES)


# -- weight_grad.cu -----------------------------------------------------------------------------

def layer(rng, B, I, O, dtype):
    """a_prev: activations in (0, 1); delta: deltas of either sign."""
    return rng.uniform(0.0, 1.0, (B, I)).astype(dtype), rng.normal(0.0, 0.5, (B, O)).astype(dtype)


def weight_grad(dev: Device, dtype, naive: bool, splits: int = 1) -> int:
    rng = np.random.default_rng(4)
    for B, I, O in WG_SHAPES:
        a_prev, delta = layer(rng, B, I, O, dtype)
        scale = 1.0 / B
        expected_dW, expected_db = np.empty((I, O)), np.empty(O)
        reference.weight_grad(a_prev, delta, expected_dW, expected_db, scale=scale)
        a_prev_dev, delta_dev = dev.put(a_prev), dev.put(delta)

        dW, db = dev.put(nan_like((I, O), dtype)), dev.put(nan_like(O, dtype))
        split = split_workspace(dev, "weight_grad", I, O, splits, dtype, naive)
        launchers.weight_grad(dev.ks, a_prev_dev, delta_dev, dW, db, scale=scale, naive=naive, **split)
        assert_close(dW, expected_dW, dtype, what=f"weight_grad dW {(B, I, O)}{' split ' + str(splits) if split else ''}")
        assert_close(db, expected_db, dtype, what=f"weight_grad db {(B, I, O)}")
        _counters_reset(split, f"weight_grad {(B, I, O)}")

        dW = dev.put(nan_like((I, O), dtype))  # db=None: dW alone
        launchers.weight_grad(dev.ks, a_prev_dev, delta_dev, dW, scale=scale, naive=naive, **split)
        assert_close(dW, expected_dW, dtype, what=f"weight_grad dW without db {(B, I, O)}")
    return len(WG_SHAPES)


def weight_grad_sgd(dev: Device, dtype, naive: bool, momentum: bool, splits: int = 1) -> int:
    rng = np.random.default_rng(5)
    hyper = dict(eta=0.5, lmbda=1e-3, mu=0.9) if momentum else dict(eta=0.5)
    for B, I, O in WG_SHAPES:
        a_prev, delta = layer(rng, B, I, O, dtype)
        W, b = rng.normal(size=(I, O)).astype(dtype), rng.normal(size=O).astype(dtype)
        vW, vb = (rng.normal(0.0, 0.1, (I, O)).astype(dtype), rng.normal(0.0, 0.1, O).astype(dtype)) \
            if momentum else (None, None)
        expected = [None if x is None else x.astype(np.float64) for x in (W, b, vW, vb)]
        reference.weight_grad_sgd(a_prev, delta, *expected, scale=1.0 / B, **hyper)

        params = [None if x is None else dev.put(x) for x in (W, b, vW, vb)]
        split = split_workspace(dev, "weight_grad", I, O, splits, dtype, naive)
        launchers.weight_grad_sgd(dev.ks, dev.put(a_prev), dev.put(delta), *params, scale=1.0 / B, naive=naive,
                                  **hyper, **split)
        _counters_reset(split, f"weight_grad_sgd {(B, I, O)}")
        for name, actual, want in zip(("W", "b", "vW", "vb"), params, expected):
            if want is not None:
                assert_close(actual, want, dtype, what=f"weight_grad_sgd {name} {(B, I, O)}")
    return len(WG_SHAPES)


# (sizes, B, rows of the launch) of the fused step: one to four layers, widths 1 and about the block's
# 256 threads (B·n_l and n_{l−1}·n_l on both sides of 256), batch 1, short last batches, K = 1 … 5.
FUSED_SHAPES = [
    ([1, 1], 1, 1), ([1, 1], 1, 3), ([7, 5, 3], 4, 10), ([6, 1, 4, 2], 3, 3), ([13, 17, 9, 5], 5, 12),
    ([3, 2, 4, 2, 3], 2, 5), ([33, 7], 16, 40), ([9, 100, 7], 7, 7), ([16, 16, 1], 16, 16),
    ([17, 15, 2], 17, 18), ([255, 1, 1], 1, 2), ([1, 256, 1], 1, 1), ([2, 257, 3], 1, 2),
    ([64, 4, 4], 64, 64), ([65, 4, 4], 65, 130), ([5, 51, 5], 5, 9), ([40, 30, 10], 10, 25),
    ([100, 30, 10], 10, 50), ([4, 8, 16, 32, 2], 3, 7), ([32, 16, 8, 4, 1], 9, 9), ([12, 12, 12], 1, 5),
]


def fused_step(dev: Device, dtype, naive: bool, kernel: str) -> int:
    """K fused steps (momentum and decay) against reference.fused_step; 'naive' reads the weights from
    global memory (keep_weights=False), 'fast' keeps them in shared memory where they fit (the default)."""
    rng = np.random.default_rng(13)
    for sizes, B, total in FUSED_SHAPES:
        n = total + 3
        X, Y = rng.normal(size=(n, sizes[0])).astype(dtype), rng.uniform(size=(n, sizes[-1])).astype(dtype)
        # W, b, vW, vb; W ~ N(0, 1/n_{l-1}) keeps σ off saturation (where the clamped cross-entropy's ln ε
        # turns a last-bit difference of a into a large one of the cost)
        layers = [[None] + [rng.normal(0.0, scale / (np.sqrt(sizes[l - 1]) if shape else 1.0),
                                       (sizes[l - 1], sizes[l]) if shape else sizes[l]).astype(dtype)
                            for l in range(1, len(sizes))]
                  for shape, scale in ((True, 1.0), (False, 0.5), (True, 0.1), (False, 0.1))]
        idx = rng.integers(0, n, total).astype(np.int64)
        steps = -(-total // B)
        expected = [[None] + [x.astype(np.float64) for x in layer[1:]] for layer in layers]
        want_loss = np.zeros(steps * B)
        hyper = dict(eta=0.05, lmbda=1e-3, mu=0.9)          # small steps: K chained steps stay off saturation
        reference.fused_step(kernel, X, Y, idx, *expected, want_loss, B=B, **hyper)
        params = [[None] + [dev.put(x) for x in layer[1:]] for layer in layers]
        loss = dev.put(np.zeros(steps * B, dtype))
        launchers.fused_step(dev.ks, kernel, dev.put(X), dev.put(Y), dev.put(idx), *params, loss, B=B,
                             keep_weights=False if naive else None, **hyper)
        for name, got, want in zip(("W", "b", "vW", "vb"), params, expected):
            for l in range(1, len(sizes)):
                assert_close(got[l], want[l], dtype, what=f"{kernel} {name}{l} {sizes} B={B} rows={total}")
        assert_close(loss, want_loss, dtype, what=f"{kernel} costs {sizes} B={B} rows={total}")
    return len(FUSED_SHAPES)


#: (check name, function, extra arguments): one entry per kernel of every family (each run naive
#: and fast, f32 and f64); the variants of output_delta and weight_grad_sgd are their own entries
CHECKS = [
    ("gather_rows", gather_rows, {}),
    ("bias_sigmoid", bias_sigmoid, {}),
    ("gemm_bias_sigmoid", gemm_bias_sigmoid, {}),
    ("sigmoid_delta", sigmoid_delta, {}),
    ("gemm_sigmoid_delta", gemm_sigmoid_delta, {}),
    *[(kernel, output_delta, {"kernel": kernel}) for kernel in launchers.output_delta_kernels()],
    ("weight_grad", weight_grad, {}),
    ("weight_grad_sgd", weight_grad_sgd, {"momentum": False}),
    ("weight_grad_sgd momentum+decay", weight_grad_sgd, {"momentum": True}),
    *[(kernel, fused_step, {"kernel": kernel}) for kernel in ("fused_step_mse", "fused_step_ce")],
    # split-K (3 blocks a tile: on the small shapes some get an empty range of k), the fast kernels
    ("gemm_bias_sigmoid split-K", gemm_bias_sigmoid, {"splits": 3}),
    ("gemm_sigmoid_delta split-K", gemm_sigmoid_delta, {"splits": 3}),
    ("weight_grad split-K", weight_grad, {"splits": 3}),
    ("weight_grad_sgd split-K momentum+decay", weight_grad_sgd, {"momentum": True, "splits": 3}),
]


#: the GEMMs' other builds that steps launch, each checked on the GEMM checks of CHECKS (the fast kernels):
#: the main loop's other schedules (gemm_mainloop.cuh's PIPELINE: 2 stages through registers, v1's one
#: stage) and the narrow tiles a narrow f32 output gets (launchers.NARROW_TILES)
VARIANTS = ({"PIPELINE": 2}, {"PIPELINE": 1}, launchers.NARROW_TILES)
GEMM_CHECKS = [c for c in CHECKS if c[1] in (gemm_bias_sigmoid, gemm_sigmoid_delta, weight_grad, weight_grad_sgd)]


def variant(dev: Device, defines: dict) -> Device:
    """``dev`` with its kernels compiled with ``defines`` (one of VARIANTS)."""
    return dev._replace(ks=dev.kernels(defines))


def run_all(dev: Device, log=lambda line: None) -> list[dict]:
    """Every check of CHECKS, naive and fast, f32 and f64, on ``dev``, then the GEMM checks' fast kernels
    under each of VARIANTS: one result per run (``{"check", "version", "dtype", "shapes", "passed",
    "error"}``; a variant's runs have versions like ``"fast PIPELINE=2"``); a failure is recorded and the
    rest still run."""
    runs = [(name, fn, extra, naive, "naive" if naive else "fast", dev)
            for name, fn, extra in CHECKS for naive in (True, False)]
    for defines in VARIANTS:
        label = "fast " + tuning.tiles_text(defines)
        runs += [(name, fn, extra, False, label, variant(dev, defines)) for name, fn, extra in GEMM_CHECKS]
    results = []
    for name, fn, extra, naive, version, on in runs:
        for dtype in DTYPES:
            r = {"check": name, "version": version, "dtype": np.dtype(dtype).name,
                 "shapes": 0, "passed": False, "error": None}
            try:
                r["shapes"] = fn(on, dtype, naive, **extra)
                r["passed"] = True
            except Exception as e:          # AssertionError, or a CUDA/compile error: recorded, not fatal
                r["error"] = describe(e)
            results.append(r)
            log(f"  {name} {r['version']} {r['dtype']}: "
                + (f"PASS ({r['shapes']} shapes)" if r["passed"] else f"FAIL: {r['error']}"))
    return results
