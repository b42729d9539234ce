"""The GEMM kernels against the float64 reference on shapes, split-K factors and tile sets drawn at random
(hypothesis), beyond the fixed awkward shapes of ``gpubp.check.kernels``: every tile set the tuner tries
(``tuning.TILE_SETS``) and every split it times (1 … 16, also more splits than the reduction has chunks),
f32 and f64, outputs NaN-poisoned.  On the emulated device here, and on a GPU with ``-m gpu`` (where
the tuner launches these same candidates).  Derandomized, so CI draws the same cases every run;
``GPUBP_PROPERTY_EXAMPLES=5000`` draws that many per test, fresh each run (a search for a bug)."""
from __future__ import annotations

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e '.[test]')")
from hypothesis import given, settings, strategies as st  # noqa: E402

from gpubp import reference  # noqa: E402
from gpubp.check import kernels as checks  # noqa: E402
from gpubp.cuda import launchers, tuning  # noqa: E402
from gpubp.testing import assert_close  # noqa: E402

#: one below, at and one above each tile and chunk edge (TILE 32 and 64, BK 16), and anything up to 150
sizes = st.one_of(st.sampled_from([1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129]),
                  st.integers(1, 150))
tile_sets = st.sampled_from([{}, *tuning.TILE_SETS])
splits = st.sampled_from([1, 2, 3, 4, 8, 16])
dtypes = st.sampled_from([np.float32, np.float64])
_MORE = int(os.environ.get("GPUBP_PROPERTY_EXAMPLES", "0"))
SETTINGS = settings(max_examples=_MORE or 150, deadline=None, derandomize=not _MORE, database=None)


def _on(dev, tiles) -> checks.Device:
    return checks.variant(dev, tiles) if tiles else dev


def _what(name, B, I, O, splits, tiles, dtype) -> str:
    return f"{name} (B, I, O) = {(B, I, O)}, splits {splits}, {tuning.tiles_text(tiles) or 'default tiles'}, " \
           f"{np.dtype(dtype).name}"


@SETTINGS
@given(B=sizes, I=sizes, O=sizes, k=splits, tiles=tile_sets, dtype=dtypes, seed=st.integers(0, 2**16))
def test_forward_gemm(dev, B, I, O, k, tiles, dtype, seed):
    """a = σ(a_prev W + b): M = B, N = O, reduction K = I."""
    d, rng = _on(dev, tiles), np.random.default_rng(seed)
    a_prev = rng.uniform(0.0, 1.0, (B, I)).astype(dtype)
    W = rng.normal(0.0, 3.0 / np.sqrt(I), (I, O)).astype(dtype)
    b = rng.normal(0.0, 2.0, O).astype(dtype)
    expected = np.empty((B, O))
    reference.gemm_bias_sigmoid(a_prev, W, b, expected)
    a = d.put(checks.nan_like((B, O), dtype))
    split = checks.split_workspace(d, "forward_gemm", B, O, k, dtype, False)
    launchers.gemm_bias_sigmoid(d.ks, d.put(a_prev), d.put(W), d.put(b), a, **split)
    what = _what("gemm_bias_sigmoid", B, I, O, k, tiles, dtype)
    assert_close(a, expected, dtype, what=what)
    checks._counters_reset(split, what)


@SETTINGS
@given(B=sizes, I=sizes, O=sizes, k=splits, tiles=tile_sets, dtype=dtypes, seed=st.integers(0, 2**16))
def test_backward_gemm(dev, B, I, O, k, tiles, dtype, seed):
    """delta = (delta_next W_nextᵀ) ⊙ a(1 − a): M = B, N = I, reduction K = O."""
    d, rng = _on(dev, tiles), np.random.default_rng(seed)
    delta_next = rng.normal(0.0, 0.5, (B, O)).astype(dtype)
    W_next = rng.normal(0.0, 1.0, (I, O)).astype(dtype)
    a = rng.uniform(0.0, 1.0, (B, I)).astype(dtype)
    expected = np.empty((B, I))
    reference.gemm_sigmoid_delta(delta_next, W_next, a, expected)
    delta = d.put(checks.nan_like((B, I), dtype))
    split = checks.split_workspace(d, "backward_gemm", B, I, k, dtype, False)
    launchers.gemm_sigmoid_delta(d.ks, d.put(delta_next), d.put(W_next), d.put(a), delta, **split)
    what = _what("gemm_sigmoid_delta", B, I, O, k, tiles, dtype)
    assert_close(delta, expected, dtype, what=what)
    checks._counters_reset(split, what)


@SETTINGS
@given(B=sizes, I=sizes, O=sizes, k=splits, tiles=tile_sets, dtype=dtypes, seed=st.integers(0, 2**16),
       momentum=st.booleans())
def test_weight_gradient_and_sgd_update(dev, B, I, O, k, tiles, dtype, seed, momentum):
    """dW = scale · a_prevᵀ delta, db = scale · Σ_batch delta (M = I, N = O, reduction K = B); and the
    fused SGD update of W and b (with momentum and weight decay, or without)."""
    d, rng = _on(dev, tiles), np.random.default_rng(seed)
    a_prev, delta = checks.layer(rng, B, I, O, dtype)
    scale = 1.0 / B
    what = _what("weight_grad", B, I, O, k, tiles, dtype)

    dW_want, db_want = np.empty((I, O)), np.empty(O)
    reference.weight_grad(a_prev, delta, dW_want, db_want, scale=scale)
    dW, db = d.put(checks.nan_like((I, O), dtype)), d.put(checks.nan_like(O, dtype))
    split = checks.split_workspace(d, "weight_grad", I, O, k, dtype, False)
    launchers.weight_grad(d.ks, d.put(a_prev), d.put(delta), dW, db, scale=scale, **split)
    assert_close(dW, dW_want, dtype, what=what + " dW")
    assert_close(db, db_want, dtype, what=what + " db")
    checks._counters_reset(split, what)

    hyper = dict(eta=0.5, lmbda=1e-3, mu=0.9) if momentum else dict(eta=0.5)
    W, b = rng.normal(size=(I, O)).astype(dtype), rng.normal(size=O).astype(dtype)
    vW, vb = (rng.normal(0.0, 0.1, (I, O)).astype(dtype), rng.normal(0.0, 0.1, O).astype(dtype)) \
        if momentum else (None, None)
    want = [None if x is None else x.astype(np.float64) for x in (W, b, vW, vb)]
    reference.weight_grad_sgd(a_prev, delta, *want, scale=scale, **hyper)
    params = [None if x is None else d.put(x) for x in (W, b, vW, vb)]
    launchers.weight_grad_sgd(d.ks, d.put(a_prev), d.put(delta), *params, scale=scale, **hyper, **split)
    for name, got, w in zip(("W", "b", "vW", "vb"), params, want):
        if w is not None:
            assert_close(got, w, dtype, what=f"weight_grad_sgd {name}: {what}")
    checks._counters_reset(split, what + " sgd")
