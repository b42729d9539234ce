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

* Grid and blocks: blocks run one after another (in index order; with
  ``GPUBP_EMULATOR_BLOCK_ORDER=reverse`` or ``shuffle:SEED`` backwards or in a
  seeded random order, as a GPU may: a result must not depend on which block
  of a grid runs last); inside a block each thread
  is a fiber that runs until it reaches ``__syncthreads()``, a
  warp-synchronous primitive, or returns.  A barrier releases when every
  thread of the block waits at it.  Each sweep over the runnable threads goes
  in index order, reversed on alternate sweeps and blocks, and shared memory
  (static and dynamic) is filled with NaN (0xFFFADBAD words) before each
  block, so a missing barrier or a read of never-written shared memory shows
  up as a wrong result.
* Barrier errors (``EmulatedDeviceError``): a thread that returns while the
  rest of its block waits at a barrier; threads waiting at different
  ``__syncthreads()`` call sites (told apart by source line).
* Warps: 32 consecutive threads of the block.  ``__shfl_sync``,
  ``__shfl_up_sync``, ``__shfl_down_sync``, ``__shfl_xor_sync`` (any 4- or
  8-byte number, with ``width``), ``__ballot_sync``, ``__any_sync``,
  ``__all_sync``, ``__syncwarp`` and, when built for sm_80 or newer,
  ``__reduce_add/min/max_sync`` are a rendezvous of the lanes the mask names:
  each waits until all have arrived at the same call (the same source line;
  ``__syncwarp()`` calls meet across lines, as on sm_70+) with the same mask.
  Between two such points a lane runs on alone, in varying order with the
  others, so code that relies on implicit lockstep (no ``__syncwarp``) reads
  stale or poisoned shared memory.  Errors, naming the primitive, its line
  and the lanes: a named lane that never arrives (it returned, does not exist
  in a partial warp, waits at ``__syncthreads()`` or at another call, or
  calls with another mask), a caller missing from its own mask, a shuffle
  reading a lane outside the mask (stricter than a GPU, where that value is
  merely undefined), a width that is not a power of 2.  ``__activemask()``
  returns the lanes of the warp that reach the same ``__activemask()`` call
  (those a GPU would find converged there).
* Dynamic shared memory: ``extern __shared__ T buf[]`` (every such name of a
  module is the same 16-byte-aligned region, as on a GPU) sized by the
  launch's ``shared_mem``.  Static + dynamic above 48 KiB is refused
  (``ValueError``, as CUDA_ERROR_INVALID_VALUE) unless the kernel's
  ``max_dynamic_shared_size_bytes`` was raised first (the attribute of
  ``cupy.RawKernel``), and raising it beyond the target architecture's
  per-block ceiling is refused (``EmulatedModule(..., arch="sm_86")`` or an
  ``-arch=`` option; default sm_90; the table is gpubp.cuda.archs).  The
  emulator learns a kernel's static shared memory by running it (the
  ``__shared__`` variables a launch with ``shared_mem > 0`` writes), so that
  check follows the run (the arrays are left unchanged).  A write past
  ``shared_mem`` is found after the launch.
* Asynchronous copies (cuda_pipeline.h: ``__pipeline_memcpy_async`` of 4, 8
  or 16 bytes, with ``zfill``; ``__pipeline_commit``;
  ``__pipeline_wait_prior(n)``): the source is read at issue, the destination
  holds poison from the issue and receives the data at the wait that
  completes its group, never earlier, so a read before the wait, or of
  another thread's copy without a barrier after the waits, reads NaN.  The
  destination must be shared memory, the source not; sizes and alignment are
  checked.  (On sm_75 the real header copies synchronously: code right here
  is right there.)
* Alignment: a copy of a ``float2``/``int2`` (8 bytes) or
  ``float4``/``double2``/``int4`` (16) from or to an address not aligned to
  its size (a cast pointer) is an ``EmulatedDeviceError`` naming kernel,
  block, thread, parameter and element, as a GPU faults with "misaligned
  address".
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
* Faults, barrier and warp errors, stack overflow (64 KiB per thread),
  integer division by zero and device ``assert`` become
  ``EmulatedDeviceError``; the process and the module stay usable.
* ``__CUDA_ARCH__`` is the target architecture's (900 by default), so
  ``#if __CUDA_ARCH__ >= 800`` paths can be run for each.

Not modelled: races between blocks (they run one after another) and between
the lanes of a warp inside one instruction; memory consistency beyond "a
write is seen by whoever runs after it" (fences are no-ops); shared-memory
bank conflicts and every other cost (the emulator says nothing of speed);
out-of-bounds *reads* of shared memory (they read poison or a neighbour, not
a fault); a kernel's static shared memory above 48 KiB (NVRTC refuses it);
``__match_*_sync``, ``__uni_sync``, the maskless legacy intrinsics,
``cooperative_groups``, mbarriers, tensor-memory accelerator copies, textures,
streams.  Threads of a block never run concurrently, so spin-waits on another
thread hang.  ``-D``/``-U`` and ``-arch=`` are the only honoured options.
"""
from ._build import compiler_available
from ._errors import EmulatedCompileError, EmulatedDeviceError
from ._module import EmulatedKernel, EmulatedModule, load_module

__all__ = ["EmulatedModule", "EmulatedKernel", "EmulatedDeviceError", "EmulatedCompileError", "load_module",
           "compiler_available"]
