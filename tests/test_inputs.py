"""Bad input gets an error that names the problem and the fix."""
import numpy as np
import pytest

from gpubp import MLP, InputError


@pytest.fixture
def net():
    return MLP([4, 3, 3], backend="numpy", seed=0)


@pytest.mark.parametrize("sizes, message", [
    ([5], "at least 2 entries"),
    ([], "at least 2 entries"),
    ([4, 0, 2], r"sizes\[1\] = 0: every layer width must be a positive integer"),
    ([4, -3, 2], r"sizes\[1\] = -3"),
    ([4, 2.5, 2], r"sizes\[1\] = 2.5"),
    (7, "must be a list of layer widths"),
])
def test_bad_sizes(sizes, message):
    with pytest.raises(InputError, match=message):
        MLP(sizes, backend="numpy")


def test_bad_loss_dtype_init_backend():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        MLP([2, 2], loss="hinge", backend="numpy")
    with pytest.raises(InputError, match="dtype int32 is not supported; use float32"):
        MLP([2, 2], dtype=np.int32, backend="numpy")
    with pytest.raises(InputError, match="init must be 'scaled' or 'normal'"):
        MLP([2, 2], init="xavier", backend="numpy")
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        MLP([2, 2], backend="tpu")


@pytest.mark.parametrize("X, message", [
    (np.zeros((5, 3)), r"X has 3 features per sample but the input layer has 4 \(sizes\[0\]\)"),
    (np.zeros(4), r"1-D with shape \(4,\).*X.reshape\(1, -1\)"),
    (np.zeros((0, 4)), r"X is empty \(0 samples\)"),
    (np.array([["a", "b", "c", "d"]]), r"dtype <U1, which is not numeric"),
    (np.array([[1, 2, np.nan, 4.0]]), r"NaN/Inf value\(s\), the first at row 0, column 2"),
    (np.array([[1, 2, 3, np.inf]]), r"the first at row 0, column 3"),
    (np.zeros((2, 2, 4)), r"must be 2-D"),
])
def test_bad_X(net, X, message):
    y = np.zeros(max(1, len(X)), dtype=int)
    for call in (lambda: net.fit(X, y[:len(X)], epochs=1, progress=False),
                 lambda: net.step(X, y[:len(X)], lr=0.1), lambda: net.predict(X)):
        with pytest.raises(InputError, match=message):
            call()


@pytest.mark.parametrize("y, message", [
    (np.array([0, 1, 3]), r"labels must be integers in \[0, 3\) for a 3-unit output layer; found 3 \(at index 2\)"),
    (np.array([0, -1, 2]), r"found -1 \(at index 1\)"),
    (np.array([0, 1]), r"y has 2 sample\(s\) .* but X has 3"),
    (np.zeros((3, 2)), r"2 target columns for a 3-unit output layer"),
    (np.array([0.5, 1, 2]), r"non-integer values"),
    (np.array(["a", "b", "c"]), r"not numeric"),
    (np.full((3, 3), 2.0), r"targets must lie in \[0, 1\]"),
    (np.array([0, np.nan, 1]), r"NaN/Inf"),
])
def test_bad_labels(net, y, message):
    X = np.zeros((3, 4))
    with pytest.raises(InputError, match=message):
        net.fit(X, y, epochs=1, progress=False)
    with pytest.raises(InputError, match=message):
        net.evaluate(X, y)


def test_bad_hyperparameters(net):
    X, y = np.zeros((3, 4)), np.array([0, 1, 2])
    with pytest.raises(InputError, match=r"lr must be a finite number > 0, got -1"):
        net.step(X, y, lr=-1)
    with pytest.raises(InputError, match=r"momentum must be in \[0, 1\)"):
        net.step(X, y, lr=0.1, momentum=1.5)
    with pytest.raises(InputError, match=r"weight_decay must be a finite number ≥ 0"):
        net.step(X, y, lr=0.1, weight_decay=float("nan"))
    with pytest.raises(InputError, match="epochs must be a positive integer"):
        net.fit(X, y, epochs=0)
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        net.fit(X, y, batch_size=2.5)


def test_binary_output_takes_01_labels():
    net = MLP([2, 1], loss="cross_entropy", backend="numpy", seed=0)
    with pytest.raises(InputError, match="1-unit output layer takes 0/1 labels; found 2"):
        net.evaluate(np.zeros((2, 2)), np.array([0, 2]))
    assert net.evaluate(np.zeros((2, 2)), np.array([0, 1]))["n"] == 2


@pytest.mark.parametrize("test_data, message", [
    ((np.zeros((6, 4)), np.array([0, 1, 2, 0, 1, 7])), r"labels must be integers in \[0, 3\).*found 7"),
    ((np.zeros((6, 4)), np.zeros(5, int)), r"y_test has 5 sample\(s\) \(shape \(5,\)\) but X_test has 6"),
    ((np.zeros((6, 5)), np.zeros(6, int)), r"X_test has 5 features per sample"),
    ((np.full((6, 4), np.nan), np.zeros(6, int)), r"X_test contains 24 NaN/Inf"),
])
def test_bad_test_data_is_refused_before_the_first_epoch(net, rng, test_data, message):
    before = net.weights[0]
    epochs = []
    with pytest.raises(InputError, match=message):
        net.fit(rng.random((10, 4)), rng.integers(0, 3, 10), epochs=2, batch_size=5, lr=0.1, progress=False,
                test_data=test_data, callback=lambda e, h: epochs.append(e))
    assert epochs == [] and np.array_equal(net.weights[0], before)     # nothing trained


def test_stepper_refuses_arrays_that_are_not_the_models(net):
    X, Y = net.to_device(np.zeros((6, 4)), np.zeros(6, int))
    with pytest.raises(InputError, match=r"stepper: X must be a C-contiguous numpy array of float32 with 4 columns "
                                         r"\(got ndarray float64 \(6, 4\)\); pass the arrays net.to_device"):
        net.stepper(X.astype(np.float64), Y, lr=0.1)
    with pytest.raises(InputError, match=r"stepper: Y must be .* with 3 columns"):
        net.stepper(X, Y[:, :2].copy(), lr=0.1)
    with pytest.raises(InputError, match=r"stepper: Y must be a C-contiguous"):
        net.stepper(X, np.asfortranarray(Y), lr=0.1)
    with pytest.raises(InputError, match="X has 6 rows but Y has 5"):
        net.stepper(X, Y[:5], lr=0.1)
    with pytest.raises(InputError, match="lr must be a finite number > 0"):
        net.stepper(X, Y, lr=0)
