"""Bad input and faults: a clear error that names the problem and the fix, and
nothing lost.  Each case of issue 11 has its regression test here."""
import numpy as np
import pytest

from gpubp import MLP, InputError, TrainingDiverged


# -- wrong results and lost work ------------------------------------------------------------------

def _diverging_fit(backend):
    rng = np.random.default_rng(0)
    X, y = rng.random((20, 4)), rng.integers(0, 3, 20)
    net = MLP([4, 5, 3], loss="cross_entropy", backend=backend, seed=0)
    with pytest.raises(TrainingDiverged) as err:
        net.fit(X, y, epochs=3, batch_size=5, lr=3e38, progress=False)
    return str(err.value)


def test_a_nan_activation_is_a_nan_loss_on_the_kernel_path_too():
    """delta.cu clamped with fmax, which returns the non-NaN operand: a NaN activation gave a finite
    cross-entropy (3·(−ln 1e-7) = 48.35 for 3 outputs) and the emulated/CUDA fit never diverged."""
    assert "became NaN or infinite in epoch 1" in _diverging_fit("numpy")   # its η·δ overflows float32 first
    # the kernels' update keeps the weights finite a while longer; then the NaN reaches the loss
    assert _diverging_fit("emulated").startswith("the training loss became nan at epoch 2, step 2 of 4")


def test_output_delta_ce_keeps_a_nan_activation():
    from gpubp.cuda import launchers, sources
    ks = sources.emulated_kernels()
    a = np.full((2, 3), 0.5, np.float32)
    a[1, 1] = np.nan
    y = np.eye(3, dtype=np.float32)[:2]
    for naive in (True, False):
        delta, loss = np.empty_like(a), np.empty(2, np.float32)
        launchers.output_delta(ks, "output_delta_ce", a, y, delta, loss, naive=naive)
        assert np.isfinite(loss[0]) and np.isnan(loss[1])


def test_a_divergence_at_the_very_last_step_is_reported():
    """Each step's loss is taken before its update, so the last update had no check after it."""
    X = np.full((8, 3), 1e30)              # cross-entropy, no hidden layer: δ = a − y, dW = Xᵀδ/B ≈ 5e29
    y = np.arange(8) % 2
    net = MLP([3, 2], loss="cross_entropy", backend="numpy", dtype=np.float64, seed=0)
    with pytest.raises(TrainingDiverged, match=r"W1 became NaN or infinite in epoch 1 while its step losses stayed "
                                               r"finite .*lower the learning rate \(lr=1e\+300\)"):
        net.fit(X, y, epochs=1, batch_size=8, lr=1e300, progress=False)     # one step: the last


def test_save_refuses_a_model_that_could_not_be_loaded(tmp_path):
    net = MLP([3, 2], backend="numpy", seed=0)
    net.W[1][0, 0] = np.inf
    path = tmp_path / "m.npz"
    with pytest.raises(InputError, match=rf"the model's W1 contains NaN/Inf, so it is not saved to {path}"):
        net.save(path)
    assert list(tmp_path.iterdir()) == []


def test_inputs_that_overflow_the_model_dtype_are_named():
    net = MLP([3, 2], backend="numpy", seed=0)                   # float32
    X = np.zeros((4, 3))
    X[2, 1] = 1e39
    message = r"X\[2, 1\] = 1e\+39 overflows float32 \(largest 3.403e\+38; 1 value\(s\) do\)"
    for call in (lambda: net.backward(X, [0, 1, 0, 1]), lambda: net.fit(X, [0, 1, 0, 1], progress=False),
                 lambda: net.forward(X), lambda: net.evaluate(X, [0, 1, 0, 1])):
        with pytest.raises(InputError, match=message):
            call()
    assert np.isfinite(MLP([3, 2], backend="numpy", dtype=np.float64, seed=0).forward(X)).all()


# -- unclear errors: arguments -----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(dtype="flaot32"), r"dtype 'flaot32' is not a NumPy dtype; use np.float32"),
    (dict(seed=-1), r"seed must be a non-negative integer or None, got -1"),
    (dict(seed="abc"), r"seed must be a non-negative integer or None, got 'abc'"),
    (dict(backend="auto", backend_options={"naiv": True}), r"unknown backend option\(s\) 'naiv'; the options .* naive"),
    (dict(backend="numpy", backend_options={"naive": True}), r"the numpy backend takes no backend_options"),
    (dict(backend="emulated", backend_options=[("naive", True)]), r"backend_options must be a dict"),
    (dict(backend="tpu"), r"unknown backend 'tpu'; choose one of auto, numpy, emulated, cupy"),
])
def test_bad_constructor_arguments(kwargs, message):
    kwargs.setdefault("backend", "numpy")
    with pytest.raises(InputError, match=message):
        MLP([3, 2], **kwargs)


def test_auto_says_it_ignored_kernel_options_on_numpy():
    from gpubp.device import cuda_status
    if cuda_status()[0]:
        pytest.skip("a CUDA device is present: auto picks cupy")
    net = MLP([3, 2], backend="auto", backend_options={"naive": True})
    assert net.backend.name == "numpy" and "backend_options ['naive'] ignored" in net.backend_reason


def test_gradcheck_batch_must_be_positive():
    from gpubp import gradcheck
    with pytest.raises(InputError, match="batch must be a positive integer .* got 0"):
        gradcheck([3, 2], batch=0)


def test_pandas_inputs_just_work():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((12, 3)), columns=list("abc"))
    y = pd.Series(rng.integers(0, 2, 12))
    a, b = MLP([3, 2], backend="numpy", seed=0), MLP([3, 2], backend="numpy", seed=0)
    a.fit(X, y, epochs=2, batch_size=4, lr=0.5, progress=False, test_data=(X, y))
    b.fit(X.to_numpy(), y.to_numpy(), epochs=2, batch_size=4, lr=0.5, progress=False)
    np.testing.assert_array_equal(a.weights[0], b.weights[0])
    assert a.evaluate(X, y) == b.evaluate(X.to_numpy(), y.to_numpy())


def test_ragged_lists_are_named():
    net = MLP([3, 2], backend="numpy", seed=0)
    with pytest.raises(InputError, match=r"X is ragged \(its rows have different lengths\)"):
        net.forward([[1, 2, 3], [1, 2]])
    with pytest.raises(InputError, match=r"y is ragged"):
        net.fit([[1, 2, 3], [4, 5, 6]], [[0, 1], [1]], progress=False)


@pytest.mark.parametrize("test_data, message", [
    ((np.zeros((4, 3)),), r"test_data must be a pair \(X_test, y_test\), got tuple of 1"),
    ({"X": np.zeros((4, 3)), "y": np.zeros(4)}, r"test_data must be a pair \(X_test, y_test\), got dict"),
    ((np.zeros((4, 3)), np.zeros(3, int)), r"y_test has 3 sample\(s\) .* but X_test has 4"),
])
def test_test_data_errors_name_the_test_data(test_data, message):
    net = MLP([3, 2], backend="numpy", seed=0)
    with pytest.raises(InputError, match=message):
        net.fit(np.zeros((4, 3)), [0, 1, 0, 1], epochs=1, progress=False, test_data=test_data)
