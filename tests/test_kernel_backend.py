"""The MLP's GPU path (the kernel backend) against the NumPy backend.

On the emulated device the exact kernel source runs on the CPU through the
same launchers and backend the CuPy path uses; the ``gpu`` variants run the
very same tests on a real device and skip without one."""
import numpy as np
import pytest

from gpubp import MLP
from gpubp.check.fit import HYPER, OPTIONS, OWN_GEMM_NETS, fit_parity
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
    for l in (1, 2):                      # indexed by layer, as W
        assert_close(g_dev.dW[l], g_ref.dW[l], np.float64, what=f"dW{l}")
        assert_close(g_dev.db[l], g_ref.db[l], np.float64, what=f"db{l}")
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


def test_cuda_graph_is_refused_with_cublas_gemms():
    """CuPy refuses cuBLAS inside a stream capture (cupy/cupy#6290): a graph needs gemm='own' (implied
    by cuda_graph alone); cuBLAS asked for with it is refused when the model is made, before any device."""
    for options in ({"cuda_graph": True, "gemm": "cublas"}, {"cuda_graph": True, "cublas_weight_grad": True}):
        with pytest.raises(ValueError, match=r"cuda_graph=True cannot capture a step whose GEMMs are cuBLAS: CuPy "
                                             r"refuses cuBLAS calls during CUDA stream capture .*cupy/cupy#6290"):
            MLP([2, 2], backend="cupy", backend_options=options)
    assert MLP([2, 2], backend="emulated", backend_options={"cuda_graph": True}).backend.gemm == "own"


def test_unknown_or_mistyped_backend_options_are_refused():
    from gpubp import InputError
    with pytest.raises(InputError, match=r"unknown backend option\(s\) 'fused'; the options \(of the kernel "
                                         r"backends\) are cublas_weight_grad, cuda_graph, defines, fused_step, "
                                         r"fused_update, gemm, naive, steps_per_launch"):
        MLP([2, 2], backend="emulated", backend_options={"fused": True})
    with pytest.raises(InputError, match="backend option naive must be True or False, got 'yes'"):
        MLP([2, 2], backend="emulated", backend_options={"naive": "yes"})


def test_gemm_option_is_checked():
    from gpubp import InputError
    with pytest.raises(InputError, match="backend option gemm must be 'cublas', 'own' or 'auto', got 'mine'"):
        MLP([2, 2], backend="emulated", backend_options={"gemm": "mine"})
    with pytest.raises(InputError, match="gemm='own' runs every product on gpubp's kernels; cublas_weight_grad"):
        MLP([2, 2], backend="emulated", backend_options={"gemm": "own", "cublas_weight_grad": True})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sizes, batch", OWN_GEMM_NETS, ids=["784-30-10", "63-65-17", "200-129-67-3"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_fit_on_own_gemms_matches_numpy(device, sizes, batch, loss):
    """The whole step on gpubp's kernels (forward and BP2 GEMMs with their epilogues fused, the weight
    gradient with the update fused) against NumPy after 20 steps, to float32's 1e-5."""
    need(device)
    assert fit_parity(device, {"gemm": "own"}, loss, 0.9, 1e-3, sizes=sizes, batch=batch) < 1e-4


def test_the_graph_step_reaches_no_cublas_on_the_emulated_device(launched):
    """What a CUDA graph of the step would hold, checked without a GPU: the step runs once with the array
    module replaced by a recorder.  With gemm='own' it calls nothing of the array module at all (the
    gather is gather.cu's kernel): no matmul, nothing that syncs; a step that calls matmul is refused."""
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 13)), rng.integers(0, 5, 40)
    for options, expected in (({"cuda_graph": True}, set()),
                              ({"cuda_graph": True, "fused_update": False}, {"multiply"})):
        net = MLP([13, 17, 9, 5], backend="emulated", seed=3, backend_options=options)
        step = net.stepper(*net.to_device(X, y), lr=0.5)
        step(np.arange(10))                     # eager: makes the scratch arrays, as the cupy backend's first run
        launched.clear()
        step(np.arange(10, 20))                 # the run a capture would hold: recorded
        (calls,) = net.backend.capture_calls.values()
        assert set(calls) == expected, calls
        assert {"gather_rows_f32", "gemm_bias_sigmoid_f32", "gemm_sigmoid_delta_f32", "output_delta_ce_f32" if net.cost.name ==
                "cross_entropy" else "output_delta_mse_f32"} <= set(launched)
        assert not any(name.startswith(("bias_sigmoid", "sigmoid_delta")) for name in launched)   # fused
    bk = MLP([3, 2], backend="emulated", backend_options={"cuda_graph": True}).backend
    matmul_step = lambda idx: bk.xp.matmul(np.ones((2, 2)), np.ones((2, 2)))       # noqa: E731
    bk.run_step(matmul_step, np.arange(2), key="k")                                  # the eager first run
    with pytest.raises(RuntimeError, match=r"this training step calls xp.matmul, which a CUDA graph cannot capture"):
        bk.run_step(matmul_step, np.arange(2), key="k")


@pytest.mark.gpu
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_cuda_graph_fit_matches_numpy(loss):
    need("cupy")
    rng = np.random.default_rng(7)
    X, y = rng.random((105, 13)), rng.integers(0, 5, 105)   # batches of 10 and a last one of 5: two graphs
    ref = MLP([13, 17, 5], loss=loss, backend="numpy", seed=3)
    dev = MLP([13, 17, 5], loss=loss, backend="cupy", seed=3, backend_options={"cuda_graph": True})
    hists = [n.fit(X, y, epochs=2, batch_size=10, lr=0.8, momentum=0.9, progress=False) for n in (ref, dev)]
    for l in range(2):
        assert_close(dev.weights[l], ref.weights[l], np.float32, what=f"W{l + 1} after 22 graph replays")
    np.testing.assert_allclose(hists[1].loss, hists[0].loss, rtol=1e-5)
    assert dev.backend._graphs == {}        # released when fit returns
