"""The NumPy reference of every kernel in ``kernels/*.cu``: the source of truth
the kernels are tested against.

Each function has the signature of its launcher in ``gpubp.cuda.launchers`` minus
``ks`` and ``naive``: same argument names and order, same outputs written in
place.  The inputs may be float32 or float64; the math is done in float64 and
the results are cast into the given output arrays (pass float64 outputs to keep
them unrounded).  The one dtype-dependent constant, the cross-entropy clamp ε,
is picked by the dtype of ``a``.

Shapes: B = batch, I = inputs, O = outputs; batch-first, row-major.
"""
from __future__ import annotations

import numpy as np

#: clamp of the cross-entropy logarithms per dtype (kernels/delta.cu: ce_eps<T>()).
#: One definition, shared with the NumPy cost functions.
from gpubp.costs import CE_EPS

__all__ = ["CE_EPS", "sigmoid", "gather_rows", "bias_sigmoid", "gemm_bias_sigmoid", "sigmoid_delta",
           "gemm_sigmoid_delta", "output_delta", "weight_grad", "weight_grad_sgd", "fused_step"]


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def sigmoid(x):
    """σ(x) = 1 / (1 + exp(−x)) in the form that never overflows (as kernels/forward.cu):
    with e = exp(−|x|), σ = 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def gather_rows(X, Y, idx, x, y):
    """x[r] = X[idx[r]], y[r] = Y[idx[r]] for r < B; a row number outside [0, n) gives NaN rows.
    X: n×I, Y: n×O, idx: B int64, x: B×I, y: B×O."""
    idx = np.asarray(idx, dtype=np.int64)
    ok = (idx >= 0) & (idx < len(X))
    safe = np.where(ok, idx, 0)
    x[...] = np.where(ok[:, None], _f64(X)[safe], np.nan)
    y[...] = np.where(ok[:, None], _f64(Y)[safe], np.nan)


def bias_sigmoid(z, b):
    """z ← σ(z + b) in place; z: B×O, b: O."""
    z[...] = sigmoid(_f64(z) + _f64(b))


def gemm_bias_sigmoid(a_prev, W, b, a):
    """a = σ(a_prev W + b); a_prev: B×I, W: I×O, b: O, a: B×O."""
    a[...] = sigmoid(_f64(a_prev) @ _f64(W) + _f64(b))


def gemm_sigmoid_delta(delta_next, W_next, a, delta):
    """delta = (delta_next W_nextᵀ) ⊙ a ⊙ (1 − a); delta_next: B×O, W_next: I×O, a, delta: B×I; delta may be a."""
    a64 = _f64(a)
    delta[...] = (_f64(delta_next) @ _f64(W_next).T) * a64 * (1 - a64)


def sigmoid_delta(g, a, delta):
    """delta = g ⊙ a ⊙ (1 − a); delta may be g."""
    a64 = _f64(a)
    delta[...] = _f64(g) * a64 * (1 - a64)


def output_delta(kernel, a, y, delta, loss=None):
    """delta = δ_L and loss[r] = the per-sample cost (if ``loss`` is given), for the cost whose kernel is
    output_delta_mse:  δ_L = (a − y) ⊙ a ⊙ (1 − a),  loss = ½ Σ_c (a − y)²
    output_delta_ce:   δ_L = a − y,                  loss = −Σ_c [y ln max(a, ε) + (1 − y) ln max(1 − a, ε)]"""
    a64, y64 = _f64(a), _f64(y)
    if kernel == "output_delta_mse":
        d = (a64 - y64) * a64 * (1 - a64)
        per_element = 0.5 * (a64 - y64) ** 2
    elif kernel == "output_delta_ce":
        eps = CE_EPS[np.dtype(a.dtype)]
        d = a64 - y64
        per_element = -(y64 * np.log(np.maximum(a64, eps)) + (1 - y64) * np.log(np.maximum(1 - a64, eps)))
    else:
        raise ValueError(f"output_delta: kernel must be 'output_delta_mse' or 'output_delta_ce', got {kernel!r}")
    delta[...] = d
    if loss is not None:
        loss[...] = per_element.sum(axis=1)


def weight_grad(a_prev, delta, dW, db=None, *, scale=1.0):
    """dW = scale · a_prevᵀ delta (I×O); db = scale · Σ_r delta[r, :] (O) if given."""
    delta64 = _f64(delta)
    dW[...] = scale * (_f64(a_prev).T @ delta64)
    if db is not None:
        db[...] = scale * delta64.sum(axis=0)


def weight_grad_sgd(a_prev, delta, W, b, vW=None, vb=None, *, scale=1.0, eta, lmbda=0.0, mu=0.0):
    """g = scale · a_prevᵀ delta + lmbda · W;  vW ← mu · vW + g;  W ← W − eta · vW  (W ← W − eta · g without vW)
    gb = scale · Σ_r delta[r, :];           vb ← mu · vb + gb; b ← b − eta · vb  (b ← b − eta · gb without vb)"""
    if mu != 0 and (vW is None or vb is None):
        raise ValueError(f"weight_grad_sgd: mu = {mu} needs momentum buffers; pass vW and vb")
    W64 = _f64(W)
    g = scale * (_f64(a_prev).T @ _f64(delta)) + lmbda * W64
    gb = scale * _f64(delta).sum(axis=0)
    for p, v, grad in ((W, vW, g), (b, vb, gb)):
        if v is not None:
            grad = mu * _f64(v) + grad
            v[...] = grad
        p[...] = _f64(p) - eta * grad


def fused_step(kernel, X, Y, idx, W, b, vW, vb, loss, *, B, eta, lmbda=0.0, mu=0.0):
    """K = ceil(len(idx) / B) SGD steps, the k-th on rows idx[k·B : (k+1)·B] of X and Y (the last batch
    may be short), as fused_step.cu runs them: for each batch the forward pass, BP1 (the per-sample costs
    into loss[k·B + r] if ``loss`` is given), BP2 and each layer's weight_grad_sgd with scale 1/B_k, in
    the kernel's order (δ_{l−1} from the old W_l, then W_l's update).  ``kernel``: "fused_step_mse" or
    "fused_step_ce"; W, b, vW, vb: lists indexed by layer as ``MLP.W`` (index 0 None; vW, vb None without
    momentum), updated in place.  a_l and δ_l are rounded to W's dtype, as the kernel stores them."""
    cost = {"fused_step_mse": "output_delta_mse", "fused_step_ce": "output_delta_ce"}.get(kernel)
    if cost is None:
        raise ValueError(f"fused_step: kernel must be 'fused_step_mse' or 'fused_step_ce', got {kernel!r}")
    L, dtype, total = len(W) - 1, W[1].dtype, len(idx)
    sizes = [W[1].shape[0]] + [W[l].shape[1] for l in range(1, L + 1)]
    for k in range(-(-total // B)):
        rows = np.asarray(idx[k * B:(k + 1) * B], dtype=np.int64)
        Bk = len(rows)
        a = [np.empty((Bk, n), dtype) for n in sizes]
        y = np.empty((Bk, sizes[-1]), dtype)
        gather_rows(X, Y, rows, a[0], y)
        for l in range(1, L + 1):
            gemm_bias_sigmoid(a[l - 1], W[l], b[l], a[l])
        delta = [None] + [np.empty((Bk, n), dtype) for n in sizes[1:]]
        costs = np.empty(Bk, dtype)
        output_delta(cost, a[L], y, delta[L], costs)
        if loss is not None:
            np.asarray(loss).reshape(-1)[k * B:k * B + Bk] = costs
        for l in range(L, 0, -1):
            if l > 1:
                gemm_sigmoid_delta(delta[l], W[l], a[l - 1], delta[l - 1])
            weight_grad_sgd(a[l - 1], delta[l], W[l], b[l], vW[l] if vW is not None else None,
                            vb[l] if vb is not None else None, scale=1.0 / Bk, eta=eta, lmbda=lmbda, mu=mu)
