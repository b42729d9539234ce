"""Fit parity: training on a kernel backend ("emulated" or "cupy") moves the
weights as the NumPy backend does, per backend option.  ``tests/test_kernel_backend.py``
and ``gpubp check`` run this same check.

20 SGD steps (100 samples, batch 10, 2 epochs) of [13, 17, 9, 5] in float32,
from the same seed on both backends; every W and b must agree to float32's
tolerance, and the epoch losses to 1e-5.
"""
from __future__ import annotations

import numpy as np

from ..mlp import MLP
from ..testing import assert_close
from . import describe

#: the backend options a parity run covers (``cuda_graph`` runs on both kernel backends: a captured and
#: replayed graph on cupy, a checked-capturable eager step on the emulated device)
OPTIONS = {"fused": {}, "unfused": {"fused_update": False}, "naive": {"naive": True},
           "cublas_dW": {"cublas_weight_grad": True}, "own_gemm": {"gemm": "own"},
           "own_gemm_unfused": {"gemm": "own", "fused_update": False}, "cuda_graph": {"cuda_graph": True}}

#: (sizes, batch) of the own-GEMM parity runs: the tutorial net, batch 1 with widths around a tile
#: edge, and primes that are no tile multiple (issue 12)
OWN_GEMM_NETS = [([784, 30, 10], 10), ([63, 65, 17], 1), ([200, 129, 67, 3], 37)]
HYPER = [(0.0, 0.0), (0.9, 1e-3)]          # (momentum, weight_decay)
LOSSES = ("mse", "cross_entropy")


def fit_parity(device: str, options: dict, loss: str, momentum: float, weight_decay: float,
               sizes=(13, 17, 9, 5), batch: int = 10) -> float:
    """Train the same net on NumPy and on ``device`` with ``options`` for 20 steps (2 epochs of 10
    batches); raises AssertionError on a mismatch, else returns the largest |W_device − W_numpy|."""
    rng = np.random.default_rng(7)
    n = 10 * batch
    X, y = rng.random((n, sizes[0])), rng.integers(0, sizes[-1], n)
    nets = [MLP(list(sizes), loss=loss, backend=b, seed=3, backend_options=o)
            for b, o in (("numpy", None), (device, options))]
    hists = [n.fit(X, y, epochs=2, batch_size=batch, lr=0.8, momentum=momentum, weight_decay=weight_decay,
                   progress=False) for n in nets]
    ref, dev = nets
    worst = 0.0
    for l in range(len(sizes) - 1):
        assert_close(dev.weights[l], ref.weights[l], np.float32, what=f"W{l + 1} after 20 steps")
        assert_close(dev.biases[l], ref.biases[l], np.float32, what=f"b{l + 1} after 20 steps")
        worst = max(worst, float(np.abs(dev.weights[l].astype(np.float64) - ref.weights[l]).max()))
    np.testing.assert_allclose(hists[1].loss, hists[0].loss, rtol=1e-5, err_msg="epoch losses")
    moved = np.abs(ref.weights[-1] - MLP(list(sizes), backend="numpy", seed=3).weights[-1]).max()
    assert moved > 1e-3, f"the reference's last layer moved only {moved:.1e} in 20 steps: the check would be empty"
    return worst


def _row(device, option, options, loss, momentum, weight_decay, **net) -> dict:
    """One parity run as a report row; a failure is recorded, not raised."""
    r = {"option": option, "loss": loss, "momentum": momentum, "weight_decay": weight_decay,
         "passed": False, "max_abs_dW": None, "error": None}
    try:
        r["max_abs_dW"] = fit_parity(device, options, loss, momentum, weight_decay, **net)
        r["passed"] = True
    except Exception as e:
        r["error"] = describe(e)
    return r


def run_all(device: str, options: dict | None = None, log=lambda line: None) -> list[dict]:
    """fit_parity for each option, loss and (momentum, decay), then the whole step on gpubp's own GEMMs on
    OWN_GEMM_NETS: one result each (``{"option", "loss", "momentum", "weight_decay", "passed",
    "max_abs_dW", "error"}``)."""
    runs = [(option, opts, loss, momentum, weight_decay, {}) for option, opts in (options or OPTIONS).items()
            for loss in LOSSES for momentum, weight_decay in HYPER]
    runs += [(f"own_gemm {sizes} b{batch}", {"gemm": "own"}, "mse", 0.9, 1e-3, {"sizes": sizes, "batch": batch})
             for sizes, batch in OWN_GEMM_NETS]
    results = []
    for option, opts, loss, momentum, weight_decay, net in runs:
        r = _row(device, option, opts, loss, momentum, weight_decay, **net)
        results.append(r)
        log(f"  {option} {loss} momentum={momentum:g}: "
            + (f"PASS (max |ΔW| {r['max_abs_dW']:.1e})" if r["passed"] else f"FAIL: {r['error']}"))
    return results
