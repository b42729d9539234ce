"""Cost functions: each is a small class with ``fn`` (the per-sample loss) and
``delta`` (the output error δ_L), plugged into the MLP rather than switched on
a flag (Nielsen's network2.py does the same).

Shapes: ``a`` and ``y`` are B × O (batch-first); ``loss`` is B.  Every function
writes into the arrays it is given (``out=``) so a training step allocates
nothing; ``tmp`` and ``tmp2`` are B × O scratch arrays.

``delta`` is the per-sample error.  The cost of a batch is the mean of the
per-sample losses, so the gradient of the batch cost carries a factor 1/B; the
MLP applies it where BP3/BP4 sum the errors over the batch (``scale=1/B`` of
the weight gradient), not to δ_L.

Each class names its CUDA kernel (``kernel``, in ``kernels/delta.cu``), which
computes the same ``delta`` and ``fn`` in one pass; a cost without one runs on
the NumPy backend only.
"""
from __future__ import annotations

import numpy as np

#: clamp for the logarithms of the cross-entropy, per dtype (shared with the
#: kernels: ``kernels/delta.cu`` uses the same values).
CE_EPS = {np.dtype(np.float32): 1e-7, np.dtype(np.float64): 1e-12}


class QuadraticCost:
    """MSE: C = ½ Σ_c (a − y)²  per sample; δ_L = (a − y) ⊙ a(1 − a)  (σ'(z) = a(1 − a))."""

    name = "mse"
    kernel = "output_delta_mse"

    @staticmethod
    def fn(a, y, loss, tmp, tmp2):
        """loss[r] = ½ Σ_c (a[r,c] − y[r,c])²"""
        np.subtract(a, y, out=tmp)
        np.square(tmp, out=tmp)
        np.sum(tmp, axis=1, out=loss)
        loss *= 0.5

    @staticmethod
    def delta(a, y, delta, tmp):
        """delta = (a − y) ⊙ a ⊙ (1 − a)"""
        np.subtract(a, y, out=delta)
        np.subtract(1, a, out=tmp)
        tmp *= a                       # σ'(z_L) = a(1 − a)
        delta *= tmp


class CrossEntropyCost:
    """Sigmoid + cross-entropy: C = −Σ_c [y ln a + (1 − y) ln(1 − a)] per sample;
    δ_L = a − y: σ'(z) cancels against the derivative of the logarithms."""

    name = "cross_entropy"
    kernel = "output_delta_ce"

    @staticmethod
    def fn(a, y, loss, tmp, tmp2):
        """loss[r] = −Σ_c [y ln max(a, ε) + (1 − y) ln max(1 − a, ε)]"""
        eps = CE_EPS[a.dtype]
        np.maximum(a, eps, out=tmp)
        np.log(tmp, out=tmp)                    # ln a
        np.subtract(1, a, out=tmp2)
        np.maximum(tmp2, eps, out=tmp2)
        np.log(tmp2, out=tmp2)                  # ln(1 − a)
        tmp -= tmp2
        tmp *= y
        tmp += tmp2                             # y ln a + (1 − y) ln(1 − a)
        np.sum(tmp, axis=1, out=loss)
        np.negative(loss, out=loss)

    @staticmethod
    def delta(a, y, delta, tmp):
        """delta = a − y"""
        np.subtract(a, y, out=delta)


COSTS = {c.name: c for c in (QuadraticCost, CrossEntropyCost)}


def get_cost(loss):
    """The cost class for ``"mse"`` or ``"cross_entropy"`` (or a cost class itself)."""
    if isinstance(loss, str):
        key = {"ce": "cross_entropy", "crossentropy": "cross_entropy", "quadratic": "mse"}.get(loss, loss)
        if key not in COSTS:
            raise ValueError(f"unknown loss {loss!r}; use one of {sorted(COSTS)}")
        return COSTS[key]
    if hasattr(loss, "fn") and hasattr(loss, "delta") and hasattr(loss, "name"):
        return loss
    raise TypeError(f"loss must be 'mse' or 'cross_entropy', not {loss!r}")
