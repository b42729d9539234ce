"""Exceptions raised by the emulated CUDA device."""
from __future__ import annotations


class EmulatedDeviceError(RuntimeError):
    """A kernel did something that is an error (or undefined) on a real GPU.

    Raised by a launch for an out-of-bounds access, a write before the start
    of an array or past the end of dynamic shared memory, a misaligned vector
    access or asynchronous copy, a thread that skips a barrier its block
    reaches, threads that wait at different ``__syncthreads()`` calls, a warp
    primitive whose named lanes never all arrive (or that reads a lane outside
    its mask), a stack overflow, an integer division by zero, or a
    device-side ``assert``.  The arrays passed to the
    launch are left as they were before it.  Attributes, where they apply
    (else ``None``): ``kernel``, ``block`` and ``thread`` (``(x, y, z)``
    tuples), ``param`` (parameter name), ``index`` (element index into it),
    ``access`` (``"read"``/``"write"``).
    """

    def __init__(self, message: str, *, kernel: str | None = None, block=None, thread=None,
                 param: str | None = None, index: int | None = None, access: str | None = None):
        super().__init__(message)
        self.kernel = kernel
        self.block = block
        self.thread = thread
        self.param = param
        self.index = index
        self.access = access


class EmulatedCompileError(EmulatedDeviceError):
    """The kernel source did not compile for the emulator (message has the
    compiler's output), or no C++ compiler is available."""
