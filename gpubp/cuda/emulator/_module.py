"""EmulatedModule / EmulatedKernel: the CuPy-RawModule-shaped front of the emulator.

A launch ``kernel(grid, block, args)`` checks the launch shape and every
argument against the kernel's real parameter types (strictly: no Python
scalars, exact dtypes, C-contiguous arrays), then calls ``gpubp_launch`` in
the module's library (runtime.cpp), which runs the grid on guarded copies of
the arrays and copies results back.  Dynamic shared memory (``shared_mem``)
follows CUDA's rule for the module's target architecture (gpubp.cuda.archs):
above 48 KiB a block needs ``kernel.max_dynamic_shared_size_bytes`` raised
first, as with a ``cupy.RawKernel``.  Launches are serialized by one lock
across all modules (the runtime's signal handling is process-wide).
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import archs
from ._abi import (ABI_VERSION, ARG_BUFFER, ARG_NULL, ARG_VALUE, E_OK, E_SMEM, MAX_ARGS, Arg, Buffer, Error,
                   ParamDesc, SharedCfg)
from ._build import DYNAMIC_SHARED, build
from ._elf import tls_symbols
from ._errors import EmulatedDeviceError
from ._report import device_error
from ._source import parse_options, target_arch

_LAUNCH_LOCK = threading.Lock()  # one launch at a time, process-wide

# CUDA's limits (cudaErrorInvalidConfiguration beyond them).
MAX_BLOCK = (1024, 1024, 64)
MAX_THREADS_PER_BLOCK = 1024
MAX_GRID = (2**31 - 1, 65535, 65535)

#: GPUBP_EMULATOR_BLOCK_ORDER: the order a grid's blocks run in (runtime.cpp's BlockOrder): unset or "index"
#: (x fastest, then y, then z), "reverse", or "shuffle:SEED" (a permutation drawn from the integer SEED)
BLOCK_ORDER_ENV = "GPUBP_EMULATOR_BLOCK_ORDER"
_BLOCK_ORDER = re.compile(r"index|reverse|shuffle:\d{1,19}")


def block_order() -> str:
    """GPUBP_EMULATOR_BLOCK_ORDER's value ("index" when unset); ValueError naming the choices if it is none."""
    value = os.environ.get(BLOCK_ORDER_ENV, "") or "index"
    if not _BLOCK_ORDER.fullmatch(value):
        raise ValueError(f"{BLOCK_ORDER_ENV}={value!r}: the emulated device runs a grid's blocks in 'index' order "
                         f"(the default), 'reverse', or 'shuffle:SEED' (SEED an integer); unset it or give one")
    return value

_SCALAR_KINDS = {"f": "float", "i": "int", "u": "uint"}  # category (thunks.h) -> NumPy dtype prefix


@dataclass(frozen=True)
class _Param:
    name: str
    ctype: str             # source text, e.g. "const float*"
    pointer: bool
    const: bool            # pointer to const: never copied back, mapped read-only
    dtype: np.dtype | None  # element dtype; None for void* (any dtype)
    unit: int              # bytes an array's size must be a multiple of (vector structs)


def _param(name: str, ctype: str, d: ParamDesc, where: str) -> _Param:
    """The launcher's view of one parameter, from the compiler's description."""
    cat, size, pointer = chr(d.category), d.size, bool(d.pointer)
    dtype, unit = None, 1
    if cat == "b" and size == 1:
        dtype = np.dtype(np.bool_)
    elif cat in _SCALAR_KINDS:
        try:
            dtype = np.dtype(f"{_SCALAR_KINDS[cat]}{8 * size}")
        except TypeError:
            dtype = None
    elif cat in "FDI" and pointer:  # float2/float4/double2/int4...: arrays of the element type
        dtype, unit = np.dtype({"F": np.float32, "D": np.float64, "I": np.int32}[cat]), size
    supported = dtype is not None or (cat == "v" and pointer)
    if not supported:
        raise TypeError(f"{where}: parameter {name!r} has type {ctype!r}, which the emulator cannot pass "
                        f"(supported: numeric values, pointers to numbers, void*, float2/float4-style vectors)")
    return _Param(name, ctype, pointer, bool(d.const_pointee), dtype, unit)


def _dims(value, what: str, where: str) -> tuple[int, int, int]:
    dims = value if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"{where}: {what} must be an int or a tuple of 1 to 3 ints, got {value!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if any(d <= 0 for d in dims):
        raise ValueError(f"{where}: invalid configuration argument: {what} {dims} has a dimension <= 0")
    return dims


class EmulatedKernel:
    """One ``extern "C" __global__`` kernel; call it like a ``cupy.RawKernel``.

    ``name``, ``param_names`` and ``param_types`` (normalized source text,
    e.g. ``"const float*"``, without ``__restrict__``) describe the signature.
    """

    def __init__(self, module: "EmulatedModule", name: str, param_names, param_types):
        self.module = module
        self.name = name
        self.param_names = tuple(param_names)
        self.param_types = tuple(param_types)
        lib = module._lib
        where = self._where()
        descs = (ParamDesc * max(1, len(self.param_names)))()
        n = getattr(lib, f"gpubp_describe_{name}")(descs, len(self.param_names))
        if n != len(self.param_names):
            raise EmulatedDeviceError(f"{where}: the compiler sees {n} parameters, the source parser "
                                      f"{len(self.param_names)} ({self.param_names}); emulator bug")
        self._params = tuple(_param(nm, t, d, where) for nm, t, d in zip(self.param_names, self.param_types, descs))
        self._thunk = ctypes.cast(getattr(lib, f"gpubp_thunk_{name}"), ctypes.c_void_p).value
        self._max_dynamic: int | None = None  # max_dynamic_shared_size_bytes, once raised
        self._static_bytes = 0                 # static shared memory a launch with shared_mem > 0 measured

    # ------------------------------------------------------------ shared memory
    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        """The most dynamic shared memory a launch may ask for, as ``cupy.RawKernel``'s attribute
        (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES): 48 KiB less the kernel's static shared
        memory until raised (the emulator knows that once a launch with ``shared_mem > 0`` has
        measured it, else counts 0).  Raising it to ``n`` needs static + n within the target
        architecture's per-block ceiling (``module.arch``), else ``ValueError``, where CuPy raises
        CUDA_ERROR_INVALID_VALUE."""
        if self._max_dynamic is not None:
            return self._max_dynamic
        return archs.SMEM_PER_BLOCK_DEFAULT - self._static_bytes

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, nbytes) -> None:
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
            raise ValueError(f"{self._where()}: max_dynamic_shared_size_bytes must be an int >= 0, got {nbytes!r}")
        ceiling = archs.get(self.module.arch).smem_per_block_optin
        if int(nbytes) + self._static_bytes > ceiling:
            raise ValueError(f"{self._where()}: max_dynamic_shared_size_bytes = {int(nbytes)} with "
                             f"{self._static_bytes} B of static shared memory exceeds the {ceiling} B "
                             f"({ceiling // 1024} KiB) a block may have on {self.module.arch} "
                             f"(CUDA_ERROR_INVALID_VALUE on a GPU)")
        self._max_dynamic = int(nbytes)

    def _shared_config(self, shared_mem, where: str) -> SharedCfg:
        """The runtime's shared-memory settings for a launch, after CUDA's checks of ``shared_mem``."""
        if isinstance(shared_mem, bool) or not isinstance(shared_mem, (int, np.integer)) or shared_mem < 0:
            raise ValueError(f"{where}: shared_mem must be an int >= 0 (bytes of dynamic shared memory), "
                             f"got {shared_mem!r}")
        shared_mem = int(shared_mem)
        mod = self.module
        cfg = SharedCfg(dynamic_bytes=shared_mem, static_budget=-1, nvars=0)
        if shared_mem == 0:
            return cfg
        if not mod.extern_shared:
            raise ValueError(f"{where}: shared_mem={shared_mem}: dynamic shared memory, but module {mod.name} "
                             f"declares no extern __shared__ array to use it (a GPU would leave the bytes unused; "
                             f"here that is taken for a launch-shape bug): pass shared_mem=0")
        problem = archs.shared_memory_problem(mod.arch, self._static_bytes, shared_mem, self._max_dynamic)
        if problem:
            raise ValueError(f"{where}: shared_mem={shared_mem} refused on {mod.arch}: {problem} "
                             f"(CUDA_ERROR_INVALID_VALUE on a GPU)")
        optin = archs.get(mod.arch).smem_per_block_optin
        cfg.static_budget = (optin - self._max_dynamic if self._max_dynamic is not None
                             else archs.SMEM_PER_BLOCK_DEFAULT - shared_mem)
        cfg.nvars = mod._static_vars_len // 2
        cfg.vars = ctypes.cast(mod._static_vars, ctypes.POINTER(ctypes.c_int64))
        return cfg

    def _where(self) -> str:
        return f"kernel {self.name} ({self.module.name})"

    def __repr__(self) -> str:
        sig = ", ".join(f"{t} {n}" for t, n in zip(self.param_types, self.param_names))
        return f"<EmulatedKernel {self.name}({sig}) from {self.module.name}>"

    def __call__(self, grid, block, args, shared_mem: int = 0) -> None:
        """Run the kernel on every thread of ``grid`` x ``block``.

        ``args``: a tuple with one entry per parameter: a C-contiguous NumPy
        array of the exact element dtype (or ``None``, a NULL pointer) for a
        pointer, a NumPy scalar of the exact dtype for a value.  Arrays are
        updated in place when the launch succeeds; on
        :class:`EmulatedDeviceError` they are left unchanged.  ``shared_mem``:
        bytes of dynamic shared memory per block (the ``extern __shared__``
        arrays), NaN-poisoned like static shared memory; above 48 KiB (static
        included) raise :attr:`max_dynamic_shared_size_bytes` first.
        """
        where = self._where()
        grid3 = _dims(grid, "grid", where)
        block3 = _dims(block, "block", where)
        if any(b > m for b, m in zip(block3, MAX_BLOCK)) or block3[0] * block3[1] * block3[2] > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"{where}: invalid configuration argument: block {block3} exceeds CUDA's limits "
                             f"({MAX_THREADS_PER_BLOCK} threads per block, dimensions at most {MAX_BLOCK})")
        if any(g > m for g, m in zip(grid3, MAX_GRID)):
            raise ValueError(f"{where}: invalid configuration argument: grid {grid3} exceeds CUDA's limits {MAX_GRID}")
        shared = self._shared_config(shared_mem, where)
        block_order()                                   # the runtime reads it; a bad value is refused here
        c_bufs, c_args, buffers, keep = self._marshal(args, where)
        err = Error()
        grid_c = (ctypes.c_uint * 3)(*grid3)
        block_c = (ctypes.c_uint * 3)(*block3)
        with _LAUNCH_LOCK:
            code = self.module._lib.gpubp_launch(self._thunk, grid_c, block_c, ctypes.byref(shared), len(c_bufs),
                                                 c_bufs, len(c_args), c_args, ctypes.byref(err))
        del keep
        if shared.static_budget >= 0 and code in (E_OK, E_SMEM):
            self._static_bytes = max(self._static_bytes, int(err.static_smem))
        if code == E_SMEM:
            problem = archs.shared_memory_problem(self.module.arch, int(err.static_smem), shared.dynamic_bytes,
                                                  self._max_dynamic)
            raise ValueError(f"{where}: shared_mem={shared.dynamic_bytes} refused on {self.module.arch}: {problem} "
                             f"(CUDA_ERROR_INVALID_VALUE on a GPU; the emulator learns a kernel's static shared "
                             f"memory by running it: the __shared__ variables it wrote; the arrays are unchanged)")
        if code != E_OK:
            raise device_error(self.name, self.module.name, self._params, err, block3, args, buffers,
                               shared_mem=shared.dynamic_bytes)

    # ------------------------------------------------------------ arguments
    def _marshal(self, args, where):
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"{where}: args must be a tuple, got {type(args).__name__}")
        if len(args) > MAX_ARGS:
            raise TypeError(f"{where}: at most {MAX_ARGS} arguments are supported, got {len(args)}")
        if len(args) != len(self._params):
            sig = ", ".join(f"{p.ctype} {p.name}" for p in self._params)
            raise TypeError(f"{where}: takes {len(self._params)} arguments ({sig}), got {len(args)}")
        keep = []      # keeps the scalar copies alive during the call
        buffers = []   # [(ptr, nbytes, [param indices])]
        by_span = {}
        c_args = (Arg * max(1, len(args)))()
        for i, (p, a) in enumerate(zip(self._params, args)):
            if p.pointer:
                if a is None:
                    c_args[i].kind = ARG_NULL
                    continue
                self._check_array(p, a, where)
                span = (a.ctypes.data, a.nbytes)
                if a.nbytes and span in by_span:  # the same array again: share its buffer, as on a GPU
                    b = by_span[span]
                else:
                    b = len(buffers)
                    buffers.append((span[0], span[1], []))
                    if a.nbytes:
                        by_span[span] = b
                buffers[b][2].append(i)
                c_args[i].kind = ARG_BUFFER
                c_args[i].buffer = b
            else:
                value = self._check_scalar(p, a, where)
                keep.append(value)
                c_args[i].kind = ARG_VALUE
                c_args[i].value = value.ctypes.data
        self._check_overlap(buffers, where)
        c_bufs = (Buffer * max(1, len(buffers)))()
        for b, (ptr, nbytes, users) in enumerate(buffers):
            writers = [i for i in users if not self._params[i].const]
            for i in writers:
                if not args[i].flags.writeable:
                    raise ValueError(f"{where}: parameter {self._params[i].name!r} ({self._params[i].ctype}) got a "
                                     f"read-only array; pass a writeable array or declare the parameter const")
            c_bufs[b].host = ptr
            c_bufs[b].nbytes = nbytes
            c_bufs[b].copy_out = int(bool(writers))
            c_bufs[b].read_only = int(not writers)
        return c_bufs, c_args, buffers, keep

    @staticmethod
    def _check_array(p: _Param, a, where: str) -> None:
        if (isinstance(a, np.ndarray) and (p.dtype is None or a.dtype == p.dtype) and a.flags.c_contiguous
                and a.flags.aligned and a.nbytes % p.unit == 0):
            return
        what = f"{where}: parameter {p.name!r} ({p.ctype})"
        if not isinstance(a, np.ndarray):
            hint = " (a NumPy scalar is a value, not an array)" if isinstance(a, np.generic) else ""
            raise TypeError(f"{what} needs a NumPy array, got {type(a).__name__}{hint}")
        if p.dtype is not None and a.dtype != p.dtype:
            raise TypeError(f"{what} needs a {p.dtype} array, got {a.dtype}; convert with x.astype(np.{p.dtype})")
        if not a.flags.c_contiguous:
            raise ValueError(f"{what} got a non-C-contiguous array (strides {a.strides}); the kernel ignores "
                             f"strides: pass np.ascontiguousarray(x)")
        if not a.flags.aligned:
            raise ValueError(f"{what} got a misaligned array; pass np.ascontiguousarray(x)")
        raise ValueError(f"{what} needs a size in bytes that is a multiple of {p.unit}, got {a.nbytes}")

    @staticmethod
    def _check_scalar(p: _Param, a, where: str) -> np.ndarray:
        if isinstance(a, np.generic) and a.dtype == p.dtype:
            return np.array(a)
        what = f"{where}: parameter {p.name!r} ({p.ctype})"
        if isinstance(a, (bool, int, float)):
            raise TypeError(f"{what} got a Python {type(a).__name__}; pass np.{p.dtype}({a!r}) (CuPy would send a "
                            f"Python int as long long and a float as double, whatever the parameter type)")
        if not isinstance(a, np.generic):
            raise TypeError(f"{what} needs a NumPy scalar of dtype {p.dtype}, got {type(a).__name__}")
        raise TypeError(f"{what} needs a NumPy {p.dtype} scalar, got {a.dtype}; pass np.{p.dtype}(x)")

    def _check_overlap(self, buffers, where):
        spans = sorted((ptr, ptr + n, users) for ptr, n, users in buffers if n)
        for (_, hi1, u1), (lo2, _, u2) in zip(spans, spans[1:]):
            if lo2 < hi1:
                raise ValueError(f"{where}: parameters {self._params[u1[0]].name!r} and {self._params[u2[0]].name!r} "
                                 f"are partially overlapping arrays; pass the same array or disjoint arrays")


class _KernelNotFound(KeyError):
    def __str__(self) -> str:  # KeyError would show the message's repr
        return str(self.args[0])


class EmulatedModule:
    """The kernels of one CUDA source, compiled for the emulated device.

    Mirrors ``cupy.RawModule(code=..., options=...)``: ``options`` may hold
    ``-DNAME[=VALUE]`` / ``-UNAME`` (honoured, in order) and NVRTC
    code-generation options (ignored, but for ``-arch=sm_XY``); anything else
    raises ``ValueError``.  ``name`` labels the module in messages.  ``arch``
    (else an ``-arch=`` option, else ``"sm_90"``) is the GPU the module is
    built for: ``__CUDA_ARCH__`` (``__reduce_*_sync`` need sm_80) and the
    per-block shared-memory ceiling (gpubp.cuda.archs).  Compiles (or loads
    from the disk cache) at construction; a compile error raises
    EmulatedCompileError.
    """

    def __init__(self, code: str, options=(), name: str = "<string>", *, arch: str | None = None,
                 _filename: str | None = None):
        if not isinstance(code, str):
            raise TypeError(f"code must be the CUDA source as a str, got {type(code).__name__}")
        if isinstance(options, str):
            raise TypeError(f"options must be a tuple of strings, not the string {options!r}; write ({options!r},)")
        self.name = name
        self.options = tuple(options)
        macros = parse_options(self.options)
        self.arch = arch or target_arch(self.options) or archs.DEFAULT_EMULATED
        archs.get(self.arch)  # a clear error for an unknown one
        filename = _filename or (name if name.endswith(".cu") else f"{name}.cu")
        self.library_path = build(code, macros, filename, self.arch)
        self._lib = ctypes.CDLL(str(self.library_path))
        lib = self._lib
        lib.gpubp_abi_version.restype = ctypes.c_int
        lib.gpubp_sizeof_error.restype = ctypes.c_int
        if lib.gpubp_abi_version() != ABI_VERSION or lib.gpubp_sizeof_error() != ctypes.sizeof(Error):
            raise EmulatedDeviceError(f"{self.library_path}: runtime ABI mismatch (stale build?): delete it")
        lib.gpubp_launch.restype = ctypes.c_int
        lib.gpubp_launch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                     ctypes.POINTER(SharedCfg), ctypes.c_int, ctypes.POINTER(Buffer), ctypes.c_int,
                                     ctypes.POINTER(Arg), ctypes.POINTER(Error)]
        lib.gpubp_dynamic_shared_bytes.restype = ctypes.c_longlong
        self._read_shared_memory(int(lib.gpubp_dynamic_shared_bytes()))
        lib.gpubp_module_info.restype = ctypes.c_char_p
        info = json.loads(lib.gpubp_module_info().decode())
        self._signatures = {k["name"]: k for k in info["kernels"]}
        self._kernels: dict[str, EmulatedKernel] = {}

    def _read_shared_memory(self, capacity: int) -> None:
        """The module's shared memory from its TLS symbols: ``extern_shared`` (the names of its
        ``extern __shared__`` arrays, as the linker spells them) and the static ``__shared__``
        variables as (offset, size) pairs for the runtime's measurement."""
        symbols = [s for s in tls_symbols(self.library_path) if s.defined]
        base = next(s.offset for s in symbols if s.name == DYNAMIC_SHARED)
        aliases = {s.name for s in symbols if s.offset == base and s.size == capacity and s.name != DYNAMIC_SHARED}
        self.extern_shared = tuple(sorted(aliases)) if capacity else ()
        static = [(s.offset, s.size) for s in symbols
                  if s.name != DYNAMIC_SHARED and s.name not in aliases and "g_tls_anchor" not in s.name and s.size]
        self.static_shared_bytes = sum(size for _, size in static)
        flat = [v for pair in static for v in pair]
        self._static_vars = (ctypes.c_int64 * max(1, len(flat)))(*flat)
        self._static_vars_len = len(flat)

    @property
    def kernel_names(self) -> tuple[str, ...]:
        return tuple(self._signatures)

    def get_function(self, name: str) -> EmulatedKernel:
        """The kernel ``name``; ``KeyError`` listing the available kernels if absent."""
        if name not in self._kernels:
            if name not in self._signatures:
                raise _KernelNotFound(f"module {self.name} has no extern \"C\" __global__ kernel {name!r}; "
                                      f"available: {', '.join(self._signatures) or '(none)'}")
            s = self._signatures[name]
            self._kernels[name] = EmulatedKernel(self, name, s["param_names"], s["param_types"])
        return self._kernels[name]

    def __repr__(self) -> str:
        return f"<EmulatedModule {self.name} kernels={list(self._signatures)}>"


_loaded: dict[tuple, EmulatedModule] = {}
_loaded_lock = threading.Lock()


def load_module(path, options=(), arch: str | None = None, code: str | None = None) -> EmulatedModule:
    """The module for the ``.cu`` file at ``path`` (or for ``code``, its text as the loader prepared it:
    gpubp.cuda.sources inlines the headers), compiled once per process for each (resolved path, text,
    options, arch)."""
    resolved = Path(path).resolve()
    if code is None:
        code = resolved.read_text()
    key = (str(resolved), code, tuple(options), arch)
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = EmulatedModule(code, options, name=resolved.name, arch=arch, _filename=str(resolved))
        return _loaded[key]
