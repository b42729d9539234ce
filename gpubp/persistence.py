"""A model on disk: one ``.npz`` holding the architecture, the parameters and
the momentum buffers.

    save(model, path)    write atomically: a temp file beside the target,
                         fsync'd, then renamed over it
    read(path)           a :class:`Saved` record, every array checked against
                         the sizes it declares (``MLP.load`` builds the model)

Keys: ``format`` (``"gpubp-mlp"``), ``version``, ``sizes``, ``loss``, ``dtype``,
``init``; ``W1 … WL``, ``b1 … bL`` and, if the model used momentum,
``vW1 … vWL``, ``vb1 … vbL``.  ``model`` is anything with the MLP's
``sizes``, ``cost``, ``dtype``, ``init``, ``W``, ``b``, ``vW``, ``vb`` and
``backend`` (this module does not import the MLP).

What ``save`` promises: the target is either the old file or the new one,
never a mix (atomic rename); a symlink is written through (the link stays);
the file gets the mode an ordinary ``open`` would give it (the umask), or the
mode of the file it replaces; a temp file left by a killed writer is removed
by the next save to the same target; an error names the target, not the
temp file.  What ``read`` promises: a file that is not a valid model (not a
zip, bit-flipped, truncated, a plain ``.npy``, object arrays, missing keys,
wrong dtypes or shapes, NaN) is an ``InputError`` that says so, raised before
any parameter array is read into memory.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass

import numpy as np

from .validation import InputError, check_memory, host_available_bytes

FORMAT = "gpubp-mlp"
FORMAT_VERSION = 1
_TEMP_SUFFIX = ".gpubp-tmp"


@dataclass
class Saved:
    """What a model file holds; ``W[l]``, ``b[l]`` … for l = 1 … L (index 0 is None, as in the MLP)."""
    sizes: list
    loss: str
    dtype: str
    init: str
    W: list
    b: list
    vW: list | None
    vb: list | None


# -- save ------------------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(folder: str, base: str) -> None:
    """Remove the temp files that killed writers left for this target (their process is gone)."""
    pattern = re.compile(rf"^\.{re.escape(base)}\.(\d+)\..*{re.escape(_TEMP_SUFFIX)}$")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = pattern.match(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def _file_mode(target: str) -> int:
    """The mode of the file being replaced, else what open() would create under the umask."""
    try:
        return os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save(model, path) -> None:
    """Write ``model`` to ``path`` (.npz) atomically, so that a crash never leaves a half-written model.
    ``path``: a str, a bytes file name or a path-like object."""
    try:
        path = os.fsdecode(os.fspath(path))         # b"model.npz" is a file name too
    except TypeError:
        raise InputError(f"save needs a file name (a str or a path), got {type(path).__name__}") from None
    if not path:
        raise InputError("save needs a file name, e.g. save('model.npz'); got ''")
    to_numpy = model.backend.to_numpy
    arrays = {"format": np.array(FORMAT), "version": np.array(FORMAT_VERSION),
              "sizes": np.array(model.sizes, dtype=np.int64), "loss": np.array(model.cost.name),
              "dtype": np.array(model.dtype.name), "init": np.array(model.init)}
    for l in range(1, len(model.sizes)):
        arrays[f"W{l}"] = to_numpy(model.W[l])
        arrays[f"b{l}"] = to_numpy(model.b[l])
        if model.vW is not None:
            arrays[f"vW{l}"] = to_numpy(model.vW[l])
            arrays[f"vb{l}"] = to_numpy(model.vb[l])
    for key, arr in arrays.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(f"the model's {key} contains NaN/Inf, so it is not saved to {path} (it could not be "
                             f"loaded back): the training diverged; retrain with a lower learning rate")
    target = os.path.realpath(path)               # a symlink is written through; the link stays
    folder, base = os.path.split(target)
    if os.path.isdir(target):
        raise InputError(f"cannot save the model to {path}: it is a folder; give a file name, e.g. "
                         f"{os.path.join(path, 'model.npz')}")
    try:
        _remove_stale_temps(folder, base)
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.{os.getpid()}.", suffix=_TEMP_SUFFIX, dir=folder)
    except OSError as e:
        raise _named(e, path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fchmod(f.fileno(), _file_mode(target))
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise _named(e, path) from e
        raise


def _named(e: OSError, path: str) -> OSError:
    """The same kind of OSError, naming the user's path (not the temp file) and the reason."""
    why = e.strerror or str(e)
    message = f"cannot save the model to {path}: {why}"
    return type(e)(e.errno, message) if e.errno is not None else OSError(message)


# -- read ------------------------------------------------------------------------------------------

def _header(data, key: str):
    """(shape, dtype) of one array of an .npz from its .npy header, without reading the array."""
    with data.zip.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read(f)
    return tuple(shape), np.dtype(dtype)


def _scalar(data, key: str, kind: str):
    value = data[key]
    if value.shape != () or value.dtype.kind not in kind:
        raise InputError(f"{key} must be a single {'string' if kind == 'U' else 'integer'}, got an array of "
                         f"dtype {value.dtype} and shape {value.shape}")
    return value[()]


def read(path) -> Saved:
    """Read a model file written by :func:`save`; checks the format marker, the version and every shape."""
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        raise InputError(f"load needs a file name (a str or a path), got {type(path).__name__}") from None
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (IsADirectoryError, PermissionError) as e:
        raise InputError(f"{path} cannot be read: {e.strerror}") from None
    except Exception as e:
        raise InputError(f"{path} is not a gpubp model file (.npz): {e}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"{path} is not a valid gpubp model: it holds a single array (.npy), not the .npz "
                         f"that MLP.save writes")
    with data:
        try:
            return _read(path, data)
        except _TooLarge:
            raise
        except InputError as e:
            raise InputError(f"{path} is not a valid gpubp model: {e}") from None
        except Exception as e:        # a damaged zip raises BadZipFile, EOFError, RuntimeError ('encrypted'), …
            raise InputError(f"{path} is not a valid gpubp model: {type(e).__name__}: {e}") from None


class _TooLarge(InputError):
    """A valid model file whose model does not fit in memory."""


def _read(path, data) -> Saved:
    if "format" not in data.files or str(data["format"]) != FORMAT:
        raise InputError(f"no '{FORMAT}' format marker (not a file MLP.save wrote)")
    missing = [k for k in ("version", "sizes", "loss", "dtype", "init") if k not in data.files]
    if missing:
        raise InputError(f"the file has the format marker but no {', '.join(missing)}: it is truncated or was "
                         f"not written by MLP.save")
    version = int(_scalar(data, "version", "iu"))
    if version < 1:
        raise InputError(f"it has format version {version}; versions start at 1 (the file was not written by "
                         f"MLP.save, or is damaged)")
    if version > FORMAT_VERSION:
        raise InputError(f"it has format version {version}; this gpubp reads up to {FORMAT_VERSION}: upgrade gpubp")
    sizes_arr = data["sizes"]
    if sizes_arr.ndim != 1 or sizes_arr.dtype.kind not in "iu" or len(sizes_arr) < 2 or (sizes_arr < 1).any():
        raise InputError(f"sizes must be at least 2 positive integers, got {sizes_arr!r}")
    sizes = [int(n) for n in sizes_arr]
    loss, dtype, init = (str(_scalar(data, k, "U")) for k in ("loss", "dtype", "init"))
    if dtype not in ("float32", "float64"):
        raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    has_v = "vW1" in data.files
    if has_v != ("vb1" in data.files):
        given, lacking = ("vW", "vb") if has_v else ("vb", "vW")
        raise InputError(f"it has momentum buffers {given}1… for the {'weights' if given == 'vW' else 'biases'} but "
                         f"none for the {'biases' if given == 'vW' else 'weights'} ({lacking}1…): the file is "
                         f"damaged or was not written by MLP.save")
    params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    try:
        check_memory(f"{path}: the model {sizes} in {dtype}{' with momentum' if has_v else ''}",
                     params * np.dtype(dtype).itemsize * (2 if has_v else 1), host_available_bytes(), "on this machine")
    except InputError as e:
        raise _TooLarge(str(e)) from None
    shapes = {}
    for l in range(1, len(sizes)):
        shapes.update({f"W{l}": (sizes[l - 1], sizes[l]), f"b{l}": (sizes[l],)})
        if has_v:
            shapes.update({f"vW{l}": (sizes[l - 1], sizes[l]), f"vb{l}": (sizes[l],)})
    for key, shape in shapes.items():                # headers only: nothing is read yet
        if key not in data.files:
            raise InputError(f"missing array {key}; the file is truncated or was not written by MLP.save")
        got, got_dtype = _header(data, key)
        if got != shape:
            raise InputError(f"{key} has shape {got}, expected {shape} for sizes {sizes}")
        if got_dtype.kind != "f":
            raise InputError(f"{key} has dtype {got_dtype}, expected floating point numbers")
    params = {"W": [None], "b": [None], "vW": [None] if has_v else None, "vb": [None] if has_v else None}
    for key in shapes:
        arr = data[key]
        if not np.isfinite(arr).all():
            raise InputError(f"{key} contains NaN/Inf")
        params[key.rstrip("0123456789")].append(arr)
    return Saved(sizes=sizes, loss=loss, dtype=dtype, init=init, **params)
