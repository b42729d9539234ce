"""Every kernel of kernels/*.cu, naive and fast, f32 and f64, equals the float64
NumPy reference (gpubp.reference) on shapes that straddle every block and tile
edge; and the launchers reject bad input with a message that says the fix.

The same test bodies run on the emulated CUDA device (NumPy arrays, the .cu
source compiled for the CPU) and, where CuPy and a GPU are present, on the GPU
(inputs made with NumPy, moved with cupy.asarray).  Outputs are poisoned with
NaN before every launch so an element the kernel never writes fails.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import pytest

from gpubp import reference
from gpubp.cuda import launchers
from gpubp.cuda import sources as kernels
from gpubp.testing import assert_close

DTYPES = [np.float32, np.float64]
NAIVE = [pytest.param(True, id="naive"), pytest.param(False, id="fast")]

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


def test_shape_lists_cover_the_edges():
    """1, the primes and one below/at/above the tile appear in every dimension."""
    for shapes, edges in ((ROW_SHAPES, (1, 7, 31, 127, 257, 63, 64, 65)),
                          (WG_SHAPES, (1, 7, 31, 127, 257, 63, 64, 65, 15, 16, 17))):
        assert len(shapes) >= 20
        for dim in range(len(shapes[0])):
            missing = set(edges) - {s[dim] for s in shapes}
            assert not missing, f"dimension {dim} never takes the sizes {sorted(missing)}"


# -- the devices --------------------------------------------------------------------------------

class Device(NamedTuple):
    name: str
    ks: kernels.KernelSet
    put: Callable                    # NumPy array -> an array on the device (a copy)
    kernels: Callable                # defines -> KernelSet


def _emulated():
    return Device("emulated", kernels.emulated_kernels(), lambda x: np.array(x, copy=True), kernels.emulated_kernels)


def _cupy():
    try:
        ks = kernels.cupy_kernels()
    except kernels.DeviceUnavailable as e:
        pytest.skip(f"no GPU for the cupy backend: {e}")
    import cupy
    return Device("cupy", ks, cupy.asarray, kernels.cupy_kernels)


@pytest.fixture(scope="module", params=["emulated", pytest.param("cupy", marks=pytest.mark.gpu)])
def dev(request) -> Device:
    return _emulated() if request.param == "emulated" else _cupy()


def nan_like(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


# -- forward.cu ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("naive", NAIVE)
def test_bias_sigmoid(dev, naive, dtype):
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


# -- delta.cu -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("naive", NAIVE)
def test_sigmoid_delta(dev, naive, dtype):
    rng = np.random.default_rng(2)
    for shape in ROW_SHAPES + [(1025,), (3, 5, 7)]:  # any shape: the kernel sees n elements
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


def _output_layer(rng, B, O, dtype):
    """a in (0, 1) with some exact 0s and 1s (the clamp ε of the cross-entropy), y one-hot or soft."""
    a = rng.uniform(0.0, 1.0, (B, O))
    a.flat[::7] = rng.choice([0.0, 1.0, 1e-9, 1 - 1e-9], size=a.flat[::7].shape)
    y = rng.uniform(0.0, 1.0, (B, O)) if B % 2 else np.eye(O)[rng.integers(0, O, B)]
    return a.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("naive", NAIVE)
@pytest.mark.parametrize("kind", ["output_delta_mse", "output_delta_ce"])
def test_output_delta(dev, kind, naive, dtype):
    rng = np.random.default_rng(3)
    for B, O in ROW_SHAPES:
        a, y = _output_layer(rng, B, O, dtype)
        expected_delta, expected_loss = np.empty((B, O)), np.empty(B)
        reference.output_delta(kind, a, y, expected_delta, expected_loss)

        delta, loss = dev.put(nan_like((B, O), dtype)), dev.put(nan_like(B, dtype))
        launchers.output_delta(dev.ks, kind, dev.put(a), dev.put(y), delta, loss, naive=naive)
        assert_close(delta, expected_delta, dtype, what=f"output_delta {kind} delta {(B, O)}")
        assert_close(loss, expected_loss, dtype, what=f"output_delta {kind} loss {(B, O)}")

        delta = dev.put(nan_like((B, O), dtype))  # loss=None: the delta alone
        launchers.output_delta(dev.ks, kind, dev.put(a), dev.put(y), delta, None, naive=naive)
        assert_close(delta, expected_delta, dtype, what=f"output_delta {kind} delta without loss {(B, O)}")


# -- weight_grad.cu -----------------------------------------------------------------------------

def _layer(rng, B, I, O, dtype):
    """a_prev: activations in (0, 1); delta: deltas of either sign."""
    return rng.uniform(0.0, 1.0, (B, I)).astype(dtype), rng.normal(0.0, 0.5, (B, O)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("naive", NAIVE)
def test_weight_grad(dev, naive, dtype):
    rng = np.random.default_rng(4)
    for B, I, O in WG_SHAPES:
        a_prev, delta = _layer(rng, B, I, O, dtype)
        scale = 1.0 / B
        expected_dW, expected_db = np.empty((I, O)), np.empty(O)
        reference.weight_grad(a_prev, delta, expected_dW, expected_db, scale=scale)
        a_prev_dev, delta_dev = dev.put(a_prev), dev.put(delta)

        dW, db = dev.put(nan_like((I, O), dtype)), dev.put(nan_like(O, dtype))
        launchers.weight_grad(dev.ks, a_prev_dev, delta_dev, dW, db, scale=scale, naive=naive)
        assert_close(dW, expected_dW, dtype, what=f"weight_grad dW {(B, I, O)}")
        assert_close(db, expected_db, dtype, what=f"weight_grad db {(B, I, O)}")

        dW = dev.put(nan_like((I, O), dtype))  # db=None: dW alone
        launchers.weight_grad(dev.ks, a_prev_dev, delta_dev, dW, scale=scale, naive=naive)
        assert_close(dW, expected_dW, dtype, what=f"weight_grad dW without db {(B, I, O)}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("naive", NAIVE)
@pytest.mark.parametrize("momentum", [pytest.param(False, id="plain"), pytest.param(True, id="momentum+decay")])
def test_weight_grad_sgd(dev, momentum, naive, dtype):
    rng = np.random.default_rng(5)
    hyper = dict(eta=0.5, lmbda=1e-3, mu=0.9) if momentum else dict(eta=0.5)
    for B, I, O in WG_SHAPES:
        a_prev, delta = _layer(rng, B, I, O, dtype)
        W, b = rng.normal(size=(I, O)).astype(dtype), rng.normal(size=O).astype(dtype)
        vW, vb = (rng.normal(0.0, 0.1, (I, O)).astype(dtype), rng.normal(0.0, 0.1, O).astype(dtype)) \
            if momentum else (None, None)
        expected = [None if x is None else x.astype(np.float64) for x in (W, b, vW, vb)]
        reference.weight_grad_sgd(a_prev, delta, *expected, scale=1.0 / B, **hyper)

        params = [None if x is None else dev.put(x) for x in (W, b, vW, vb)]
        launchers.weight_grad_sgd(dev.ks, dev.put(a_prev), dev.put(delta), *params, scale=1.0 / B, naive=naive, **hyper)
        for name, actual, want in zip(("W", "b", "vW", "vb"), params, expected):
            if want is not None:
                assert_close(actual, want, dtype, what=f"weight_grad_sgd {name} {(B, I, O)}")


# -- tunables injected with -D: the launchers follow the compiled tiles ---------------------------

SMALL_TILES = {"TILE": 32, "MICRO": 2, "BK": 8, "EPT": 2, "ROW_THREADS": 8, "ROWS_PER_BLOCK": 4}


@pytest.mark.parametrize("dtype", DTYPES)
def test_injected_tunables(dev, dtype):
    ks = dev.kernels(SMALL_TILES)
    assert ks.param("weight_grad", "TILE") == 32 and ks.param("delta", "ROW_THREADS") == 8
    rng = np.random.default_rng(6)
    for B, I, O in [(1, 1, 1), (7, 31, 33), (9, 33, 65), (17, 64, 31)]:
        a_prev, delta = _layer(rng, B, I, O, dtype)
        expected_dW, expected_db = np.empty((I, O)), np.empty(O)
        reference.weight_grad(a_prev, delta, expected_dW, expected_db, scale=0.25)
        dW, db = dev.put(nan_like((I, O), dtype)), dev.put(nan_like(O, dtype))
        launchers.weight_grad(ks, dev.put(a_prev), dev.put(delta), dW, db, scale=0.25)
        assert_close(dW, expected_dW, dtype, what=f"weight_grad dW, small tiles {(B, I, O)}")
        assert_close(db, expected_db, dtype, what=f"weight_grad db, small tiles {(B, I, O)}")

        a, y = _output_layer(rng, B, O, dtype)
        expected_delta, expected_loss = np.empty((B, O)), np.empty(B)
        reference.output_delta("output_delta_ce", a, y, expected_delta, expected_loss)
        delta, loss = dev.put(nan_like((B, O), dtype)), dev.put(nan_like(B, dtype))
        launchers.output_delta(ks, "output_delta_ce", dev.put(a), dev.put(y), delta, loss)
        assert_close(delta, expected_delta, dtype, what=f"output_delta delta, small tiles {(B, O)}")
        assert_close(loss, expected_loss, dtype, what=f"output_delta loss, small tiles {(B, O)}")

        z, b = rng.normal(size=(B, O)).astype(dtype), rng.normal(size=O).astype(dtype)
        expected_z = z.astype(np.float64)
        reference.bias_sigmoid(expected_z, b)
        z_dev = dev.put(z)
        launchers.bias_sigmoid(ks, z_dev, dev.put(b))
        assert_close(z_dev, expected_z, dtype, what=f"bias_sigmoid, small tiles {(B, O)}")


def test_unknown_tunable_is_refused():
    with pytest.raises(ValueError, match=r"unknown kernel tunable 'TILES'; the tunables are .*TILE"):
        kernels.emulated_kernels({"TILES": 32})


# -- launcher validation ------------------------------------------------------------------------

def test_launchers_reject_bad_input(dev):
    ks, put = dev.ks, dev.put
    f32 = np.zeros((4, 3), np.float32)
    a_prev, delta, W = put(np.zeros((5, 4), np.float32)), put(np.zeros((5, 3), np.float32)), put(f32)
    b = put(np.zeros(3, np.float32))

    with pytest.raises(TypeError, match=r"bias_sigmoid: z has dtype float16; the kernels take float32 or float64"):
        launchers.bias_sigmoid(ks, put(f32.astype(np.float16)), put(np.zeros(3, np.float16)))
    with pytest.raises(TypeError, match=r"bias_sigmoid: z has dtype int32"):
        launchers.bias_sigmoid(ks, put(np.zeros((4, 3), np.int32)), b)
    with pytest.raises(TypeError, match=r"bias_sigmoid: b is float64 but z is float32; all arrays must have one dtype"):
        launchers.bias_sigmoid(ks, put(f32), put(np.zeros(3)))
    with pytest.raises(ValueError, match=r"bias_sigmoid: b has shape \(4,\) but must be \(3,\)"):
        launchers.bias_sigmoid(ks, put(f32), put(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match=r"weight_grad: a_prev is not C-contiguous .*; pass xp\.ascontiguousarray\(a_prev\)"):
        launchers.weight_grad(ks, put(np.zeros((4, 5), np.float32)).T, delta, W)
    with pytest.raises(ValueError, match=r"sigmoid_delta: g is not C-contiguous"):
        launchers.sigmoid_delta(ks, put(np.zeros((4, 6), np.float32))[:, ::2], put(f32), put(f32))
    with pytest.raises(ValueError, match=r"sigmoid_delta: delta has shape \(3, 4\) but must be \(4, 3\)"):
        launchers.sigmoid_delta(ks, put(f32), put(f32), put(np.zeros((3, 4), np.float32)))
    with pytest.raises(ValueError, match=r"weight_grad: delta has 4 rows but a_prev has 5"):
        launchers.weight_grad(ks, a_prev, put(np.zeros((4, 3), np.float32)), W)
    with pytest.raises(ValueError, match=r"weight_grad: dW has shape \(3, 4\) but must be \(4, 3\)"):
        launchers.weight_grad(ks, a_prev, delta, put(np.zeros((3, 4), np.float32)))
    with pytest.raises(ValueError, match=r"weight_grad: a_prev must be 2-D \(B, I\)"):
        launchers.weight_grad(ks, put(np.zeros(5, np.float32)), delta, W)
    with pytest.raises(ValueError, match=r"weight_grad_sgd: mu = 0.9 needs momentum buffers; pass vW and vb"):
        launchers.weight_grad_sgd(ks, a_prev, delta, W, b, eta=0.1, mu=0.9)
    with pytest.raises(ValueError, match=r"weight_grad_sgd: pass the momentum buffers vW and vb together"):
        launchers.weight_grad_sgd(ks, a_prev, delta, W, b, put(f32), eta=0.1, mu=0.9)
    with pytest.raises(ValueError, match=r"weight_grad_sgd: eta = nan is not finite"):
        launchers.weight_grad_sgd(ks, a_prev, delta, W, b, eta=float("nan"))
    with pytest.raises(ValueError, match=r"weight_grad: scale = 1e\+40 is not finite in float32"):
        launchers.weight_grad(ks, a_prev, delta, W, scale=1e40)
    with pytest.raises(ValueError, match=r"output_delta: kernel must be one of 'output_delta_mse', 'output_delta_ce' "
                                         r"\(a cost's \.kernel\), got 'mse'"):
        launchers.output_delta(ks, "mse", put(f32), put(f32), put(f32))
    with pytest.raises(ValueError, match=r"output_delta: loss has shape \(3,\) but must be \(4,\)"):
        launchers.output_delta(ks, "output_delta_mse", put(f32), put(f32), put(f32), put(np.zeros(3, np.float32)))
    # nothing was launched: W is untouched by the refused updates
    assert_close(W, np.zeros((4, 3)), np.float32, what="W after refused launches")


def test_kernel_names_and_families():
    assert kernels.families() == ("delta", "forward", "weight_grad")
    names = {k for f in kernels.families() for k in kernels.kernel_names(f)}
    for base in ("bias_sigmoid", "sigmoid_delta", "output_delta_mse", "output_delta_ce", "weight_grad",
                 "weight_grad_sgd"):
        for dt in ("f32", "f64"):
            assert {f"{base}_{dt}", f"{base}_naive_{dt}"} <= names
    assert len(names) == 24
    assert kernels.family_of("weight_grad_sgd_naive_f64") == "weight_grad"
    with pytest.raises(ValueError, match=r"no kernel named 'weight_grad_f16'"):
        kernels.family_of("weight_grad_f16")
