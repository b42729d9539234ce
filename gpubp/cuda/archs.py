"""Per-architecture limits of the GPUs gpubp compiles for: one table that NVRTC's checks
(``gpubp.cuda.nvrtc``: occupancy, budgets), the emulated device (``gpubp.cuda.emulator``: the
shared-memory ceiling of a launch) and planning commands all read.  It imports nothing of gpubp.

The figures are those of NVIDIA's CUDA C++ Programming Guide, appendix "Compute Capabilities",
the table of technical specifications per compute capability
(https://docs.nvidia.com/cuda/cuda-programming-guide/05-appendices/compute-capabilities.html):
"Maximum amount of shared memory per SM", "Maximum amount of shared memory per thread block"
(the opt-in figure; without opting in a block gets 48 KB), "Maximum number of resident blocks /
threads per SM", "Number of 32-bit registers per SM".  Blocks per SM on Blackwell as in CUDA 13's
``cuda_occupancy.h`` (``cudaOccMaxBlocksPerMultiprocessor``: 32 on 10.0, 24 on 12.x).

Shared memory per block, the rule a launch must keep (CUDA driver API, ``cuFuncSetAttribute``):

* static + dynamic <= 48 KiB unless the kernel's ``CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES``
  was raised first (CuPy: ``RawKernel.max_dynamic_shared_size_bytes = n``, the same attribute on
  the kernels ``RawModule.get_function`` returns, which are RawKernels);
* the attribute itself may be raised only as far as static + n <= :attr:`Arch.smem_per_block_optin`;
* a launch whose dynamic size exceeds the attribute fails (``CUDA_ERROR_INVALID_VALUE``).
"""
from __future__ import annotations

from dataclasses import dataclass

KiB = 1024

#: what a block may use without raising max_dynamic_shared_size_bytes, on every architecture
SMEM_PER_BLOCK_DEFAULT = 48 * KiB


@dataclass(frozen=True)
class Arch:
    """The per-SM and per-block limits of one compute capability (bytes where a size)."""
    name: str                   # "sm_90"
    max_threads: int            # resident threads per SM
    max_blocks: int             # resident blocks per SM
    smem: int                   # shared memory per SM usable by blocks
    smem_per_block_optin: int   # the most one block may have, static + dynamic, after opting in
    reserved_smem_per_block: int  # what the runtime keeps per resident block (1 KiB on sm_80 and later)
    regs: int = 65536           # 32-bit registers per SM

    @property
    def compute_capability(self) -> int:
        """``sm_86`` -> 860, the value of ``__CUDA_ARCH__`` when compiling for it."""
        return int(self.name[3:]) * 10

    @property
    def smem_per_block_default(self) -> int:
        return SMEM_PER_BLOCK_DEFAULT


ARCHS: dict[str, Arch] = {a.name: a for a in (
    Arch("sm_75", max_threads=1024, max_blocks=16, smem=64 * KiB, smem_per_block_optin=64 * KiB,
         reserved_smem_per_block=0),
    Arch("sm_80", max_threads=2048, max_blocks=32, smem=164 * KiB, smem_per_block_optin=163 * KiB,
         reserved_smem_per_block=KiB),
    Arch("sm_86", max_threads=1536, max_blocks=16, smem=100 * KiB, smem_per_block_optin=99 * KiB,
         reserved_smem_per_block=KiB),
    Arch("sm_89", max_threads=1536, max_blocks=24, smem=100 * KiB, smem_per_block_optin=99 * KiB,
         reserved_smem_per_block=KiB),
    Arch("sm_90", max_threads=2048, max_blocks=32, smem=228 * KiB, smem_per_block_optin=227 * KiB,
         reserved_smem_per_block=KiB),
    # Blackwell: data-centre (B200) and consumer (RTX 50).
    Arch("sm_100", max_threads=2048, max_blocks=32, smem=228 * KiB, smem_per_block_optin=227 * KiB,
         reserved_smem_per_block=KiB),
    Arch("sm_120", max_threads=1536, max_blocks=24, smem=100 * KiB, smem_per_block_optin=99 * KiB,
         reserved_smem_per_block=KiB),
)}

#: the architecture the emulated device takes when it is given none (Hopper: the largest ceilings)
DEFAULT_EMULATED = "sm_90"


def get(arch: str) -> Arch:
    """The limits of ``arch`` (``"sm_80"``); ``ValueError`` naming the known ones otherwise."""
    try:
        return ARCHS[arch]
    except (KeyError, TypeError):
        raise ValueError(f"unknown GPU architecture {arch!r}; gpubp knows {', '.join(ARCHS)}") from None


def shared_memory_problem(arch: str, static: int, dynamic: int, max_dynamic: int | None) -> str | None:
    """Why a launch with ``static`` + ``dynamic`` bytes of shared memory per block fails on ``arch``
    when the kernel's max_dynamic_shared_size_bytes is ``max_dynamic`` (``None``: never raised), or
    ``None`` when it may run."""
    a = get(arch)
    if max_dynamic is None:
        if static + dynamic > SMEM_PER_BLOCK_DEFAULT:
            return (f"{static} B static + {dynamic} B dynamic shared memory exceed the "
                    f"{SMEM_PER_BLOCK_DEFAULT // KiB} KiB a block gets unless the kernel's "
                    f"max_dynamic_shared_size_bytes is raised first (kernel.max_dynamic_shared_size_bytes = "
                    f"{dynamic}; at most {a.smem_per_block_optin - static} B on {arch})")
        return None
    if static + max_dynamic > a.smem_per_block_optin:
        return (f"max_dynamic_shared_size_bytes = {max_dynamic} B with {static} B static shared memory exceed "
                f"the {a.smem_per_block_optin // KiB} KiB per block of {arch}")
    if dynamic > max_dynamic:
        return (f"{dynamic} B dynamic shared memory exceed the kernel's max_dynamic_shared_size_bytes = "
                f"{max_dynamic} B")
    return None
