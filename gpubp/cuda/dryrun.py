"""A kernel backend that launches nothing: what a training step asks of a GPU, seen without one.

``dry_run_backend(log)`` is a kernel backend whose launch path is the cupy
backend's (the same launchers, the same prepared steps, NumPy arrays for
CuPy's) but whose kernels only write down each launch in ``log``: name, grid,
block, shared memory and the Launch itself (its record in
``launchers.SPECS`` and its (B, I, O)).  Inside ``backend.no_op_arrays()`` the
array-module calls of a step (the gather, cuBLAS's GEMM, a reduction) are
written down too instead of run, so a step costs only gpubp's own Python:

    log = []
    net = MLP([784, 30, 10], backend=dry_run_backend(log, gemm="own"))
    ...
    with net.backend.no_op_arrays():
        step(idx)                # log: every kernel and array call of one step, nothing computed

``gpubp plan`` lists such a log; the bench's ``host`` group times such steps.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from . import archs, sources
from .backend import KernelBackend


@dataclass
class Launched:
    """One entry of a dry run's log: a kernel launch (``kind="kernel"``) or an array-module call
    (``kind="array"``: the function's name, and the shapes of its array arguments)."""
    kind: str
    name: str
    grid: tuple = ()
    block: tuple = ()
    shared_mem: int = 0
    shapes: list = field(default_factory=list)


class _RecordingModule:
    """A compiled family whose every kernel only appends its call to the log (as a raw tuple: the
    log is read by :func:`entries`, so that a launch costs no more than a bare call would)."""

    def __init__(self, log):
        self.log = log

    def get_function(self, name):
        append = self.log.append

        def kernel(grid, block, args, shared_mem=0):
            append(("kernel", name, grid, block, shared_mem, args))
        kernel.__name__ = name
        return kernel


def recording_kernels(log: list, defines=None, arch: str = archs.DEFAULT_EMULATED, sms: int = 132) -> sources.KernelSet:
    """A KernelSet whose kernels launch nothing and append their call to ``log``, for a device of ``arch``
    with ``sms`` SMs (its per-block shared-memory ceiling decides what a launch may take, its SMs how far a
    GEMM's reduction is split)."""
    return sources.KernelSet("dry-run", lambda family, options: _RecordingModule(log),
                             sources.normalize_defines(defines), arch=arch, sms=sms,
                             variant=lambda d: recording_kernels(log, d, arch, sms))


class _NoOpArrays:
    """An array module whose functions do nothing but append their call to the log (attributes that
    are not functions, such as ``ndarray`` or ``float32``, are the real module's)."""

    def __init__(self, module, log):
        self._module, self._log = module, log

    def __getattr__(self, name):          # the first lookup of a name only: it is then an attribute
        real = getattr(self._module, name)
        if not callable(real) or isinstance(real, type):
            return real
        append = self._log.append

        def call(*args, **kwargs):
            append(("array", name, args, kwargs))
        setattr(self, name, call)          # a module attribute's cost, as cupy.matmul's
        return call


def entries(log: list) -> list[Launched]:
    """The log of a dry run as :class:`Launched` records, in order."""
    out = []
    for item in log:
        if item[0] == "kernel":
            _, name, grid, block, smem, args = item
            out.append(Launched("kernel", name, tuple(grid), tuple(block), smem,
                                [tuple(a.shape) for a in args if getattr(a, "ndim", 0)]))
        else:
            _, name, args, kwargs = item
            arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]
            out.append(Launched("array", name, shapes=[a.shape for a in arrays]))
    return out


class DryRunBackend(KernelBackend):
    """The kernel backend of a dry run (see the module's docstring)."""

    #: its GEMMs stand for cuBLAS's: gpubp sets no BLAS threads for them (gpubp.blas)
    host_blas = False

    def __init__(self, log, defines=None, arch=archs.DEFAULT_EMULATED, sms=132, **options):
        super().__init__("dry-run", np, recording_kernels(log, defines, arch, sms), **options)
        self.log = log

    def empty(self, shape, dtype):
        """Zeros: no kernel ever writes these arrays, and the array calls of a recorded step read them."""
        return self.xp.zeros(shape, dtype=dtype)

    @contextlib.contextmanager
    def no_op_arrays(self):
        """Array-module calls of the ops inside are written down, not run."""
        real = self.xp
        self.xp = _NoOpArrays(real, self.log)
        try:
            yield
        finally:
            self.xp = real


def dry_run_backend(log: list, arch: str = archs.DEFAULT_EMULATED, sms: int = 132, **options) -> DryRunBackend:
    """A dry-run kernel backend for a device of ``arch`` with ``sms`` SMs, with the kernel backends' options
    (gemm, fused_update, fused_step, …, defines)."""
    from .backend import check_options
    check_options(dict(options))
    return DryRunBackend(log, arch=arch, sms=sms, **options)
