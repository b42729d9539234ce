"""Robustness 3 (issue 18): step and stepper refuse what they cannot train on, on every backend alike;
an output file never costs the trained model; the IDX reader, kernel limits and the rest.  The
data-parallel cases run under mpiexec in tests/test_parallel.py."""
import warnings

import numpy as np
import pytest

from gpubp import MLP, InputError, SaturationWarning
from gpubp.cli import main

BACKENDS = ["numpy", "emulated"]


def _data(n=20, n_in=4, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, n_in)).astype(np.float32), rng.integers(0, n_out, n)


# -- step(X, y, lr) --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_step_with_y_none_is_refused_as_fit_refuses_it(backend):
    """step(X, None, 0.5) returned nan and turned every weight NaN."""
    X, _ = _data()
    net = MLP([4, 5, 3], backend=backend, seed=0)
    before = net.weights
    message = r"y is None; pass what X should produce: 20 integer class labels in \[0, 3\), or targets of shape " \
              r"\(20, 3\) in \[0, 1\]"
    with pytest.raises(InputError, match=message):
        net.step(X, None, 0.5)
    with pytest.raises(InputError, match=message):
        net.fit(X, None, epochs=1, progress=False)
    for w, w0 in zip(net.weights, before):
        np.testing.assert_array_equal(w, w0)


@pytest.mark.parametrize("y, message", [
    (np.full(20, 7), r"labels must be integers in \[0, 3\)"),
    (np.full((20, 3), 2.0, np.float32), r"targets must lie in \[0, 1\]"),
    (np.full((20, 3), np.nan, np.float32), r"y contains NaN/Inf"),
    (np.zeros(19, np.int64), r"y has 19 sample\(s\)"),
])
def test_step_refuses_every_y_that_fit_refuses(y, message):
    X, _ = _data()
    net = MLP([4, 5, 3], backend="numpy", seed=0)
    for call in (lambda: net.step(X, y, 0.5), lambda: net.fit(X, y, epochs=1, progress=False)):
        with pytest.raises(InputError, match=message):
            call()


# -- stepper(X, Y) and step(idx) ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("idx, message", [
    (np.array([25], np.int64), r"row index 25 is out of range for X's 20 rows; every index must be in \[0, 20\)"),
    (np.array([3, -1], np.int64), r"row index -1 is out of range for X's 20 rows"),
    (np.array([], np.int64), r"idx must be a non-empty 1-D int64 numpy array of row indices, got ndarray int64 \(0,\)"),
    (np.array([1.0, 2.0]), r"idx must be a non-empty 1-D int64 numpy array .* got ndarray float64 \(2,\)"),
    (np.array([[1, 2]], np.int64), r"idx must be a non-empty 1-D int64 .* got ndarray int64 \(1, 2\)"),
    ([1, 2], r"idx must be a non-empty 1-D int64 numpy array .* got list"),
])
def test_stepper_refuses_bad_indices_alike_on_every_backend(backend, idx, message):
    """NumPy's take(mode="clip") trained on row 19 for index 25 and on row 0 for -1, the emulated
    backend raised a raw IndexError, and an empty index divided by zero."""
    X, y = _data()
    net = MLP([4, 5, 3], backend=backend, seed=0)
    step = net.stepper(*net.to_device(X, y), lr=0.5)
    before = net.weights
    with pytest.raises(InputError, match=message):
        step(idx)
    for w, w0 in zip(net.weights, before):
        np.testing.assert_array_equal(w, w0)
    step(np.array([0, 19], np.int64))                    # the stepper still works: both ends of the range
    assert not np.array_equal(net.weights[0], before[0])


def test_stepper_checks_its_arrays_as_step_does():
    X, y = _data()
    net = MLP([4, 5, 3], backend="numpy", seed=0)
    Xd, Yd = net.to_device(X, y)
    bad = Xd.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match=r"stepper: X contains 1 NaN/Inf value\(s\), the first at row 3, column 2"):
        net.stepper(bad, Yd, lr=0.5)
    with pytest.raises(InputError, match=r"stepper: Y holds targets outside \[0, 1\]"):
        net.stepper(Xd, Yd * 2, lr=0.5)
    with pytest.raises(InputError, match=r"stepper: X has no rows"):
        net.stepper(Xd[:0], Yd[:0], lr=0.5)
    step = net.stepper(Xd, Yd, lr=0.5)
    with pytest.raises(InputError, match=r"loss_out must be a 1-element float32 array"):
        step(np.arange(4, dtype=np.int64), loss_out=np.zeros(2, np.float32))


def test_steps_on_fits_checked_order_give_the_same_weights_as_checked_steps():
    """fit's own slices of the epoch order skip the range reduction; the result is the same."""
    X, y = _data(n=30)
    a, b = MLP([4, 5, 3], backend="numpy", seed=1), MLP([4, 5, 3], backend="numpy", seed=1)
    sa, sb = a.stepper(*a.to_device(X, y), lr=0.5), b.stepper(*b.to_device(X, y), lr=0.5)
    order = sa.order(np.random.default_rng(0).permutation(30))
    for k in range(3):
        sa(order[k * 10:(k + 1) * 10])
        sb(np.array(order[k * 10:(k + 1) * 10]))         # a copy: checked in full
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)


# -- gpubp train's outputs ---------------------------------------------------------------------------

@pytest.mark.parametrize("plot, message", [
    ("same", r"--plot .*m\.npz is the file --save writes the model to"),
    ("c.txt", r"--plot .*c\.txt: matplotlib cannot write \.txt files; use one of \.png, \.pdf, \.svg"),
])
def test_plot_is_checked_in_full_before_training(tmp_path, capsys, plot, message):
    pytest.importorskip("matplotlib")
    model = tmp_path / "m.npz"
    assert main(["train", "--epochs", "1", "--quiet", "--save", str(model),
                 "--plot", str(model if plot == "same" else tmp_path / plot)]) == 2
    import re
    assert re.search(message, capsys.readouterr().err)
    assert not model.exists()                             # refused before training: nothing was run


def test_a_plot_that_fails_after_training_never_loses_the_model(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    import errno
    from gpubp import cli

    def full_disk(hist, path, title):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cli, "_plot_history", full_disk)
    model, png = tmp_path / "m.npz", tmp_path / "c.png"
    assert main(["train", "--epochs", "1", "--quiet", "--save", str(model), "--plot", str(png)]) == 1
    err = capsys.readouterr().err
    assert f"could not be written to {png} (OSError: [Errno 28] No space left on device); the model is saved in " \
           f"{model}" in err
    assert MLP.load(model, backend="numpy").sizes == [64, 64, 10]


def test_plot_without_an_extension_reports_the_file_it_wrote(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["train", "--epochs", "1", "--quiet", "--plot", str(tmp_path / "curves")]) == 0
    assert f"loss and accuracy curves: {tmp_path / 'curves.png'}" in capsys.readouterr().out
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["--data-dir", "."], "--data-dir is for --dataset mnist"),
    (["--download"], "--download fetches the full MNIST (--dataset mnist); 'digits' needs no download"),
])
def test_flags_that_do_not_apply_are_refused(argv, message, capsys):
    assert main(["train", "--epochs", "1", "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err


def test_allreduce_without_ranks_is_warned(capsys):
    assert main(["train", "--epochs", "1", "--quiet", "--allreduce", "host"]) == 0
    assert "warning: --allreduce only applies to a data-parallel run" in capsys.readouterr().err


def test_check_part_naming_nothing_is_refused(tmp_path, capsys):
    assert main(["check", "--part", ",", "--out", str(tmp_path)]) == 2
    assert "--part ',' names no part" in capsys.readouterr().err


def test_bench_groups_accept_spaces(monkeypatch, tmp_path):
    from gpubp import bench
    seen = []
    monkeypatch.setattr(bench, "run", lambda **k: seen.append(k["groups"]) or (_ for _ in ()).throw(SystemExit(0)))
    with pytest.raises(SystemExit):
        main(["bench", "--groups", "step, kernel", "--out", str(tmp_path)])
    assert seen == [["step", "kernel"]]


# -- the rest ------------------------------------------------------------------------------------------

def test_a_masked_array_hiding_nan_is_refused():
    """The NaN under the mask reached training and the error blamed the learning rate."""
    X, y = _data()
    X = X.astype(np.float64)
    X[2, 1] = np.nan
    masked = np.ma.masked_invalid(X)
    net = MLP([4, 5, 3], backend="numpy", seed=0)
    with pytest.raises(InputError, match=r"X is a masked array with 1 masked value\(s\); .* \(X\.filled\(value\)\)"):
        net.fit(masked, y, epochs=1, progress=False)
    clean = np.ma.masked_array(np.nan_to_num(X), mask=False)          # nothing masked: its data is used
    net.fit(clean, y, epochs=1, progress=False)


def test_fit_names_y_not_the_steppers_Y():
    X, _ = _data()
    with pytest.raises(InputError, match=r"^y is None") as err:
        MLP([4, 5, 3], backend="numpy").fit(X, None, progress=False)
    assert "stepper" not in str(err.value)


def test_save_and_load_take_a_bytes_path(tmp_path):
    net = MLP([3, 4, 2], backend="numpy", seed=0)
    path = bytes(tmp_path / "m.npz")
    net.save(path)
    np.testing.assert_array_equal(MLP.load(path, backend="numpy").weights[0], net.weights[0])
    with pytest.raises(InputError, match="save needs a file name \\(a str or a path\\), got int"):
        net.save(3)


def test_weights_grown_until_every_sigmoid_saturates_end_with_a_warning():
    """lr 1e30: |W| ≈ 1e29, a flat loss and no error before; now a SaturationWarning says why."""
    X, y = _data(n=40, n_in=5)
    net = MLP([5, 6, 3], loss="cross_entropy", backend="numpy", seed=1)
    with pytest.warns(SaturationWarning, match=r"100\.0% of the sigmoids of the last batch saturated .* weights up "
                                                r"to \|W\| = \d\.\d+e\+\d\d: the loss cannot improve; lower the "
                                                r"learning rate \(lr=1e\+30\)"):
        net.fit(X, y, epochs=3, batch_size=8, lr=1e30, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturationWarning)       # a sane run does not warn
        MLP([5, 6, 3], loss="cross_entropy", backend="numpy", seed=1).fit(X, y, epochs=3, batch_size=8, lr=0.5,
                                                                         progress=False)
