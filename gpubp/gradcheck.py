"""Gradient check: backprop against central finite differences, in float64.

For every weight and bias θ of a small network,

    ∂C/∂θ ≈ (C(θ + h) − C(θ − h)) / 2h

and each parameter array passes when its relative error

    ‖g_backprop − g_numeric‖ / (‖g_backprop‖ + ‖g_numeric‖)

is below ``tol`` (1e-6).  The norm-wise form does not blow up for a single
gradient element that happens to be near zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mlp import MLP
from .validation import InputError, check_positive


@dataclass
class ParamCheck:
    name: str            # "W1", "b2", …: the layer l of model.W[l], grads.dW[l] (l = 1 … L)
    rel_error: float
    max_abs_diff: float


@dataclass
class GradcheckResult:
    sizes: list
    loss: str
    params: list         # ParamCheck per parameter array
    tol: float

    @property
    def max_rel_error(self) -> float:
        return max(p.rel_error for p in self.params)

    @property
    def passed(self) -> bool:
        return self.max_rel_error < self.tol

    def __str__(self):
        lines = [f"gradcheck {self.sizes} loss={self.loss}: "
                 f"{'PASS' if self.passed else 'FAIL'} (max relative error {self.max_rel_error:.2e}, tol {self.tol:g})"]
        lines += [f"  {p.name:>4}: relative error {p.rel_error:.2e}, max |diff| {p.max_abs_diff:.2e}"
                  for p in self.params]
        return "\n".join(lines)


def batch_cost(model: MLP, X, Y) -> float:
    """C = mean over the batch of the per-sample cost, in float64."""
    return model.evaluate(X, Y)["loss"]


def numerical_gradient(model: MLP, X, y, h=1e-5):
    """Central differences of the batch cost for every W_l and b_l: lists indexed by layer as
    ``model.W`` and ``backward``'s ``Gradients`` are (``dW[l]`` for l = 1 … L, ``dW[0]`` None)."""
    dW, db = [None], [None]
    for params, out in ((model.W, dW), (model.b, db)):
        for l in range(1, model.L + 1):
            p = params[l]
            g = np.zeros(p.shape)
            flat, gflat = p.reshape(-1), g.reshape(-1)
            for i in range(flat.size):
                old = flat[i]
                flat[i] = old + h
                c_plus = batch_cost(model, X, y)
                flat[i] = old - h
                c_minus = batch_cost(model, X, y)
                flat[i] = old
                gflat[i] = (c_plus - c_minus) / (2 * h)
            out.append(g)
    return dW, db


def compare(model: MLP, X, y, h=1e-5, tol=1e-6) -> GradcheckResult:
    """Backprop gradients of ``model`` on (X, y) against finite differences."""
    if model.dtype != np.float64:
        raise ValueError("gradcheck needs a float64 model (finite differences in float32 are too coarse)")
    if model.backend.name == "cupy":
        raise ValueError("gradcheck perturbs parameters in place on the host; use backend='numpy' or 'emulated'")
    grads = model.backward(X, y)
    num_dW, num_db = numerical_gradient(model, X, y, h)
    params = []
    for kind, analytic, numeric in (("W", grads.dW, num_dW), ("b", grads.db, num_db)):
        for l in range(1, model.L + 1):              # W1 is model.W[1], grads.dW[1]: layer 1
            ga, gn = analytic[l], numeric[l]
            denom = np.linalg.norm(ga) + np.linalg.norm(gn)
            rel = float(np.linalg.norm(ga - gn) / denom) if denom > 0 else 0.0
            params.append(ParamCheck(f"{kind}{l}", rel, float(np.max(np.abs(ga - gn)))))
    params.sort(key=lambda p: (p.name[0] != "W", int(p.name[1:])))
    return GradcheckResult(model.sizes, model.cost.name, params, tol)


def gradcheck(sizes=(3, 4, 2), loss="mse", batch=5, seed=0, backend="numpy", h=1e-5, tol=1e-6) -> GradcheckResult:
    """Build a float64 net of ``sizes`` with random data and check its gradients.

    >>> gradcheck([3, 4, 2], loss="cross_entropy").passed
    True
    """
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise InputError(f"batch must be a positive integer (samples in the checked batch), got {batch!r}")
    check_positive("h", h)
    check_positive("tol", tol)
    model = MLP(sizes, loss=loss, backend=backend, dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, model.sizes[0]))
    if model.sizes[-1] == 1:
        y = rng.integers(0, 2, batch)
    else:
        y = rng.integers(0, model.sizes[-1], batch)
    return compare(model, X, y, h=h, tol=tol)
