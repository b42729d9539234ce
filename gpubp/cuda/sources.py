"""Where the CUDA kernel sources live, what they define, and a cached set of
compiled kernels for each device that can run them.

The sources are the ``kernels/<family>.cu`` files at the top of the repository;
an installed wheel carries them as ``gpubp/_kernels/``.  Every consumer (the
kernel backends, the tests, the benchmarks, NVRTC) reads these same files:
there is no second copy of a kernel.

A :class:`KernelSet` maps kernel names (``"weight_grad_f32"``) to callables with
CuPy's ``RawKernel`` convention ``f(grid, block, args, shared_mem=0)``; ``None``
in ``args`` is a NULL pointer on every device.  Each
family is compiled at most once per process and set of ``defines`` (the
tunables of the ``.cu`` files, injected as ``-DNAME=value``):

    ks = emulated_kernels()          # the .cu source run on the CPU (gpubp.cuda.emulator)
    ks = cupy_kernels()              # the .cu source on a CUDA device (cupy.RawModule)
    ks.function("bias_sigmoid_f32")  # -> callable
    ks.param("weight_grad", "TILE")  # -> 64, the value the kernels were compiled with

Launchers (``gpubp.cuda.launchers``) read tunables through ``ks.param`` so a launch
shape always matches the compiled shared-memory tiles.
"""
from __future__ import annotations

import functools
import numbers
import re
import threading
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..device import DeviceUnavailable, require_cupy
from . import archs

__all__ = ["DeviceUnavailable", "KernelSet", "kernel_dir", "families", "path", "source", "kernel_names",
           "defaults", "family_of", "normalize_defines", "compile_options", "emulated_kernels", "cupy_kernels",
           "CUPY_OPTIONS", "CUPY_RAWMODULE_ADDS"]

#: the gpubp package folder (this file is gpubp/cuda/sources.py)
_PACKAGE = Path(__file__).resolve().parents[1]


def kernel_dir() -> Path:
    """The directory holding the ``.cu`` files: ``gpubp/_kernels`` in a wheel, else ``<repo>/kernels``."""
    pkg = _PACKAGE
    for d in (pkg / "_kernels", pkg.parent / "kernels"):
        if d.is_dir() and any(d.glob("*.cu")):
            return d
    raise FileNotFoundError(f"no kernel sources: looked for *.cu in {pkg / '_kernels'} (installed wheel) "
                            f"and {pkg.parent / 'kernels'} (source checkout)")


def families() -> tuple[str, ...]:
    """The kernel families, one per ``.cu`` file: ``('delta', 'forward', 'weight_grad')``."""
    return tuple(sorted(p.stem for p in kernel_dir().glob("*.cu")))


def path(family: str) -> Path:
    p = kernel_dir() / f"{family}.cu"
    if not p.is_file():
        raise ValueError(f"unknown kernel family {family!r}; the families are {', '.join(families())}")
    return p


#: ``#include "name.cuh"``: a header of kernels/ that the loader inlines
_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([\w.-]+\.cuh)"[^\n]*$', re.MULTILINE)


@functools.lru_cache(maxsize=None)
def source(family: str) -> str:
    """The text of ``kernels/<family>.cu`` with each ``#include "name.cuh"`` line replaced by that
    header's text from the same folder (each header once; read once per process).

    Every compiler of a family gets this text: NVRTC, ``cupy.RawModule`` (whose cache key hashes the
    source text, so a changed header recompiles every family that includes it) and the emulator;
    none of them is given an include path, so each compiled source is self-contained.  (The emulator
    tells ``__syncthreads()`` call sites apart by line: the inlined text keeps every line its own.)
    ``nvcc -I kernels`` compiles the ``.cu`` files as they are."""
    return _inlined(path(family).read_text(), f"{family}.cu", set())


def _inlined(text: str, where: str, seen: set) -> str:
    def header(m):
        name = m.group(1)
        if name in seen:
            return f"// {name}: inlined above"
        seen.add(name)
        p = kernel_dir() / name
        if not p.is_file():
            raise ValueError(f"{where} includes {name!r}, which is not in {kernel_dir()}")
        body = _inlined(p.read_text(), name, seen).rstrip("\n")
        return f"// ---- {name}: inlined by gpubp.cuda.sources ----\n{body}\n// ---- end of {name} ----"
    return _INCLUDE_RE.sub(header, text)


_KERNEL_RE = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(")
_DEFAULT_RE = re.compile(r"^#ifndef[ \t]+(\w+)[ \t]*\n#define[ \t]+\1[ \t]+(\d+)", re.MULTILINE)   # a header guard has no value


@functools.lru_cache(maxsize=None)
def kernel_names(family: str) -> tuple[str, ...]:
    """The ``extern "C" __global__`` kernels a family defines, in source order."""
    return tuple(_KERNEL_RE.findall(source(family)))


@functools.lru_cache(maxsize=None)
def defaults(family: str) -> dict[str, int]:
    """The tunables of a family and their default values (``#ifndef X / #define X value``)."""
    return {name: int(value) for name, value in _DEFAULT_RE.findall(source(family))}


@functools.lru_cache(maxsize=None)
def family_of(kernel: str) -> str:
    """The family that defines ``kernel``."""
    for fam in families():
        if kernel in kernel_names(fam):
            return fam
    raise ValueError(f"no kernel named {kernel!r}; the kernels are "
                     f"{', '.join(k for f in families() for k in kernel_names(f))}")


def normalize_defines(defines: Mapping[str, int] | None) -> tuple[tuple[str, int], ...]:
    """``{"TILE": 32}`` -> ``(("TILE", 32),)``, sorted (a cache key), after checking each name is a tunable."""
    if not defines:
        return ()
    tunables = sorted({t for f in families() for t in defaults(f)})
    out = []
    for name, value in sorted(defines.items()):
        if name not in tunables:
            raise ValueError(f"unknown kernel tunable {name!r}; the tunables are {', '.join(tunables)}")
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"kernel tunable {name} must be a positive int, got {value!r}")
        out.append((name, int(value)))
    return tuple(out)


#: The options gpubp gives ``cupy.RawModule`` ...
CUPY_OPTIONS = ("-std=c++17",)
#: ... and the ones ``cupy.RawModule`` (CuPy 13 and 14, NVRTC) appends itself
#: (``cupy/cuda/compiler.py``): flush float32 denormals to zero, and functions
#: are device functions unless said otherwise.  ``gpubp.cuda.nvrtc`` compiles with
#: both, so that its resource report is of the code CuPy loads.
CUPY_RAWMODULE_ADDS = ("-ftz=true", "--device-as-default-execution-space")


def compile_options(defines: tuple[tuple[str, int], ...] = ()) -> tuple[str, ...]:
    """The ``-D`` options for a set of tunables (shared by every compiler that reads the sources)."""
    return tuple(f"-D{name}={value}" for name, value in defines)


class KernelSet:
    """The kernels of every family, compiled lazily (one family at a time, once) by ``load(family, options)``."""

    #: what a NULL pointer argument is on this device (None for the emulator; cupy: an 8-byte 0)
    NULL = None

    def __init__(self, device: str, load: Callable[[str, tuple[str, ...]], object],
                 defines: tuple[tuple[str, int], ...] = (), null=None, arch: str = archs.DEFAULT_EMULATED,
                 smem_per_block_optin: Callable[[], int] | None = None, aligned16: Callable | None = None,
                 sms: Callable[[], int] | int = 132, variant: Callable[[Mapping], "KernelSet"] | None = None):
        self.device = device
        self._sms = sms
        self._variant = variant          # defines -> the KernelSet of this device compiled with them
        self.NULL = null
        #: whether an array argument lies 16-byte aligned on this device (the fast GEMMs' 16-byte loads)
        self.aligned16 = aligned16 or _host_aligned16
        self.arch = arch                 # the architecture the kernels run as (the emulator's target; the GPU's)
        self._smem_optin = smem_per_block_optin
        self.defines = dict(defines)
        self._options = compile_options(defines)
        self._load = load
        self._modules: dict[str, object] = {}
        self._functions: dict[str, Callable] = {}
        self._raw: dict[str, Callable] = {}
        self._lock = threading.Lock()

    def __repr__(self):
        return f"<KernelSet {self.device} defines={self.defines}>"

    def module(self, family: str):
        """The compiled module of one family (compiled on first use)."""
        with self._lock:
            mod = self._modules.get(family)
            if mod is None:
                path(family)  # a clear error for an unknown family
                mod = self._modules[family] = self._load(family, self._options)
            return mod

    def function(self, name: str) -> Callable:
        """The kernel ``name`` as ``f(grid, block, args, shared_mem=0)``."""
        f = self._functions.get(name)
        if f is None:
            f = self._functions[name] = self.module(family_of(name)).get_function(name)
        return f

    def variant(self, defines: Mapping[str, int]) -> "KernelSet":
        """The kernels of this device compiled with ``defines`` instead (a tuned tile set); itself when they
        compile the same code as its own (a tunable at its source default counts as absent: a tuned
        {"TILE": 64, "MICRO": 8} is the default build, not a second one)."""
        wanted = _without_defaults(dict(normalize_defines(defines)))
        if wanted == _without_defaults(self.defines):
            return self
        if self._variant is None:
            raise ValueError(f"the {self.device} kernel set makes no variants")
        return self._variant(wanted)

    @functools.cached_property
    def sms(self) -> int:
        """The device's streaming multiprocessors (a launch's blocks against them: split-K); the emulated
        device and a dry run take the H100's 132 unless told otherwise."""
        return int(self._sms() if callable(self._sms) else self._sms)

    @functools.cached_property
    def smem_per_block_optin(self) -> int:
        """The most shared memory one block may have, static + dynamic, after raising the kernel's
        max_dynamic_shared_size_bytes: the device's own figure on a GPU, the arch table's otherwise."""
        if self._smem_optin is not None:
            return int(self._smem_optin())
        return archs.get(self.arch).smem_per_block_optin

    def raw_function(self, name: str) -> Callable:
        """The kernel ``name`` as the device's own callable ``f(grid, block, args, shared_mem=0)``, which
        takes ``NULL`` (not ``None``) for a NULL pointer: what a prepared launch calls."""
        f = self._raw.get(name)
        if f is None:
            mod = self.module(family_of(name))
            raw = getattr(mod, "get_raw_function", mod.get_function)
            f = self._raw[name] = raw(name)
        return f

    def param(self, family: str, name: str) -> int:
        """The value of tunable ``name`` in ``family`` as compiled here (a define, else the source's default)."""
        fam_defaults = defaults(family)
        if name not in fam_defaults:
            raise KeyError(f"{family}.cu has no tunable {name!r}; it has {', '.join(fam_defaults) or 'none'}")
        return self.defines.get(name, fam_defaults[name])


def _without_defaults(defines: dict) -> dict:
    """``defines`` less the tunables set to their source defaults (the same in every family that has them)."""
    out = {}
    for name, value in defines.items():
        if any(defaults(fam).get(name, value) != value for fam in families()):
            out[name] = value
    return out


def data_address(x) -> int:
    """The first byte of a NumPy or CuPy array (CuPy: ``x.data.ptr``, an attribute read; its
    ``__cuda_array_interface__`` would build a dict on every launch)."""
    return x.__array_interface__["data"][0] if type(x) is np.ndarray else x.data.ptr


def _host_aligned16(x) -> bool:
    """The array's own address (NumPy's data pointer, CuPy's device pointer) is 16-byte aligned."""
    return data_address(x) % 16 == 0


def _emulated_aligned16(x) -> bool:
    """Where the emulated device puts an array argument: a copy whose last byte ends at a page-aligned guard
    (so that a read one element past the end faults), i.e. at an address ≡ −nbytes (mod 16)."""
    return x.nbytes % 16 == 0


@functools.lru_cache(maxsize=None)
def _emulated(defines: tuple[tuple[str, int], ...], arch: str) -> KernelSet:
    from . import emulator   # lazily: it needs a C++ compiler, and only the emulated device uses it

    archs.get(arch)          # a clear error for an unknown one
    return KernelSet("emulated", lambda family, options: emulator.load_module(path(family), options=options,
                                                                              code=source(family), arch=arch),
                     defines, aligned16=_emulated_aligned16, arch=arch,
                     variant=lambda d: emulated_kernels(d, arch))


def emulated_kernels(defines: Mapping[str, int] | None = None, arch: str | None = None) -> KernelSet:
    """The kernels on the emulated CUDA device (``gpubp.cuda.emulator``: the ``.cu`` source compiled for the CPU)
    as built for ``arch`` (``__CUDA_ARCH__``, the shared-memory ceiling; default ``archs.DEFAULT_EMULATED``,
    sm_90: ``"sm_75"`` runs the code paths of a GPU without cp.async); arrays are NumPy arrays.  Cached per
    ``defines`` and ``arch``."""
    return _emulated(normalize_defines(defines), arch or archs.DEFAULT_EMULATED)


class _CupyModule:
    """A cupy.RawModule whose kernels take ``None`` for a NULL pointer, on every CuPy gpubp supports.
    CuPy 13 passes ``None`` as a garbage pointer (cupy/cupy#9046: it hands the driver a NULL *argument*
    pointer instead of a pointer to a NULL value; fixed in CuPy 14.0 by cupy/cupy#9525), so NULL
    travels as an 8-byte zero, which both read as a NULL ``T*``."""

    NULL = np.uint64(0)

    def __init__(self, raw_module):
        self.raw_module = raw_module

    def get_raw_function(self, name):
        return self.raw_module.get_function(name)

    def get_function(self, name):
        raw = self.raw_module.get_function(name)

        def launch(grid, block, args, shared_mem=0):
            raw(grid, block, tuple(self.NULL if a is None else a for a in args), shared_mem=shared_mem)

        launch.__name__ = name
        return launch


@functools.lru_cache(maxsize=None)
def _cupy(defines: tuple[tuple[str, int], ...]) -> KernelSet:
    cupy = require_cupy()   # raises DeviceUnavailable with the reason and the fix

    def load(family, options):
        return _CupyModule(cupy.RawModule(code=source(family), options=CUPY_OPTIONS + options))

    dev = cupy.cuda.Device()
    rt = cupy.cuda.runtime
    # cudaDevAttrMaxSharedMemoryPerBlockOptin (97 in CUDA's driver_types.h, where CuPy has no name for it)
    optin = getattr(rt, "cudaDevAttrMaxSharedMemoryPerBlockOptin", 97)
    return KernelSet("cupy", load, defines, null=_CupyModule.NULL, arch=f"sm_{dev.compute_capability}",
                     smem_per_block_optin=lambda: rt.deviceGetAttribute(optin, dev.id),
                     sms=lambda: rt.deviceGetAttribute(getattr(rt, "cudaDevAttrMultiProcessorCount", 16), dev.id),
                     variant=cupy_kernels)


def cupy_kernels(defines: Mapping[str, int] | None = None) -> KernelSet:
    """The kernels on the current CUDA device through ``cupy.RawModule``; arrays are CuPy arrays.
    Cached per ``defines``.  Raises :class:`DeviceUnavailable` without CuPy or a device."""
    return _cupy(normalize_defines(defines))
