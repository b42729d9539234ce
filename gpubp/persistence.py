"""A model on disk: one ``.npz`` holding the architecture, the parameters and
the momentum buffers.

    save(model, path)    write atomically: a temp file in the same folder,
                         fsync'd, then renamed over ``path``
    read(path)           a :class:`Saved` record, every array checked against
                         the sizes it declares (``MLP.load`` builds the model)

Keys: ``format`` (``"gpubp-mlp"``), ``version``, ``sizes``, ``loss``, ``dtype``,
``init``; ``W1 … WL``, ``b1 … bL`` and, if the model used momentum,
``vW1 … vWL``, ``vb1 … vbL``.  ``model`` is anything with the MLP's
``sizes``, ``cost``, ``dtype``, ``init``, ``W``, ``b``, ``vW``, ``vb`` and
``backend`` (this module does not import the MLP).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from .validation import InputError

FORMAT = "gpubp-mlp"
FORMAT_VERSION = 1


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


def save(model, path) -> None:
    """Write ``model`` to ``path`` (.npz) atomically, so that a crash never leaves a half-written model."""
    path = os.fspath(path)
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
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gpubp-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read(path) -> Saved:
    """Read a model file written by :func:`save`; checks the format marker, the version and every shape."""
    path = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise InputError(f"{path} is not a gpubp model file (.npz): {e}") from None
    with data:
        if "format" not in data or str(data["format"]) != FORMAT:
            raise InputError(f"{path} is not a gpubp model (no '{FORMAT}' format marker)")
        if int(data["version"]) > FORMAT_VERSION:
            raise InputError(f"{path} has format version {int(data['version'])}; this gpubp reads "
                             f"up to {FORMAT_VERSION}: upgrade gpubp")
        sizes = [int(n) for n in data["sizes"]]
        has_v = "vW1" in data
        params = {"W": [None], "b": [None], "vW": [None] if has_v else None, "vb": [None] if has_v else None}
        for l in range(1, len(sizes)):
            shapes = {"W": (sizes[l - 1], sizes[l]), "b": (sizes[l],)}
            if has_v:
                shapes.update({"vW": shapes["W"], "vb": shapes["b"]})
            for kind, shape in shapes.items():
                key = f"{kind}{l}"
                if key not in data:
                    raise InputError(f"{path}: missing array {key}; the file is truncated or not a gpubp model")
                arr = data[key]
                if arr.shape != shape:
                    raise InputError(f"{path}: {key} has shape {arr.shape}, expected {shape} for sizes {sizes}")
                if not np.isfinite(arr).all():
                    raise InputError(f"{path}: {key} contains NaN/Inf")
                params[kind].append(arr)
        return Saved(sizes=sizes, loss=str(data["loss"]), dtype=str(data["dtype"]), init=str(data["init"]),
                     **params)
