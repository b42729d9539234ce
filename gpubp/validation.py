"""Input checks.  Each error names the problem and the fix, and is raised
before any array reaches the numerical code (never a NumPy traceback from
deep inside a step)."""
from __future__ import annotations

import numbers
import warnings

import numpy as np


class InputError(ValueError):
    """Bad input to gpubp: the message says what is wrong and how to fix it."""


#: NumPy < 1.24 warned (and built an object array) where NumPy 2 raises ValueError for ragged lists
_RaggedWarning = getattr(getattr(np, "exceptions", np), "VisibleDeprecationWarning")


def as_host_array(x, name: str) -> np.ndarray:
    """A NumPy array of ``x``: a NumPy array as it is, a CuPy array copied to the host, a pandas
    DataFrame or Series through ``to_numpy()``, a list through ``np.asarray`` (ragged lists refused)."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.split(".")[0] == "cupy":        # checked on the host
        return x.get()
    if hasattr(x, "to_numpy") and callable(x.to_numpy):  # pandas, polars, xarray, …
        x = x.to_numpy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", _RaggedWarning)
            return np.asarray(x)
    except (ValueError, _RaggedWarning):
        raise InputError(f"{name} is ragged (its rows have different lengths) or mixes numbers and sequences; "
                         f"pass a rectangular array, e.g. np.array({name}) of one shape") from None
    except TypeError as e:
        raise InputError(f"{name} cannot be read as an array ({e}); pass a NumPy array") from None


def check_seed(seed):
    """None, or an int in [0, 2^63): what np.random.default_rng takes, without its TypeError."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def check_sizes(sizes) -> list[int]:
    try:
        sizes = list(sizes)
    except TypeError:
        raise InputError(f"sizes must be a list of layer widths like [784, 30, 10], not {sizes!r}") from None
    if len(sizes) < 2:
        raise InputError(f"sizes needs at least 2 entries (input width and output width), got {sizes!r}; "
                         "e.g. MLP([64, 64, 10])")
    for i, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
            raise InputError(f"sizes[{i}] = {n!r}: every layer width must be a positive integer")
    return [int(n) for n in sizes]


def check_X(X, n_features: int, name: str = "X", dtype=None) -> np.ndarray:
    """A 2-D finite numeric NumPy array with ``n_features`` columns (not yet cast), whose values
    fit ``dtype`` (the model's) when it is given."""
    X = as_host_array(X, name)
    if X.dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {X.dtype}, which is not numeric; pass numbers, "
                         f"e.g. {name}.astype(np.float32)")
    if X.ndim == 1 and X.size == n_features:
        raise InputError(f"{name} is 1-D with shape {X.shape}; pass a batch of shape (n_samples, {n_features}) — "
                         f"for one sample use {name}.reshape(1, -1)")
    if X.ndim != 2:
        raise InputError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}")
    if X.shape[0] == 0:
        raise InputError(f"{name} is empty (0 samples); pass at least one sample")
    if X.shape[1] != n_features:
        raise InputError(f"{name} has {X.shape[1]} features per sample but the input layer has {n_features} "
                         f"(sizes[0]); reshape {name} to (n_samples, {n_features}) or build the MLP with "
                         f"sizes[0] = {X.shape[1]}")
    if X.dtype.kind == "f":
        bad = ~np.isfinite(X)
        if bad.any():
            r, c = (int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"{name} contains {int(bad.sum())} NaN/Inf value(s), the first at row {r}, column {c} "
                             f"({X[r, c]}); remove or impute them before training")
        if dtype is not None and X.dtype.itemsize > np.dtype(dtype).itemsize:
            largest = float(np.finfo(dtype).max)
            over = np.abs(X) > largest
            if over.any():
                r, c = (int(i) for i in np.argwhere(over)[0])
                raise InputError(f"{name}[{r}, {c}] = {X[r, c]:g} overflows {np.dtype(dtype).name} (largest "
                                 f"{largest:.4g}; {int(over.sum())} value(s) do): scale the data, e.g. standardise "
                                 f"each column, or build the MLP with dtype=np.float64")
    return X


def check_targets(y, n_samples: int, n_out: int, dtype, name: str = "y") -> np.ndarray:
    """Turn labels or targets into an n_samples × n_out array of ``dtype``.

    Accepted: integer class labels of shape (n,) in [0, n_out) (one-hot
    encoded here); for a 1-unit output, 0/1 labels of shape (n,); or targets of
    shape (n, n_out) with values in [0, 1].  ``name`` names the argument in errors
    (``"y_test"`` for the test labels, whose samples are ``X_test``).
    """
    x_name = "X" + name[1:] if name.startswith("y") else "X"
    y = as_host_array(y, name)
    if y.dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {y.dtype}, which is not numeric; pass integer class labels "
                         f"or float targets")
    if y.ndim == 2 and y.shape[1] == 1 and n_out == 1:
        y = y[:, 0]
    if y.shape[:1] != (n_samples,):
        raise InputError(f"{name} has {y.shape[0] if y.ndim else 0} sample(s) (shape {y.shape}) but {x_name} has {n_samples}; "
                         "pass one label (or one target row) per sample")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise InputError(f"{name} contains NaN/Inf; every label or target must be finite")
    if y.ndim == 1:
        if n_out == 1:
            if not np.isin(y, (0, 1)).all():
                bad = y[~np.isin(y, (0, 1))][0].item()
                raise InputError(f"a 1-unit output layer takes 0/1 labels; found {bad}")
            return y.astype(dtype).reshape(n_samples, 1)
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise InputError(f"{name} is 1-D with non-integer values; pass integer class labels in "
                             f"[0, {n_out}) or targets of shape (n_samples, {n_out})")
        lo, hi = y.min(), y.max()
        if lo < 0 or hi >= n_out:
            bad = (lo if lo < 0 else hi).item()
            raise InputError(f"labels must be integers in [0, {n_out}) for a {n_out}-unit output layer; "
                             f"found {bad} (at index {int(np.argmax(y == bad))}); relabel the classes or "
                             f"change sizes[-1]")
        targets = np.zeros((n_samples, n_out), dtype=dtype)
        targets[np.arange(n_samples), y.astype(np.intp)] = 1
        return targets
    if y.ndim == 2:
        if y.shape[1] != n_out:
            raise InputError(f"{name} has shape {y.shape}: {y.shape[1]} target columns for a {n_out}-unit output "
                             f"layer; pass (n_samples, {n_out}) targets or 1-D integer labels")
        if y.size and (y.min() < 0 or y.max() > 1):
            raise InputError("targets must lie in [0, 1] (the output layer is a sigmoid); scale them")
        return np.ascontiguousarray(y, dtype=dtype)
    raise InputError(f"{name} must be 1-D labels or 2-D targets; got shape {y.shape}")


def check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputError(f"dtype {dtype!r} is not a NumPy dtype; use np.float32 (default, fast) or np.float64 "
                         f"(for gradient checks)") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InputError(f"dtype {dt} is not supported; use float32 (default, fast) or float64 (for gradient checks)")
    return dt


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, not {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = "≥ 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be a finite number {need}, got {value!r}")
    return v


def host_available_bytes() -> int | None:
    """Memory a new allocation can take on this machine (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(what: str, need: int, available: int | None, where: str) -> None:
    """Refuse, before allocating, ``what`` needing ``need`` bytes where only ``available`` are free."""
    if available is not None and need > available:
        raise InputError(f"{what} needs {need / 2**30:.1f} GiB; {available / 2**30:.1f} GiB is available {where}: "
                         f"use smaller layers, or a machine with more memory")
