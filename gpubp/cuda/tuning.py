"""What ``gpubp tune`` measured on a device: for each GEMM launch shape, the fastest tile set and split
of gpubp's own kernels and cuBLAS's time for the same product, kept in a JSON file per (device, CUDA
version, gpubp version) so that a new driver, GPU or release measures again.

The kernel backends read it (``KernelBackend.tuned``): a launch whose (family, dtype, M, N, K) has an
entry takes its tile set (a KernelSet compiled with those defines) and split instead of the defaults'
heuristics (``launchers.gemm_splits``), and ``gemm="auto"`` takes gpubp's kernel or cuBLAS, whichever
was faster for that shape.  Without an entry nothing changes.  The file::

    {"device": "NVIDIA H100 80GB HBM3", "cuda": 13020, "gpubp": "0.1.0",
     "entries": {"forward_gemm f32 10 30 784": {"tiles": {"TILE": 64, "MICRO": 8}, "splits": 13,
                                                "us": 3.1, "cublas_us": 7.9}, ...}}
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .._version import __version__

#: the tile sets the tuner tries (each compiles for every arch without spilling: tests/test_tune.py); the
#: defaults once more with the main loop's register-staged schedule (PIPELINE 2: no cp.async), which a
#: short reduction may prefer
TILE_SETS = ({"TILE": 64, "MICRO": 8}, {"TILE": 32, "MICRO": 4}, {"TILE": 64, "MICRO": 4},
             {"TILE": 64, "MICRO": 8, "PIPELINE": 2})


def tiles_text(tiles) -> str:
    """``{"TILE": 32, "MICRO": 4}`` -> ``"TILE=32 MICRO=4"``: how gpubp tune, the lazy tuner and gpubp check
    name a tile set."""
    return " ".join(f"{k}={v}" for k, v in tiles.items())


def cache_dir() -> Path:
    """``$GPUBP_CACHE_DIR/tune``, else ``~/.cache/gpubp/tune``."""
    root = os.environ.get("GPUBP_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "gpubp") / "tune"


def file_for(device: str, cuda: int, version: str = __version__) -> Path:
    """The table's file for a device name, a CUDA runtime version and a gpubp version."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower() or "device"
    return cache_dir() / f"{slug}-cuda{cuda}-gpubp{version}.json"


def key(family: str, dtype, M: int, N: int, K: int) -> str:
    """An entry's key: ``"forward_gemm f32 10 30 784"`` (family, dtype, output M×N, reduction K)."""
    import numpy as np
    return f"{family} {'f32' if np.dtype(dtype) == np.float32 else 'f64'} {int(M)} {int(N)} {int(K)}"


@dataclass
class Entry:
    """One launch shape's measurements: the winning tile set and split of gpubp's kernel, its time, and
    cuBLAS's time for the same product (None where cuBLAS was not timed: the weight gradients)."""
    tiles: dict
    splits: int
    us: float
    cublas_us: float | None = None

    @property
    def own_wins(self) -> bool:
        return self.cublas_us is None or self.us <= self.cublas_us


@dataclass
class Table:
    device: str
    cuda: int
    gpubp: str = __version__
    entries: dict = field(default_factory=dict)

    def get(self, family, dtype, M, N, K) -> Entry | None:
        return self.entries.get(key(family, dtype, M, N, K))

    def put(self, family, dtype, M, N, K, entry: Entry) -> None:
        self.entries[key(family, dtype, M, N, K)] = entry

    def save(self, path: Path | None = None) -> Path:
        """Write the table (to its file under cache_dir() unless ``path``), atomically."""
        path = Path(path) if path is not None else file_for(self.device, self.cuda, self.gpubp)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"device": self.device, "cuda": self.cuda, "gpubp": self.gpubp,
                "entries": {k: vars(e) for k, e in sorted(self.entries.items())}}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> "Table":
        """The table in ``path``; ValueError naming the file if it is not one."""
        try:
            data = json.loads(Path(path).read_text())
            entries = {k: Entry(dict(v["tiles"]), int(v["splits"]), float(v["us"]),
                                None if v.get("cublas_us") is None else float(v["cublas_us"]))
                       for k, v in data["entries"].items()}
            return cls(str(data["device"]), int(data["cuda"]), str(data["gpubp"]), entries)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a gpubp tuning table ({type(e).__name__}: {e}); delete it and run "
                             f"gpubp tune again") from None


def for_device(device: str, cuda: int) -> Table | None:
    """The table measured on this device, CUDA version and gpubp version, if ``gpubp tune`` made one (a
    damaged file is ignored with a warning: the defaults run)."""
    path = file_for(device, cuda)
    if not path.is_file():
        return None
    try:
        return Table.load(path)
    except ValueError as e:
        import warnings
        warnings.warn(f"gpubp: {e}; using the default tiles and splits", RuntimeWarning, stacklevel=2)
        return None
