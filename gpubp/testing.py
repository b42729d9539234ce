"""Comparison helpers shared by the tests and the benchmarks.

The tolerances live here and nowhere else (per dtype: ``RTOL``; one training
step against a float64 step: ``STEP_RTOL``, ``STEP_ULPS``).  A comparison is an absolute-plus-
relative test in the style of llm.c: an element passes when

    |actual - expected| <= atol + rtol * |expected|,   atol = rtol * max|expected|

so that sums with cancellation (a weight gradient is a sum of B products) are
judged against the size of the numbers involved, not against an accidental
zero.  A failure reports the worst element, its index and both values.
"""
from __future__ import annotations

import numpy as np

from .numpy_backend import to_numpy

#: relative tolerance per dtype (float32 kernels against a float64 reference,
#: float64 kernels against a float64 reference).
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def rtol_for(dtype) -> float:
    """The relative tolerance for results computed in ``dtype``."""
    try:
        return RTOL[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"no tolerance defined for dtype {np.dtype(dtype)}; use float32 or float64") from None



def max_abs_diff(actual, expected) -> float:
    a = to_numpy(actual).astype(np.float64)
    e = to_numpy(expected).astype(np.float64)
    return float(np.max(np.abs(a - e))) if a.size else 0.0


def assert_close(actual, expected, dtype=None, *, rtol: float | None = None, atol: float | None = None,
                 what: str = "result") -> None:
    """Assert ``actual`` equals ``expected`` to the tolerance of ``dtype``.

    ``actual`` may be a NumPy or CuPy array; ``expected`` is usually the float64
    reference.  NaN in ``actual`` (for instance a poisoned element the kernel
    never wrote) always fails.
    """
    a = to_numpy(actual).astype(np.float64)
    e = to_numpy(expected).astype(np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{what}: shape {a.shape} != expected {e.shape}")
    if rtol is None:
        rtol = rtol_for(dtype if dtype is not None else to_numpy(actual).dtype)
    if atol is None:
        atol = rtol * (float(np.max(np.abs(e))) if e.size else 0.0)
    if not a.size:
        return
    bad_nan = ~np.isfinite(a) & np.isfinite(e)
    if bad_nan.any():
        idx = tuple(int(i) for i in np.argwhere(bad_nan)[0])
        raise AssertionError(f"{what}: {int(bad_nan.sum())} non-finite element(s) (unwritten or overflowed), "
                             f"first at {idx}: got {a[idx]}, expected {e[idx]}")
    err = np.abs(a - e)
    limit = atol + rtol * np.abs(e)
    if np.any(err > limit):
        idx = np.unravel_index(int(np.argmax(err - limit)), err.shape)
        raise AssertionError(
            f"{what}: max |diff| {float(err.max()):.3e} exceeds tolerance (rtol={rtol:g}, atol={atol:.3e}); "
            f"worst at {tuple(int(i) for i in idx)}: got {a[idx]!r}, expected {e[idx]!r}")


#: one SGD step compared against a float64 reference step: the relative tolerance of the
#: *update* (W after − W before), and the ulps of the largest parameter allowed on top
STEP_RTOL = 2e-3
STEP_ULPS = 4


def check_step_update(what, got_W, got_b, ref) -> None:
    """Assert that one step moved the parameters as the float64 reference step did.

    ``ref`` has the parameters before the step (``W0``, ``b0``) and the reference
    updates (``dW``, ``db``), lists over the layers.  The *updates* are compared
    (W after − W before): W itself barely moves in one step, so comparing W would
    hide an update that is off by percents.  A float32 W stores its update only to
    within a few ulp(W), so the absolute tolerance is ``STEP_ULPS`` ulp of the largest
    parameter on top of ``STEP_RTOL`` of the largest update.
    """
    ulp = np.finfo(np.float32).eps
    for l in range(len(ref.dW)):
        for kind, got, p0, d in (("W", got_W, ref.W0, ref.dW), ("b", got_b, ref.b0, ref.db)):
            atol = STEP_RTOL * float(np.abs(d[l]).max()) + STEP_ULPS * ulp * float(np.abs(p0[l]).max())
            assert_close(np.asarray(got[l], np.float64) - p0[l], d[l], rtol=STEP_RTOL, atol=atol,
                         what=f"{what}: {kind}{l + 1} update after one step")
