"""The tutorial examples this project grew from, with fixed numbers."""
import numpy as np
import pytest

from gpubp import MLP
from gpubp.gradcheck import compare
from gpubp.testing import assert_close


def test_example1_single_sigmoid_layer_cross_entropy():
    """3 inputs, 2 sigmoid outputs, cross-entropy; x = [2, 4, −2], label 0:
    one SGD step with η = 0.01 lowers the loss, and the analytic gradient
    equals finite differences."""
    net = MLP([3, 2], loss="cross_entropy", backend="numpy", dtype=np.float64, seed=7)
    x, y = np.array([[2.0, 4.0, -2.0]]), np.array([0])
    before = net.evaluate(x, y)["loss"]
    g = net.backward(x, y)
    # by hand: δ = a − y, ∂C/∂W = xᵀ δ
    a = 1 / (1 + np.exp(-(x @ net.weights[0] + net.biases[0])))
    delta = a - np.array([[1.0, 0.0]])
    assert_close(g.dW[1], x.T @ delta, np.float64, what="dW")
    assert_close(g.db[1], delta[0], np.float64, what="db")
    net.step(x, y, lr=0.01)
    after = net.evaluate(x, y)["loss"]
    assert after < before
    # first-order prediction of the decrease: ΔC ≈ −η ‖∇C‖²
    expected_drop = 0.01 * (np.sum(g.dW[1] ** 2) + np.sum(g.db[1] ** 2))
    assert before - after == pytest.approx(expected_drop, rel=0.05)
    net2 = MLP([3, 2], loss="cross_entropy", backend="numpy", dtype=np.float64, seed=7)
    assert compare(net2, x, y).passed


def test_example2_small_net_mse_backprop_equals_finite_differences(rng):
    net = MLP([3, 4, 2], loss="mse", backend="numpy", dtype=np.float64, seed=11)
    X, y = rng.standard_normal((1, 3)), np.array([[0.0, 1.0]])
    result = compare(net, X, y)
    assert result.passed, str(result)
    assert result.max_rel_error < 1e-8


@pytest.mark.parametrize("label", [0, 1])
def test_example3_binary_cross_entropy_delta_is_a_minus_y_exactly(label, rng):
    net = MLP([5, 1], loss="cross_entropy", backend="numpy", dtype=np.float64, seed=3)
    X = rng.standard_normal((4, 5))
    y = np.full(4, label)
    ws = net._workspace(4)
    ws.a[0][...], ws.y[...] = net.to_device(X, y)
    net._feedforward(ws)
    net.backend.output_delta(net.cost, ws.a[1], ws.y, ws.delta[1])
    np.testing.assert_array_equal(ws.delta[1], ws.a[1] - y[:, None])
    # and it is the true gradient: ∂C/∂b = mean(a − y)
    g = net.backward(X, y)
    assert g.db[1][0] == pytest.approx(np.mean(ws.a[1][:, 0] - label), rel=1e-12)
    assert compare(net, X, y).passed
