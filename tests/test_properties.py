"""Property test: random shapes, dtypes and values thrown at MLP(...), fit,
evaluate, save and load find nothing but InputError, TrainingDiverged or
success (issue 11's bar: no raw traceback from deep inside NumPy)."""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from gpubp import MLP, InputError, TrainingDiverged  # noqa: E402

EXPECTED = (InputError, TrainingDiverged)

widths = st.lists(st.integers(1, 6), min_size=2, max_size=4)
values = st.sampled_from([0.0, 0.5, 1.0, -3.0, 1e3, 1e39, np.nan, np.inf, -np.inf])
dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, object, "U1"])


@st.composite
def arrays(draw, max_rows=6):
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.integers(0, max_rows)) for _ in range(ndim))
    dtype = draw(dtypes)
    fill = draw(values)
    a = np.full(shape, fill) if np.dtype(dtype).kind in "fc" or dtype is object else np.zeros(shape)
    try:
        with np.errstate(all="ignore"):
            return a.astype(dtype)
    except (ValueError, OverflowError):
        return a


@st.composite
def labels(draw, n):
    kind = draw(st.sampled_from(["int", "float", "onehot", "wrong-length", "negative", "2d-odd"]))
    if kind == "int":
        return np.array(draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)), dtype=np.int64)
    if kind == "float":
        return np.full(n, draw(values))
    if kind == "onehot":
        return np.full((n, draw(st.integers(1, 4))), draw(st.sampled_from([0.0, 1.0, 0.3, 2.0])))
    if kind == "wrong-length":
        return np.zeros(n + 1, dtype=np.int64)
    if kind == "negative":
        return -np.ones(n, dtype=np.int64)
    return np.zeros((n, 3, 1))


def attempt(fn, *args, **kwargs):
    """Run fn; anything but success, InputError or TrainingDiverged fails the test with its traceback."""
    try:
        return fn(*args, **kwargs)
    except EXPECTED:
        return None


# gpubp's own SaturationWarning (lr 1e30 saturates every sigmoid) says what to do; the mark above wins
@pytest.mark.filterwarnings("default::gpubp.SaturationWarning")
@pytest.mark.filterwarnings("error::RuntimeWarning")       # a NumPy warning from inside gpubp is unclear too
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=widths, X=arrays(), data=st.data(), dtype=st.sampled_from([np.float32, np.float64]),
       loss=st.sampled_from(["mse", "cross_entropy"]), lr=st.sampled_from([0.1, 1.0, 1e30, -1.0, 0.0]),
       batch=st.sampled_from([1, 3, 100, 0]), epochs=st.sampled_from([1, 2, 0]))
def test_api_raises_nothing_but_clear_errors(tmp_path_factory, sizes, X, data, dtype, loss, lr, batch, epochs):
    net = MLP(sizes, loss=loss, backend="numpy", dtype=dtype, seed=0)
    y = data.draw(labels(len(X) if X.ndim else 1))
    attempt(net.fit, X, y, epochs=epochs, batch_size=batch, lr=lr, progress=False, test_data=(X, y))
    attempt(net.evaluate, X, y)
    attempt(net.predict, X)
    path = tmp_path_factory.mktemp("m") / "model.npz"
    if attempt(net.save, path) is None and path.exists():
        back = MLP.load(path, backend="numpy")
        assert back.sizes == net.sizes


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.one_of(st.integers(-2, 5), st.floats(0, 3), st.text(max_size=2)), max_size=4),
       seed=st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=2)),
       dtype=st.sampled_from([np.float32, "float64", "flaot", np.int32, None]),
       backend=st.sampled_from(["numpy", "auto", "gpu", 3]),
       options=st.sampled_from([None, {}, {"naive": True}, {"nope": 1}, [1]]))
def test_constructor_raises_nothing_but_input_errors(sizes, seed, dtype, backend, options):
    attempt(MLP, sizes, backend=backend, dtype=dtype, seed=seed, backend_options=options)


@settings(max_examples=100, deadline=None)
@given(content=st.binary(max_size=64), keep=st.integers(0, 2000))
def test_load_of_any_bytes_is_an_input_error(tmp_path_factory, content, keep):
    folder = tmp_path_factory.mktemp("f")
    good = folder / "good.npz"
    MLP([3, 2], backend="numpy", seed=0).save(good)
    raw = good.read_bytes()
    bad = folder / "bad.npz"
    bad.write_bytes(raw[:keep] + content + raw[keep + len(content):])
    attempt(MLP.load, bad, backend="numpy")
