"""An emulated CUDA device: run kernels/*.cu on the CPU, with a GPU's rules checked.

The *same* ``.cu`` source that CuPy compiles with NVRTC is compiled here with
the system C++ compiler (``$CXX`` or ``g++``) plus ``cuda_shim.h``, and a
launch runs the whole grid on the calling thread::

    mod = EmulatedModule(code=src, options=("-DTILE=16",), name="weight_grad")
    mod = load_module("kernels/weight_grad.cu", options=())   # compiled once per process
    k = mod.get_function("weight_grad_naive_f32")
    # dW = scale · a_prevᵀ delta, db = scale · Σ_r delta (the signature of kernels/weight_grad.cu)
    k(grid, block, (a_prev, delta, dW, db, np.int32(B), np.int32(I), np.int32(O), np.float32(1 / B)),
      shared_mem=0)

What a launch honours, and checks:

* Grid and blocks: blocks run one after another; inside a block each thread
  is a fiber that runs until it reaches ``__syncthreads()`` or returns.  A
  barrier releases when every thread of the block waits at it.  Threads run
  in index order, reversed on alternate blocks and barrier phases, and shared
  memory is filled with NaN (0xFFFADBAD words) before each block, so a missing
  barrier or a read of never-written shared memory shows up as a wrong result.
* Barrier errors (``EmulatedDeviceError``): a thread that returns while the
  rest of its block waits at a barrier; threads waiting at different
  ``__syncthreads()`` call sites (told apart by source line).
* Global memory: each array argument is copied into its own mapping whose
  data ends exactly at a 4 MiB ``PROT_NONE`` guard, so an access even one
  element past the end faults; the bytes between the leading guard and the
  data start (the rest of the first page) hold a canary checked after the
  launch, so a write just before the start is caught (a *read* there is not;
  one that reaches the leading guard is).  ``const T*`` arrays are mapped
  read-only.  The error names kernel, block, thread, parameter, element index
  and read/write.  The same array passed twice shares one mapping (aliasing as
  on a GPU); partially overlapping arrays are refused.  Arrays get the results
  only when the launch succeeds.  An access far outside every array may land
  in another mapping and go unnoticed.
* Arguments are checked strictly against the parameter types the compiler
  sees: ``float*`` needs a C-contiguous float32 array (``None`` = NULL),
  ``int`` needs ``np.int32`` (never a Python int), and so on.
* Faults, barrier errors, stack overflow (64 KiB per thread), integer
  division by zero and device ``assert`` become ``EmulatedDeviceError``; the
  process and the module stay usable.

Not supported (a compile error, or ``ValueError`` at launch): warp shuffles and
votes (``__shfl*_sync``, ``__ballot_sync``, ``__syncwarp``, ...), dynamic shared
memory (``extern __shared__``, ``shared_mem > 0``), textures, streams,
cooperative groups.  Threads of a block never run concurrently, so spin-waits
on another thread hang.  ``-D``/``-U`` are the only honoured options.
"""
from ._build import compiler_available
from ._errors import EmulatedCompileError, EmulatedDeviceError
from ._module import EmulatedKernel, EmulatedModule, load_module

__all__ = ["EmulatedModule", "EmulatedKernel", "EmulatedDeviceError", "EmulatedCompileError", "load_module",
           "compiler_available"]
