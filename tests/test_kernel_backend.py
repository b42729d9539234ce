"""The MLP's GPU path (the kernel backend) against the NumPy backend.

On the emulated device the exact kernel source runs on the CPU through the
same launchers and backend the CuPy path uses; the ``gpu`` variants run the
very same tests on a real device and skip without one."""
import numpy as np
import pytest

from gpubp import MLP
from gpubp.check.fit import HYPER, OPTIONS, fit_parity
from gpubp.device import cuda_status
from gpubp.testing import assert_close

DEVICES = ["emulated", pytest.param("cupy", marks=pytest.mark.gpu)]


def need(device):
    if device == "cupy":
        ok, why = cuda_status()
        if not ok:
            pytest.skip(f"no CUDA device: {why}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("momentum, weight_decay", HYPER)
def test_fit_matches_numpy_after_20_steps(device, option, loss, momentum, weight_decay):
    need(device)
    assert fit_parity(device, OPTIONS[option], loss, momentum, weight_decay) < 1e-4


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_backward_and_evaluate_match_numpy_float64(device, loss):
    need(device)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((31, 7)), rng.integers(0, 3, 31)
    ref = MLP([7, 65, 3], loss=loss, backend="numpy", dtype=np.float64, seed=2)
    dev = MLP([7, 65, 3], loss=loss, backend=device, dtype=np.float64, seed=2)
    g_ref, g_dev = ref.backward(X, y), dev.backward(X, y)
    for l in range(2):
        assert_close(g_dev.dW[l], g_ref.dW[l], np.float64, what=f"dW{l + 1}")
        assert_close(g_dev.db[l], g_ref.db[l], np.float64, what=f"db{l + 1}")
    assert g_dev.loss == pytest.approx(g_ref.loss, rel=1e-12)
    e_ref, e_dev = ref.evaluate(X, y), dev.evaluate(X, y)
    assert e_dev["loss"] == pytest.approx(e_ref["loss"], rel=1e-12) and e_dev["accuracy"] == e_ref["accuracy"]


def test_gradcheck_on_the_emulated_device():
    from gpubp import gradcheck
    for loss in ("mse", "cross_entropy"):
        result = gradcheck([4, 6, 3], loss=loss, backend="emulated")
        assert result.passed, str(result)


def test_emulated_training_reaches_digits_accuracy():
    from gpubp import datasets
    d = datasets.digits()
    net = MLP([64, 64, 10], loss="cross_entropy", backend="emulated", seed=0)
    net.fit(d.X_train, d.y_train, epochs=6, batch_size=32, lr=2.0, progress=False)
    assert net.evaluate(d.X_test, d.y_test)["accuracy"] >= 0.93


def test_cupy_backend_without_device_says_why():
    ok, why = cuda_status()
    if ok:
        pytest.skip("a CUDA device is present")
    from gpubp.device import DeviceUnavailable
    with pytest.raises(DeviceUnavailable, match="CuPy|CUDA"):
        MLP([2, 2], backend="cupy")


def test_custom_cost_is_refused_by_kernels_when_the_model_is_made():
    from gpubp import InputError

    class Hinge:
        name = "hinge"
        fn = delta = staticmethod(lambda *a: None)
    with pytest.raises(InputError, match=r"kernels are in kernels/delta.cu \(output_delta_mse, output_delta_ce\); "
                                         r"'hinge' names no kernel; use backend='numpy'"):
        MLP([2, 2], loss=Hinge, backend="emulated")
    Hinge.kernel = "output_delta_hinge"
    with pytest.raises(InputError, match="'hinge' names 'output_delta_hinge'"):
        MLP([2, 2], loss=Hinge, backend="emulated")
    assert MLP([2, 2], loss=Hinge, backend="numpy").cost is Hinge     # NumPy runs any cost with fn/delta


def test_each_builtin_cost_names_a_kernel_of_delta_cu():
    from gpubp.costs import COSTS
    from gpubp.cuda import launchers
    assert sorted(c.kernel for c in COSTS.values()) == sorted(launchers.output_delta_kernels())


def test_cuda_graph_is_refused_while_the_step_gemms_are_cublas():
    """CuPy refuses cuBLAS inside a stream capture (cupy/cupy#6290), so a step with cuBLAS GEMMs cannot
    be a graph: refused when the model is made, with the reason, before any device is asked for."""
    with pytest.raises(ValueError, match=r"cuda_graph=True cannot capture a training step yet: CuPy refuses cuBLAS "
                                         r"calls during CUDA stream capture .*cupy/cupy#6290"):
        MLP([2, 2], backend="cupy", backend_options={"cuda_graph": True})


def test_unknown_or_mistyped_backend_options_are_refused():
    from gpubp import InputError
    with pytest.raises(InputError, match=r"unknown backend option\(s\) 'fused'; the options \(of the kernel "
                                         r"backends\) are cublas_weight_grad, cuda_graph, defines, fused_update, naive"):
        MLP([2, 2], backend="emulated", backend_options={"fused": True})
    with pytest.raises(InputError, match="backend option naive must be True or False, got 'yes'"):
        MLP([2, 2], backend="emulated", backend_options={"naive": "yes"})


def test_cuda_graph_needs_cupy():
    with pytest.raises(ValueError, match="cuda_graph=True needs the cupy backend"):
        MLP([2, 2], backend="emulated", backend_options={"cuda_graph": True})
