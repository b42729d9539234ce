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

#: the backend options a parity run covers (``cuda_graph`` is added on the cupy backend where it is supported)
OPTIONS = {"fused": {}, "unfused": {"fused_update": False}, "naive": {"naive": True},
           "cublas_dW": {"cublas_weight_grad": True}}
HYPER = [(0.0, 0.0), (0.9, 1e-3)]          # (momentum, weight_decay)
LOSSES = ("mse", "cross_entropy")


def fit_parity(device: str, options: dict, loss: str, momentum: float, weight_decay: float) -> float:
    """Train the same net on NumPy and on ``device`` with ``options``; raises AssertionError on a
    mismatch, else returns the largest |W_device − W_numpy| over the layers."""
    rng = np.random.default_rng(7)
    X, y = rng.random((100, 13)), rng.integers(0, 5, 100)     # 100 samples, batch 10, 2 epochs: 20 steps
    nets = [MLP([13, 17, 9, 5], loss=loss, backend=b, seed=3, backend_options=o)
            for b, o in (("numpy", None), (device, options))]
    hists = [n.fit(X, y, epochs=2, batch_size=10, lr=0.8, momentum=momentum, weight_decay=weight_decay,
                   progress=False) for n in nets]
    ref, dev = nets
    worst = 0.0
    for l in range(3):
        assert_close(dev.weights[l], ref.weights[l], np.float32, what=f"W{l + 1} after 20 steps")
        assert_close(dev.biases[l], ref.biases[l], np.float32, what=f"b{l + 1} after 20 steps")
        worst = max(worst, float(np.abs(dev.weights[l].astype(np.float64) - ref.weights[l]).max()))
    np.testing.assert_allclose(hists[1].loss, hists[0].loss, rtol=1e-5, err_msg="epoch losses")
    assert hists[0].loss[1] < hists[0].loss[0], "the reference did not train"
    return worst


def run_all(device: str, options: dict | None = None, log=lambda line: None) -> list[dict]:
    """fit_parity for each option, loss and (momentum, decay): one result each
    (``{"option", "loss", "momentum", "weight_decay", "passed", "max_abs_dW", "error"}``)."""
    results = []
    for option, opts in (options or OPTIONS).items():
        for loss in LOSSES:
            for momentum, weight_decay in HYPER:
                r = {"option": option, "loss": loss, "momentum": momentum, "weight_decay": weight_decay,
                     "passed": False, "max_abs_dW": None, "error": None}
                try:
                    r["max_abs_dW"] = fit_parity(device, opts, loss, momentum, weight_decay)
                    r["passed"] = True
                except Exception as e:
                    r["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                results.append(r)
                log(f"  {option} {loss} momentum={momentum:g}: "
                    + (f"PASS (max |ΔW| {r['max_abs_dW']:.1e})" if r["passed"] else f"FAIL: {r['error']}"))
    return results
