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
    numpy_says = _diverging_fit("numpy")
    assert numpy_says.startswith("the training loss became nan at epoch ")
    assert _diverging_fit("emulated") == numpy_says          # the NaN now reaches the kernels' loss too


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


# -- large models are refused before anything is allocated ------------------------------------------------

def test_a_model_too_large_for_memory_is_refused_before_allocating(monkeypatch):
    from gpubp.numpy_backend import NumpyBackend
    monkeypatch.setattr(NumpyBackend, "available_bytes", lambda self: 8 * 2**30)
    with pytest.raises(InputError, match=r"MLP\(\[100000, 100000, 10\]\) in float32: its 10,001,100,010 weights and "
                                         r"biases .* needs 37.3 GiB; 8.0 GiB is available on the numpy backend"):
        MLP([100000, 100000, 10], backend="numpy")


def test_init_is_drawn_in_the_models_dtype():
    net = MLP([300, 200, 10], backend="numpy", seed=0)            # float32: no float64 draw three times the size
    assert net.weights[0].std() == pytest.approx(1 / np.sqrt(300), rel=0.02)
    r = np.random.default_rng(0)
    np.testing.assert_array_equal(net.weights[0], r.standard_normal((300, 200), dtype=np.float32)
                                  * np.float32(1 / np.sqrt(300)))


def test_load_of_a_small_file_that_claims_a_huge_model_is_refused_before_allocating(tmp_path, monkeypatch):
    import gpubp.persistence as persistence
    net = MLP([3, 4, 2], backend="numpy", seed=0)
    net.save(tmp_path / "m.npz")
    data = dict(np.load(tmp_path / "m.npz"))
    data["sizes"] = np.array([100000, 100000, 10])
    np.savez(tmp_path / "huge.npz", **data)
    monkeypatch.setattr(persistence, "host_available_bytes", lambda: 8 * 2**30)
    with pytest.raises(InputError, match=r"huge.npz: the model \[100000, 100000, 10\] in float32 needs 37.3 GiB; "
                                         r"8.0 GiB is available on this machine"):
        MLP.load(tmp_path / "huge.npz", backend="numpy")


# -- persistence ------------------------------------------------------------------------------------------

def _saved(tmp_path, name="good.npz"):
    net = MLP([3, 4, 2], backend="numpy", seed=0)
    path = tmp_path / name
    net.save(path)
    return net, path


def test_save_errors_name_the_users_path(tmp_path):
    net = MLP([3, 2], backend="numpy", seed=0)
    target = tmp_path / "gone" / "m.npz"
    with pytest.raises(FileNotFoundError, match=rf"cannot save the model to {target}: No such file or directory"):
        net.save(target)
    with pytest.raises(InputError, match=r"save needs a file name"):
        net.save("")


def test_save_gives_the_umask_mode_and_keeps_a_replaced_files_mode(tmp_path):
    import os
    net = MLP([3, 2], backend="numpy", seed=0)
    old = os.umask(0o022)
    try:
        net.save(tmp_path / "new.npz")
        assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o644
        (tmp_path / "new.npz").chmod(0o640)
        net.save(tmp_path / "new.npz")
        assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_save_over_a_symlink_writes_through_it(tmp_path):
    net, real = _saved(tmp_path, "real.npz")
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    net.W[1][...] = 0.25
    net.save(link)
    assert link.is_symlink() and MLP.load(real, backend="numpy").weights[0][0, 0] == np.float32(0.25)


def test_temp_files_of_killed_writers_are_cleaned(tmp_path):
    import subprocess
    import sys
    net, path = _saved(tmp_path, "m.npz")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    for k in range(3):
        (tmp_path / f".m.npz.{dead}.x{k}y.gpubp-tmp").write_bytes(b"half a model")
    (tmp_path / ".m.npz.1.keep.gpubp-tmp").write_bytes(b"pid 1 is alive")
    net.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.npz.1.keep.gpubp-tmp", "m.npz"]


@pytest.mark.parametrize("damage, message", [
    ("flip", r"is not a (valid )?gpubp model"),
    ("truncate", r"is not a gpubp model file \(\.npz\)"),
    ("npy", r"is not a valid gpubp model: it holds a single array \(\.npy\)"),
    ("object", r"is not a valid gpubp model: .*(Object arrays|pickle|W1 has dtype object)"),
    ("no-version", r"is not a valid gpubp model: the file has the format marker but no version"),
    ("sizes-as-text", r"is not a valid gpubp model: sizes must be at least 2 positive integers"),
    ("W-as-text", r"is not a valid gpubp model: .*W1 has dtype <U\d+, expected floating point numbers"),
    ("negative-version", r"is not a valid gpubp model: it has format version -1; versions start at 1"),
    ("vb-without-vW", r"is not a valid gpubp model: it has momentum buffers vb1… for the biases but none for the "
                      r"weights \(vW1…\)"),
])
def test_damaged_model_files_are_refused_with_the_reason(tmp_path, damage, message):
    _, good = _saved(tmp_path)
    data = dict(np.load(good))
    bad = tmp_path / "bad.npz"
    if damage == "flip":
        raw = bytearray(good.read_bytes())
        raw[len(raw) // 2] ^= 0xFF                  # inside an array's bytes: the zip CRC no longer matches
        bad.write_bytes(bytes(raw))
    elif damage == "truncate":
        bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    elif damage == "npy":
        bad = tmp_path / "bad.npy"
        np.save(bad, np.zeros(3))
    elif damage == "object":
        np.savez(bad, **dict(data, W1=np.full((3, 4), None, dtype=object)))
    elif damage == "no-version":
        np.savez(bad, **{k: v for k, v in data.items() if k != "version"})
    elif damage == "sizes-as-text":
        np.savez(bad, **dict(data, sizes=np.array(["3", "4", "2"])))
    elif damage == "negative-version":
        np.savez(bad, **dict(data, version=np.array(-1)))
    elif damage == "vb-without-vW":
        np.savez(bad, **dict(data, vb1=np.zeros(4), vb2=np.zeros(2)))
    else:
        np.savez(bad, **dict(data, W1=np.full((3, 4), "x")))
    with pytest.raises(InputError, match=message):
        MLP.load(bad, backend="numpy")


def test_two_ctrl_c_do_not_abort_the_save_of_the_interrupted_model(tmp_path, monkeypatch, capsys):
    """The save after Ctrl-C runs with SIGINT ignored: a second Ctrl-C cannot leave no file."""
    import signal
    import gpubp.persistence as persistence
    from gpubp.cli import main
    from gpubp.mlp import Stepper
    seen = []
    real_save = persistence.save

    def save(model, path):
        seen.append(signal.getsignal(signal.SIGINT))
        real_save(model, path)
    monkeypatch.setattr(persistence, "save", save)
    monkeypatch.setattr(Stepper, "__call__", lambda self, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    path = tmp_path / "m.npz"
    assert main(["train", "--dataset", "digits", "--quiet", "--save", str(path)]) == 130
    assert seen == [signal.SIG_IGN] and path.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- the command line ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["train", "--batch-size", "0"], "argument --batch-size: expected a positive integer, got '0'"),
    (["train", "--seed", "-1"], "argument --seed: expected a non-negative integer, got '-1'"),
    (["train", "--sizes", ","], "argument --sizes: expected comma-separated positive integers"),
    (["gradcheck", "--batch", "-2"], "argument --batch: expected a positive integer, got '-2'"),
])
def test_cli_argument_errors_exit_2(argv, message, capsys):
    from gpubp.cli import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_train_save_empty_name_is_refused_before_training(capsys):
    from gpubp.cli import main
    assert main(["train", "--save", ""]) == 2
    assert "--save needs a file name" in capsys.readouterr().err


def test_a_save_that_fails_after_training_keeps_the_model(tmp_path, monkeypatch, capsys):
    import errno
    import gpubp.persistence as persistence
    from gpubp.cli import main
    target = tmp_path / "m.npz"
    real_save = persistence.save

    def save(model, path):
        if str(path) == str(target):
            raise OSError(errno.ENOSPC, f"cannot save the model to {path}: No space left on device")
        real_save(model, path)
    monkeypatch.setattr(persistence, "save", save)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "digits", "--quiet", "--epochs", "1", "--save", str(target)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device; the trained model is kept in" in err
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("gpubp-unsaved-model-")]
    assert len(kept) == 1 and str(kept[0]) in err
    assert MLP.load(kept[0], backend="numpy").sizes == [64, 64, 10]


@pytest.mark.parametrize("make_out", ["file", "devnull", "under-a-file"])
def test_bench_out_is_checked_before_anything_is_timed(tmp_path, monkeypatch, capsys, make_out):
    from gpubp import bench
    from gpubp.cli import main
    monkeypatch.setattr(bench, "run", lambda **kw: pytest.fail("timed before checking --out"))
    out = {"file": tmp_path / "a-file", "devnull": "/dev/null", "under-a-file": tmp_path / "a-file" / "sub"}[make_out]
    (tmp_path / "a-file").write_text("")
    assert main(["bench", "--quick", "--out", str(out)]) == 2
    assert "nothing was timed" in capsys.readouterr().err


@pytest.mark.parametrize("sizes, message", [
    ("", "names no net"), (";;", "names no net"), ("abc", "'abc' is not one"), ("8,4,2", "'8,4,2' is not one"),
    ("8,4,2:", "'8,4,2:' is not one"), ("8,4,2:0", "must be positive integers"), ("8,4,2:-3", "must be positive"),
    ("8,4,2:4:5", "'8,4,2:4:5' is not one"), ("8:4", "at least 2 widths"),
])
def test_bench_sizes_specs_are_checked(sizes, message, capsys):
    from gpubp.cli import main
    assert main(["bench", "--quick", "--sizes", sizes]) == 2
    err = capsys.readouterr().err
    assert "--sizes takes nets as 'w0,w1,...:batch'" in err and message in err


def test_bench_unknown_group_exits_2(capsys):
    from gpubp.cli import main
    assert main(["bench", "--groups", "nosuch"]) == 2
    assert "unknown group(s) nosuch; the groups are step,kernel,e2e" in capsys.readouterr().err


@pytest.mark.parametrize("arrays, message", [
    (dict(X=np.zeros((6, 2)), y=np.array(list("abcabc"))), r"y has dtype <U1; it must hold integer class labels"),
    (dict(X=np.zeros(6), y=np.zeros(6, int)), r"X must be 2-D \(n_samples, n_features\), got shape \(6,\)"),
    (dict(X=np.float64(3), y=np.zeros(1, int)), r"X must be 2-D .* got shape \(\)"),
    (dict(X=np.zeros((6, 2)), y=np.zeros((6, 2)), X_test=np.zeros((2, 2)), y_test=np.zeros(2, int)),
     r"y has shape \(6, 2\) but y_test has shape \(2,\)"),
    (dict(X=np.zeros((6, 2)), y=np.zeros(6, int), X_test=np.zeros((0, 2)), y_test=np.zeros(0, int)),
     r"X_test has no samples"),
    (dict(X=np.zeros((6, 2)), y=np.array([0, 1, 2, 0, 1, 10**9])), r"labels .* run to 1000000000 but only 4 distinct"),
    (dict(X=np.zeros((6, 2)), y=np.array([0, 1, 2, 0, 1, 99999])), r"run to 99999 but only 4 distinct classes appear"),
])
def test_bad_data_files_exit_2_with_the_reason(tmp_path, capsys, arrays, message):
    import re
    from gpubp.cli import main
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    assert main(["train", "--dataset", str(path), "--quiet", "--epochs", "1"]) == 2
    assert re.search(message, capsys.readouterr().err)
