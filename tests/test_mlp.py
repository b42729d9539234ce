"""The MLP on the NumPy backend: forward is right, backward is right, SGD
updates follow their formulas, training reaches real accuracy, a step
allocates nothing."""
import io
import tracemalloc

import numpy as np
import pytest

from gpubp import MLP, gradcheck
from gpubp.gradcheck import numerical_gradient
from gpubp.testing import assert_close


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_forward(Ws, bs, X):
    a = np.asarray(X, np.float64)
    for W, b in zip(Ws, bs):
        a = sigmoid(a @ W.astype(np.float64) + b.astype(np.float64))
    return a


# -- forward is right ----------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [[3, 4, 2], [64, 64, 10], [5, 1], [7, 31, 17, 3]])
def test_forward_matches_textbook_sigmoid(sizes, dtype, rng):
    net = MLP(sizes, backend="numpy", dtype=dtype, seed=1)
    X = rng.standard_normal((13, sizes[0]))
    assert_close(net.forward(X), reference_forward(net.weights, net.biases, X), dtype, what="a_L")


def test_sigmoid_saturates_without_overflow():
    net = MLP([1, 1], backend="numpy", dtype=np.float32, seed=0)
    net.W[1][...] = 1.0
    net.b[1][...] = 0.0
    with np.errstate(all="raise"):  # no overflow (nor underflow) for huge |z|
        a = net.forward(np.array([[-1e4], [0.0], [1e4]]))
    assert 0 < a[0, 0] < 2e-38 and a[1, 0] == 0.5 and a[2, 0] == 1.0


def test_sigmoid_is_accurate_in_the_saturated_tail():
    """σ(−20) = 2.06e-9: the tanh form gave exactly 0 in float32 for z below about −17."""
    net = MLP([1, 1], backend="numpy", dtype=np.float32, seed=0)
    net.W[1][...], net.b[1][...] = 1.0, 0.0
    z = np.array([[-20.0], [-30.0], [-80.0], [5.0]])
    a = net.forward(z)[:, 0].astype(np.float64)
    exact = 1 / (1 + np.exp(-z[:, 0]))
    np.testing.assert_allclose(a, exact, rtol=1e-6)


# -- backward is right -------------------------------------------------------------
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("sizes", [[3, 4, 2], [5, 7, 6, 3], [4, 1], [10, 8, 8, 4]])
def test_gradcheck_every_weight_and_bias(sizes, loss):
    result = gradcheck(sizes, loss=loss, seed=3)
    assert result.passed, str(result)
    assert {p.name for p in result.params} == {f"{k}{l}" for k in "Wb" for l in range(1, len(sizes))}
    assert result.max_rel_error < 1e-6


def test_backward_known_values_single_layer():
    # one sigmoid unit, MSE: dC/dw = (a − y) a (1 − a) x, computed by hand
    net = MLP([2, 1], loss="mse", backend="numpy", dtype=np.float64, seed=0)
    net.W[1][...] = [[0.5], [-0.25]]
    net.b[1][...] = [0.1]
    x = np.array([[1.0, 2.0]])
    a = sigmoid(0.5 - 0.5 + 0.1)
    g = net.backward(x, np.array([[1.0]]))
    d = (a - 1.0) * a * (1 - a)
    assert g.dW[0] is None and g.db[0] is None                  # indexed by layer, as net.W: W[0] is None
    np.testing.assert_allclose(g.dW[1], [[d * 1.0], [d * 2.0]], rtol=1e-12)
    np.testing.assert_allclose(g.db[1], [d], rtol=1e-12)
    assert g.loss == pytest.approx(0.5 * (a - 1.0) ** 2, rel=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "emulated"])
def test_grads_dW_l_is_the_derivative_in_W_l(rng, backend):
    """One numbering: grads.dW[l] is the finite difference of the cost in net.W[l] (not in W[l + 1]), for
    layers of different shapes so that a shifted index cannot pass; gradcheck's 'W1' is net.W[1]."""
    net = MLP([4, 6, 3, 2], loss="mse", backend=backend, dtype=np.float64, seed=4)
    X, y = rng.standard_normal((5, 4)), rng.integers(0, 2, 5)
    g = net.backward(X, y)
    assert len(g.dW) == len(net.W) == 4 and g.dW[0] is None and g.db[0] is None
    h = 1e-6
    for l in (1, 2, 3):
        assert g.dW[l].shape == net.W[l].shape and g.db[l].shape == net.b[l].shape
        for params, grad in ((net.W, g.dW), (net.b, g.db)):
            flat = params[l].reshape(-1)
            old = flat[0].copy()
            flat[0] = old + h
            plus = net.evaluate(X, y)["loss"]
            flat[0] = old - h
            minus = net.evaluate(X, y)["loss"]
            flat[0] = old
            assert grad[l].reshape(-1)[0] == pytest.approx((plus - minus) / (2 * h), rel=1e-6, abs=1e-10)
    from gpubp.gradcheck import compare
    result = compare(net, X, y)
    assert [p.name for p in result.params] == ["W1", "W2", "W3", "b1", "b2", "b3"]
    num_dW, _ = numerical_gradient(net, X, y)
    assert [None if d is None else d.shape for d in num_dW] == [None, (4, 6), (6, 3), (3, 2)]


def test_backward_is_mean_over_batch_of_per_sample_gradients(rng):
    net = MLP([4, 5, 3], loss="cross_entropy", backend="numpy", dtype=np.float64, seed=2)
    X, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    batch = net.backward(X, y)
    singles = [net.backward(X[i:i + 1], y[i:i + 1]) for i in range(6)]
    for l in (1, 2):
        assert_close(batch.dW[l], np.mean([s.dW[l] for s in singles], axis=0), np.float64, what=f"dW{l}")
        assert_close(batch.db[l], np.mean([s.db[l] for s in singles], axis=0), np.float64, what=f"db{l}")


# -- SGD updates ---------------------------------------------------------------------
def test_step_applies_momentum_and_weight_decay_formula(rng):
    net = MLP([4, 6, 3], loss="mse", backend="numpy", dtype=np.float64, seed=5)
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    eta, lmbda, mu = 0.3, 0.01, 0.9
    layers = (1, 2)                                 # l = 1 … L: net.W[l], g.dW[l] (index 0 is None)
    W, b = {l: net.W[l].copy() for l in layers}, {l: net.b[l].copy() for l in layers}
    vW = {l: np.zeros_like(W[l]) for l in layers}
    vb = {l: np.zeros_like(b[l]) for l in layers}
    for _ in range(3):  # three steps so the velocity matters
        g = net.backward(X, y)
        for l in layers:
            vW[l] = mu * vW[l] + g.dW[l] + lmbda * W[l]
            vb[l] = mu * vb[l] + g.db[l]
            W[l] = W[l] - eta * vW[l]
            b[l] = b[l] - eta * vb[l]
        net.step(X, y, lr=eta, weight_decay=lmbda, momentum=mu)
        for l in layers:
            assert_close(net.W[l], W[l], np.float64, what=f"W{l}")
            assert_close(net.b[l], b[l], np.float64, what=f"b{l}")


@pytest.mark.parametrize("sizes", [[3, 5, 2], [4, 5, 4, 2]])  # 2nd: batch = a layer's fan-in, so W and δ shapes agree
def test_plain_sgd_step_is_w_minus_eta_grad(rng, sizes):
    net = MLP(sizes, loss="cross_entropy", backend="numpy", dtype=np.float64, seed=6)
    X, y = rng.standard_normal((4, sizes[0])), rng.integers(0, 2, 4)
    W0, b0, g = [None] + net.weights, [None] + net.biases, net.backward(X, y)     # indexed by layer, as net.W
    loss = net.step(X, y, lr=0.7)
    assert loss == pytest.approx(g.loss, rel=1e-12)
    for l in range(1, len(sizes)):
        assert_close(net.W[l], W0[l] - 0.7 * g.dW[l], np.float64, what=f"W{l}")
        assert_close(net.b[l], b0[l] - 0.7 * g.db[l], np.float64, what=f"b{l}")


def test_step_allocates_nothing():
    """With NumPy's ufunc iterator buffer shrunk to 16 elements (it is a fixed
    internal scratch, up to 8192 elements, that broadcasting ufuncs take even
    in place), a steady-state step's peak extra memory stays under 4 KiB
    (Python's own small objects) for a net whose every weight, activation and
    delta array is larger than that (the smallest, B × 10 floats, is 5 KiB):
    no array is allocated, and nothing is kept."""
    old = np.setbufsize(16)
    try:
        for loss in ("mse", "cross_entropy"):
            net = MLP([784, 256, 128, 10], loss=loss, backend="numpy", seed=0)
            r = np.random.default_rng(0)
            X = net.backend.asarray(r.random((500, 784)), net.dtype)
            Y = net.backend.asarray(np.eye(10)[r.integers(0, 10, 500)], net.dtype)
            idx = r.permutation(500)[:128]
            for mu, lmbda in ((0.0, 0.0), (0.9, 1e-3)):
                step = net.stepper(X, Y, lr=0.1, weight_decay=lmbda, momentum=mu)
                step(idx)                         # warm: workspaces and scratch now exist
                tracemalloc.start()
                try:
                    tracemalloc.reset_peak()
                    base = tracemalloc.get_traced_memory()[0]
                    for _ in range(3):
                        step(idx)
                    current, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                assert peak - base < 4096, f"{loss} mu={mu}: a step allocated {peak - base} bytes"
                assert current - base < 256
    finally:
        np.setbufsize(old)


# -- training reaches real accuracy ---------------------------------------------------
def test_fit_digits_reaches_97_percent():
    from gpubp import datasets
    d = datasets.digits()
    net = MLP([64, 64, 10], loss="cross_entropy", backend="numpy", seed=0)
    hist = net.fit(d.X_train, d.y_train, epochs=30, batch_size=10, lr=1.0,
                   test_data=(d.X_test, d.y_test), progress=False)
    acc = net.evaluate(d.X_test, d.y_test)["accuracy"]
    assert acc >= 0.97, f"digits test accuracy {acc:.4f}"
    assert hist.test_accuracy[-1] == acc
    assert hist.loss[-1] < hist.loss[0] / 5
    assert np.mean(net.predict(d.X_test) == d.y_test) == acc


def test_fit_mnist5k_classic_net_reaches_90_percent():
    from gpubp import datasets
    d = datasets.mnist5k()
    assert d.X_train.shape == (4000, 784) and d.X_test.shape == (1000, 784)
    net = MLP([784, 30, 10], loss="cross_entropy", backend="numpy", seed=0)
    net.fit(d.X_train, d.y_train, epochs=30, batch_size=10, lr=0.5, progress=False)
    acc = net.evaluate(d.X_test, d.y_test)["accuracy"]
    assert acc >= 0.90, f"mnist5k held-out accuracy {acc:.4f}"


def test_fit_is_reproducible_with_seed(rng):
    X, y = rng.random((50, 6)), rng.integers(0, 3, 50)
    runs = []
    for _ in range(2):
        net = MLP([6, 8, 3], backend="numpy", seed=42)
        net.fit(X, y, epochs=3, batch_size=7, lr=0.5, momentum=0.5, progress=False)
        runs.append(net.weights[0])
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("check_every", [0.0, 1e9], ids=["every-step", "at-epoch-end"])
def test_fit_stops_on_nan_loss_naming_epoch_and_step(rng, monkeypatch, check_every):
    """The step is named exactly however late the loss is read back."""
    from gpubp import TrainingDiverged
    monkeypatch.setattr(MLP, "CHECK_EVERY", check_every)
    net = MLP([4, 3, 2], loss="mse", backend="numpy", seed=0)
    X, y = rng.random((20, 4)), rng.integers(0, 2, 20)

    def poison(epoch, hist):
        net.W[1][0, 0] = np.nan   # as a blown-up weight would be
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1 of 4"):
        net.fit(X, y, epochs=3, batch_size=5, lr=0.1, shuffle=False, progress=False, callback=poison)


def test_fit_epoch_loss_is_the_row_weighted_mean_of_its_steps(rng):
    """30 rows in batches of 7: four steps of 7 and a last one of 2, each
    step's mean cost weighted by its rows (the same steps taken one by one)."""
    X, y = rng.random((30, 5)), rng.integers(0, 3, 30)
    fitted = MLP([5, 4, 3], backend="numpy", dtype=np.float64, seed=1)
    hist = fitted.fit(X, y, epochs=2, batch_size=7, lr=0.5, shuffle=False, progress=False)
    stepped = MLP([5, 4, 3], backend="numpy", dtype=np.float64, seed=1)
    for epoch in range(2):
        costs = [stepped.step(X[k:k + 7], y[k:k + 7], lr=0.5) for k in range(0, 30, 7)]
        expected = (7 * sum(costs[:4]) + 2 * costs[4]) / 30
        assert hist.loss[epoch] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(fitted.weights[0], stepped.weights[0], rtol=1e-12)


def test_fit_reads_the_loss_back_only_when_due(rng, monkeypatch):
    """Each step's cost stays on the device: with the bar off and the check
    interval long, one read per epoch (a GPU never waits on a step)."""
    monkeypatch.setattr(MLP, "CHECK_EVERY", 1e9)
    net = MLP([5, 4, 3], backend="numpy", seed=1)
    reads = []
    to_numpy = net.backend.to_numpy
    monkeypatch.setattr(net.backend, "to_numpy", lambda x: reads.append(x.shape) or to_numpy(x))
    net.fit(rng.random((100, 5)), rng.integers(0, 3, 100), epochs=3, batch_size=10, lr=0.5, progress=False)
    assert reads == [(10, 10)] * 3        # the epoch's 10 steps × 10 per-sample costs, read at once


def test_fit_progress_bar_shows_loss(rng):
    from gpubp.progress import Progress

    class TTY(io.StringIO):
        def isatty(self):
            return True
    out = TTY()
    bar = Progress(4, enabled=True, stream=out)
    for k in range(4):
        if bar.tick():
            bar.draw(f"epoch 1/1 loss {0.5 - k / 10:.4f}")
    text = out.getvalue()
    assert "100%" in text and "4/4" in text and "loss 0.2000" in text      # tqdm's bar, at the end, with the loss


def test_progress_without_tqdm_prints_epoch_lines_only(monkeypatch):
    import builtins
    from gpubp.progress import Progress
    from gpubp.mlp import History

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "tqdm" else real_import(name, *a, **k))

    class TTY(io.StringIO):
        def isatty(self):
            return True
    out = TTY()
    bar = Progress(2, enabled=True, stream=out)
    assert bar.bar is None and not bar.tick()
    bar.epoch_done(1, 1, History(loss=[0.25], seconds=[0.5]))
    bar.close()
    assert out.getvalue() == "epoch 1/1: loss 0.2500 (0.50s)\n"


def test_fit_prints_epoch_lines_when_asked(rng, capsys):
    X, y = rng.random((30, 4)), rng.integers(0, 2, 30)
    net = MLP([4, 3, 2], backend="numpy", seed=0)
    net.fit(X, y, epochs=2, batch_size=10, lr=0.5, test_data=(X, y), progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2: loss" in err and "epoch 2/2" in err and "test accuracy" in err


# -- initialisation and backend choice ---------------------------------------------------
def test_initialisation_scales():
    scaled = MLP([400, 300, 10], init="scaled", backend="numpy", seed=0, dtype=np.float64)
    normal = MLP([400, 300, 10], init="normal", backend="numpy", seed=0, dtype=np.float64)
    assert scaled.weights[0].std() == pytest.approx(1 / np.sqrt(400), rel=0.02)
    assert normal.weights[0].std() == pytest.approx(1.0, rel=0.02)
    assert normal.biases[0].std() == pytest.approx(1.0, rel=0.2)
    assert scaled.weights[0].dtype == np.float64 and MLP([2, 2], backend="numpy").weights[0].dtype == np.float32


def test_auto_backend_says_what_it_picked():
    from gpubp.device import cuda_status
    net = MLP([2, 2], backend="auto")
    ok, why = cuda_status()
    assert net.backend.name == ("cupy" if ok else "numpy")
    assert net.backend_reason.startswith(f"auto: picked {net.backend.name}") and why in net.backend_reason


def test_numerical_gradient_helper_matches_known_derivative():
    # C(b) for one unit with zero weights: a = σ(b), C = ½(a − 1)²; dC/db = (a − 1) a (1 − a)
    net = MLP([1, 1], loss="mse", backend="numpy", dtype=np.float64, seed=0)
    net.W[1][...] = 0.0
    net.b[1][...] = 0.3
    dW, db = numerical_gradient(net, np.zeros((1, 1)), np.ones((1, 1)))
    a = sigmoid(0.3)
    assert dW[0] is None and db[0] is None                        # indexed by layer, as net.W
    assert db[1][0] == pytest.approx((a - 1) * a * (1 - a), rel=1e-8)


def test_a_stepper_step_is_the_public_step(rng):
    """net.stepper(...)(idx) on device data moves the weights as net.step does on the same rows."""
    X, y = rng.random((12, 5)), rng.integers(0, 3, 12)
    a = MLP([5, 4, 3], backend="numpy", dtype=np.float64, seed=1)
    b = MLP([5, 4, 3], backend="numpy", dtype=np.float64, seed=1)
    step = a.stepper(*a.to_device(X, y), lr=0.5, momentum=0.9)
    idx = np.array([3, 0, 7, 11])
    losses = np.empty(2)
    for k in range(2):
        step(idx, loss_out=losses[k:k + 1])
        expected = b.step(X[idx], y[idx], lr=0.5, momentum=0.9)
        assert losses[k] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(a.weights[0], b.weights[0])


def test_each_public_call_checks_its_data_once(rng, monkeypatch):
    """The data is checked (a pass over it) once per call: fit checks X and X_test once, not per epoch."""
    import gpubp.mlp as mlp
    calls = []
    check_X = mlp.check_X
    monkeypatch.setattr(mlp, "check_X", lambda X, *a, **k: calls.append(a[1] if len(a) > 1 else "X")
                        or check_X(X, *a, **k))
    net = MLP([4, 3, 2], backend="numpy", seed=0)
    X, y = rng.random((20, 4)), rng.integers(0, 2, 20)
    for call in (lambda: net.step(X, y, lr=0.1), lambda: net.backward(X, y), lambda: net.evaluate(X, y),
                 lambda: net.forward(X)):
        calls.clear()
        call()
        assert calls == ["X"]
    calls.clear()
    net.fit(X, y, epochs=3, batch_size=5, lr=0.1, test_data=(X, y), progress=False)
    assert calls == ["X", "X_test"]


@pytest.mark.parametrize("targets", [False, True], ids=["labels", "targets"])
def test_public_step_fast_path_matches_the_checked_path(rng, targets):
    """Device arrays of the model's dtype take the fast path (O(1) checks and one reduction, X read in
    place); the update is the one the fully checked path makes from lists."""
    X = rng.random((6, 5)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    yy = np.eye(3, dtype=np.float32)[y] if targets else y.astype(np.int64)
    fast, slow = MLP([5, 4, 3], backend="numpy", seed=1), MLP([5, 4, 3], backend="numpy", seed=1)
    X_before = X.copy()
    for _ in range(3):
        a = fast.step(X, yy, lr=0.5, momentum=0.9)
        b = slow.step(X.tolist(), y.tolist(), lr=0.5, momentum=0.9)
        assert a == pytest.approx(b, rel=1e-6)
    np.testing.assert_array_equal(fast.weights[0], slow.weights[0])
    np.testing.assert_array_equal(X, X_before)                     # read, never written
    assert fast._workspace(6).a[0] is not X                        # the workspace keeps its own array


@pytest.mark.parametrize("bad, message", [
    ("nan", r"X contains 1 NaN/Inf value\(s\), the first at row 2, column 3"),
    ("negative-label", r"labels must be integers in \[0, 3\) .* found -1"),
    ("label-too-big", r"labels must be integers in \[0, 3\) .* found 3"),
])
def test_public_step_fast_path_still_refuses_bad_values(rng, bad, message):
    from gpubp import InputError
    X = rng.random((6, 5)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    if bad == "nan":
        X[2, 3] = np.nan
    else:
        y[4] = -1 if bad == "negative-label" else 3
    net = MLP([5, 4, 3], backend="numpy", seed=1)
    before = net.weights[0]
    with pytest.raises(InputError, match=message):
        net.step(X, y, lr=0.5)
    np.testing.assert_array_equal(net.weights[0], before)
