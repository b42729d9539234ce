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
