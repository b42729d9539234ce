"""save/load: nothing lost, atomic, and a corrupt file is refused with a reason."""
import os

import numpy as np
import pytest

from gpubp import MLP, InputError


def test_roundtrip_keeps_weights_velocities_and_predictions(tmp_path, rng):
    net = MLP([5, 7, 3], loss="cross_entropy", backend="numpy", dtype=np.float64, seed=1)
    X, y = rng.random((20, 5)), rng.integers(0, 3, 20)
    net.fit(X, y, epochs=2, batch_size=5, lr=0.5, momentum=0.9, progress=False)
    path = tmp_path / "model.npz"
    net.save(path)
    back = MLP.load(path, backend="numpy")
    assert back.sizes == [5, 7, 3] and back.cost.name == "cross_entropy" and back.dtype == np.float64
    for a, b in zip(net.weights + net.biases, back.weights + back.biases):
        np.testing.assert_array_equal(a, b)
    for l in (1, 2):
        np.testing.assert_array_equal(net.vW[l], back.vW[l])
    np.testing.assert_array_equal(net.forward(X), back.forward(X))
    # training continues identically (momentum kept)
    net.step(X[:5], y[:5], lr=0.5, momentum=0.9)
    back.step(X[:5], y[:5], lr=0.5, momentum=0.9)
    np.testing.assert_array_equal(net.weights[0], back.weights[0])


def test_save_is_atomic(tmp_path, monkeypatch, rng):
    path = tmp_path / "model.npz"
    good = MLP([3, 2], backend="numpy", seed=0)
    good.save(path)
    before = path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        MLP([3, 2], backend="numpy", seed=99).save(path)
    assert path.read_bytes() == before                      # old model untouched
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temp file left


def test_load_refuses_bad_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="is not a gpubp model file"):
        MLP.load(junk, backend="numpy")
    other = tmp_path / "other.npz"
    np.savez(other, X=np.zeros(3))
    with pytest.raises(InputError, match="no 'gpubp-mlp' format marker"):
        MLP.load(other, backend="numpy")
    net = MLP([3, 4, 2], backend="numpy", seed=0)
    good = tmp_path / "good.npz"
    net.save(good)
    data = dict(np.load(good))
    bad = dict(data, W2=np.zeros((5, 2), np.float32))
    np.savez(tmp_path / "shape.npz", **bad)
    with pytest.raises(InputError, match=r"W2 has shape \(5, 2\), expected \(4, 2\)"):
        MLP.load(tmp_path / "shape.npz", backend="numpy")
    missing = {k: v for k, v in data.items() if k != "b1"}
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(InputError, match="missing array b1"):
        MLP.load(tmp_path / "missing.npz", backend="numpy")
    nan = dict(data, W1=np.full((3, 4), np.nan, np.float32))
    np.savez(tmp_path / "nan.npz", **nan)
    with pytest.raises(InputError, match="W1 contains NaN/Inf"):
        MLP.load(tmp_path / "nan.npz", backend="numpy")
    with pytest.raises(FileNotFoundError):
        MLP.load(tmp_path / "nope.npz", backend="numpy")
    assert os.path.exists(good)
