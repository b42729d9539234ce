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


#: DLPack device types (dlpack.h's DLDeviceType) by number, and those whose memory the host reads in place
#: (np.from_dlpack takes exactly these: the CPU's, CUDA and ROCm pinned host memory, CUDA managed memory)
DLPACK_DEVICES = {1: "CPU", 2: "CUDA", 3: "CUDA pinned host", 4: "OpenCL", 7: "Vulkan", 8: "Metal", 9: "VPI",
                  10: "ROCm", 11: "ROCm pinned host", 12: "ExtDev", 13: "CUDA managed", 14: "oneAPI"}
DLPACK_HOST = frozenset({1, 3, 11, 13})
DLPACK_CUDA, DLPACK_CUDA_MANAGED = 2, 13


def dlpack_device(x) -> tuple[int, int] | None:
    """(device type, device id) of an array from another library that exports DLPack (a PyTorch tensor,
    a JAX array, …: ``__dlpack__`` and ``__dlpack_device__``), else None."""
    if not (hasattr(x, "__dlpack_device__") and hasattr(x, "__dlpack__")):
        return None
    try:
        kind, index = x.__dlpack_device__()
        return int(kind), int(index)
    except Exception as e:
        raise InputError(f"{_library_name(x)} says it exports DLPack but __dlpack_device__() failed ({e}); "
                         f"pass a NumPy array") from None


def _library_name(x) -> str:
    """'torch.Tensor', 'jaxlib.ArrayImpl': the array's library and class, for messages."""
    return f"{type(x).__module__.split('.')[0]}.{type(x).__name__}"


def dlpack_to_host_fix(x, name: str) -> str:
    """How to bring ``x`` into host memory, in its library's words."""
    lib = type(x).__module__.split(".")[0]
    if lib == "torch":
        return f"{name}.cpu()"
    if lib in ("jax", "jaxlib"):
        return f"jax.device_put({name}, jax.devices('cpu')[0])"
    if lib == "cupy":
        return f"{name}.get()"
    return f"its library's copy to the host (PyTorch: {name}.cpu())"


def from_dlpack(x, name: str, xp=np, device: tuple[int, int] | None = None):
    """``xp.from_dlpack(x)``: the same memory seen as an ``xp`` array, no copy; what DLPack refuses (a
    tensor that requires grad, a dtype NumPy lacks such as bfloat16) is an InputError saying why."""
    try:
        return xp.from_dlpack(x)
    except Exception as e:       # BufferError, RuntimeError, TypeError, ValueError: each library its own
        where = "" if device is None else f" on {DLPACK_DEVICES.get(device[0], f'device type {device[0]}')}"
        raise InputError(f"{name} ({_library_name(x)}{where}, dtype {getattr(x, 'dtype', '?')}) cannot be read "
                         f"through DLPack: {type(e).__name__}: {e}; pass a float32 or float64 array (for PyTorch: "
                         f"{name}.detach().float()), or a NumPy array") from None


def not_on_host_error(x, name: str, device: tuple[int, int]) -> InputError:
    """The error for a tensor in device memory given to a model whose arrays are in host memory."""
    kind, index = device
    where = f"{DLPACK_DEVICES.get(kind, f'DLPack device type {kind}')} device {index}"
    return InputError(f"{name} is a {_library_name(x)} on {where} (DLPack device {device}), but this model computes "
                      f"in host memory (the numpy and emulated backends): copy it to the host with "
                      f"{dlpack_to_host_fix(x, name)}, or build the model with backend='cupy' to train on the GPU")


def as_host_array(x, name: str) -> np.ndarray:
    """A NumPy array of ``x``: a NumPy array as it is, a CuPy array copied to the host, an array of another
    library in host memory (a PyTorch CPU tensor, a JAX CPU array: anything exporting DLPack) seen in place
    by ``np.from_dlpack`` (one in device memory is refused, naming the fix), a pandas DataFrame or Series
    through ``to_numpy()``, a list through ``np.asarray`` (ragged lists refused).  A masked array is
    refused if anything is masked (its hidden values, NaN perhaps, would be trained on), else its data."""
    if isinstance(x, np.ma.MaskedArray):
        masked = int(np.ma.count_masked(x))
        if masked:
            raise InputError(f"{name} is a masked array with {masked} masked value(s); gpubp trains on every value, "
                             f"masked or not: fill them explicitly ({name}.filled(value)) or drop those samples")
        return np.ma.getdata(x)
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.split(".")[0] == "cupy":        # checked on the host
        return x.get()
    device = dlpack_device(x)
    if device is not None:
        if device[0] not in DLPACK_HOST:
            raise not_on_host_error(x, name, device)
        return from_dlpack(x, name, np, device)
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
    if y is None:
        raise InputError(f"{name} is None; pass what {x_name} should produce: {n_samples} integer class labels in "
                         f"[0, {n_out})" + (" (0/1 for a 1-unit output)" if n_out == 1 else "")
                         + f", or targets of shape ({n_samples}, {n_out}) in [0, 1]")
    y = as_host_array(y, name)
    if y.dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {y.dtype}, which is not numeric; pass integer class labels "
                         f"or float targets")
    if y.ndim == 2 and y.shape[1] == 1 and n_out == 1 and y.dtype.kind in "biu":    # a column of labels
        y = y[:, 0]                                     # (a float column: targets in [0, 1])
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
