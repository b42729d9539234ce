"""Compile the kernel families with NVRTC for real GPU architectures, without a GPU,
and read back what each kernel costs in registers, spills and shared memory.

NVRTC comes from the pip wheel ``nvidia-cuda-nvrtc`` (``pip install 'gpubp[nvrtc]'``)
and is called through ctypes; nothing else of CUDA is needed.  Each family is
compiled to a CUBIN with the options CuPy builds it with plus ``-arch=sm_XY
--ptxas-options=-v``: ptxas then writes
its resource report into the program log, one block per kernel::

    ptxas info    : Compiling entry function 'weight_grad_f32' for 'sm_80'
    ptxas info    : Function properties for weight_grad_f32
    ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    ptxas info    : Used 40 registers, used 1 barriers, 8192 bytes smem, 400 bytes cmem[0]

which :func:`compile_family` parses into :class:`Resources`.  :data:`BUDGETS`
states, per kernel, the register and shared-memory budget and the launch shape
it is for; :func:`occupancy` turns those into the fraction of an SM's warp
slots the launch can fill, and :func:`resource_table` prints it all
(``python -m gpubp.cuda.nvrtc > docs/kernel-resources.md``; a test checks the file
is current).
"""
from __future__ import annotations

import ctypes
import functools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import archs as _archs
from . import launchers
from . import sources

#: the architectures every family must compile for (Turing, Ampere, Ada, Hopper, Blackwell): those of gpubp.cuda.archs.
ARCHS = tuple(_archs.ARCHS)

_INSTALL_HINT = "pip install 'gpubp[nvrtc]' (the nvidia-cuda-nvrtc wheel)"


class NvrtcUnavailable(RuntimeError):
    """The NVRTC shared library (pip wheel nvidia-cuda-nvrtc) is not installed."""


class CompileError(RuntimeError):
    """NVRTC rejected a kernel source; the message holds the compiler log."""


def library_path() -> Path:
    """Where ``libnvrtc.so.13`` (Linux) / ``nvrtc64_*.dll`` (Windows) lies: the pip wheel's first
    (``nvidia/cu13/lib``, ``nvidia/cuda_nvrtc/lib``), else a CUDA toolkit's (``$CUDA_HOME``,
    ``$CUDA_PATH``, ``/usr/local/cuda``: what a GPU machine without the wheel has)."""
    patterns = ("libnvrtc.so.*", "nvrtc64_*.dll")
    searched = []
    try:
        import nvidia
        roots = [(root, "*/*/") for root in map(Path, nvidia.__path__)]
    except ImportError:
        roots = []
    for toolkit in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if toolkit:
            roots += [(Path(toolkit) / "lib64", ""), (Path(toolkit) / "bin", "")]
    for root, prefix in roots:
        searched.append(str(root))
        for pattern in patterns:
            # cu13/lib/libnvrtc.so.13 (CUDA 13 wheels), cuda_nvrtc/lib/libnvrtc.so.12 (CUDA 12 wheels)
            hits = [p for p in root.glob(f"{prefix}{pattern}") if "builtins" not in p.name]
            if hits:
                return max(hits, key=lambda p: (p.name.count("."), p.name))  # the newest major if several
    raise NvrtcUnavailable(f"NVRTC not found (searched {', '.join(searched) or 'no folder'}); {_INSTALL_HINT}")


@functools.lru_cache(maxsize=None)
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library_path()))
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    return lib


def available() -> tuple[bool, str]:
    """(True, version text) if NVRTC loads, else (False, the reason with the fix)."""
    try:
        return True, f"NVRTC {'.'.join(map(str, version()))} ({library_path()})"
    except (NvrtcUnavailable, OSError) as e:
        return False, str(e)


def version() -> tuple[int, int]:
    """The NVRTC version as (major, minor)."""
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(_lib().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def supported_archs() -> tuple[str, ...]:
    lib = _lib()
    n = ctypes.c_int()
    _check(lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
    archs = (ctypes.c_int * n.value)()
    _check(lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
    return tuple(f"sm_{a}" for a in archs)


def _check(status: int, what: str) -> None:
    if status != 0:
        raise CompileError(f"{what} failed: {_lib().nvrtcGetErrorString(status).decode()}")


@dataclass(frozen=True)
class Resources:
    """What ptxas reports for one kernel on one architecture (bytes unless said)."""
    registers: int
    spill_stores: int
    spill_loads: int
    stack: int          # stack frame = local memory per thread
    smem: int           # static shared memory per block
    barriers: int = 0


@dataclass(frozen=True)
class Compiled:
    family: str
    arch: str
    options: tuple      # the NVRTC options it was compiled with
    cubin: bytes
    log: str
    resources: dict     # kernel name -> Resources


def header_dirs() -> tuple[Path, ...]:
    """Where the CUDA headers a kernel may include (``cuda_pipeline.h``, ``cuda_fp16.h``) lie for NVRTC,
    which has none of its own: the pip wheel nvidia-cuda-runtime's ``include`` beside NVRTC's (the
    folder CuPy also adds), else a CUDA toolkit's; () when neither has them."""
    candidates = []
    try:
        import nvidia
        candidates += [Path(root) / sub / "include" for root in nvidia.__path__ for sub in ("cu13", "cuda_runtime")]
    except ImportError:
        pass
    for toolkit in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if toolkit:
            candidates.append(Path(toolkit) / "include")
    for d in candidates:
        if (d / "cuda_pipeline.h").is_file():
            return (d,)
    return ()


def compile_family(family: str, arch: str = "sm_80", defines=None) -> Compiled:
    """Compile ``kernels/<family>.cu`` to a CUBIN for ``arch`` and parse ptxas's resource report (once a
    process per family, arch and tunables)."""
    return _compile_family(sources.source(family), family, arch, sources.normalize_defines(defines))


@functools.lru_cache(maxsize=None)
def _compile_family(source: str, family: str, arch: str, defines: tuple) -> Compiled:
    return compile_source(source, f"{family}.cu", arch, sources.compile_options(defines), family=family)


def compile_source(source: str, filename: str, arch: str = "sm_80", options=(), family: str | None = None) -> Compiled:
    """Compile any CUDA source (test kernels too) to a CUBIN for ``arch`` with the options CuPy builds
    with, ``options`` (``-D...``) and the CUDA headers of :func:`header_dirs`; parse ptxas's report."""
    lib = _lib()
    options = [f"-arch={arch}", *sources.CUPY_OPTIONS, *sources.CUPY_RAWMODULE_ADDS, "--ptxas-options=-v",
               *options, *(f"-I{d}" for d in header_dirs())]
    prog = ctypes.c_void_p()
    _check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(),
                                  filename.encode(), 0, None, None), "nvrtcCreateProgram")
    try:
        opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        status = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        _check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
        buf = ctypes.create_string_buffer(size.value)
        _check(lib.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
        log = buf.value.decode(errors="replace")
        if status != 0:
            raise CompileError(f"{filename} for {arch} ({' '.join(options)}): "
                               f"{lib.nvrtcGetErrorString(status).decode()}\n{log}")
        _check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
        cubin = ctypes.create_string_buffer(size.value)
        _check(lib.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return Compiled(family or Path(filename).stem, arch, tuple(options), cubin.raw, log, parse_resource_report(log))


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_BARRIERS = re.compile(r"used (\d+) barriers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_resource_report(log: str) -> dict[str, Resources]:
    """Kernel name -> Resources from ptxas's ``-v`` output (one 'Compiling entry function' block per kernel)."""
    out = {}
    blocks = _ENTRY.split(log)  # [before, name1, arch1, text1, name2, arch2, text2, ...]
    for name, _arch, text in zip(blocks[1::3], blocks[2::3], blocks[3::3]):
        stack, used = _STACK.search(text), _USED.search(text)
        if not (stack and used):
            raise CompileError(f"cannot read the ptxas report for {name}:\n{text}")
        barriers, smem = _BARRIERS.search(text), _SMEM.search(text)
        out[name] = Resources(registers=int(used.group(1)), spill_stores=int(stack.group(2)),
                              spill_loads=int(stack.group(3)), stack=int(stack.group(1)),
                              smem=int(smem.group(1)) if smem else 0,
                              barriers=int(barriers.group(1)) if barriers else 0)
    return out


# -- budgets and occupancy ---------------------------------------------------------------------

#: Per-SM limits of each architecture: gpubp.cuda.archs' table (CUDA C++ Programming Guide, "Compute Capabilities").
SMS = _archs.ARCHS


def occupancy(arch: str, threads_per_block: int, registers: int, smem: int) -> float:
    """Theoretical occupancy: resident warps / the SM's maximum, limited by threads, blocks,
    registers (allocated per warp in units of 256, from 4 sub-partitions of 16K) and shared memory
    (plus the 1 KiB per block the runtime reserves on sm_80 and later)."""
    sm = SMS[arch]
    warps = -(-threads_per_block // 32)
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256
    warps_by_regs = (sm.regs // 4 // regs_per_warp) * 4
    reserved = sm.reserved_smem_per_block
    blocks = min(sm.max_threads // threads_per_block, sm.max_blocks, warps_by_regs // warps,
                 sm.smem // (smem + reserved) if smem else sm.max_blocks)
    return blocks * warps / (sm.max_threads // 32)


Budget = launchers.Budget


BUDGET_RATIONALE = (
    "A kernel meets its budget on an arch when it spills nothing, stays within the shared memory, and reaches "
    "at least the occupancy the budget's registers buy on that arch (on sm_80 that is the register count "
    "itself; where an SM has fewer warp slots, sm_86/89/120, a few more registers can cost nothing). "
    "Elementwise and row kernels are bound by memory bandwidth and want every warp slot: "
    "≤ 32 registers (f32) is 100 % occupancy on every arch in ARCHS; f64 needs more registers for the "
    "same EPT loads in flight, and ≤ 40 is 75 % on sm_80/90/100, 100 % on sm_75/86/89/120. "
    "The naive weight gradients may take 64 (one long dot product per thread; 50 % on sm_80). "
    "The register-blocked GEMMs (gemm_mainloop.cuh) keep an 8×8 (f32) or 4×4 (f64) accumulator tile per "
    "thread, 16 FFMA per shared load, and trade occupancy for it, as their __launch_bounds__ say: 6 blocks of "
    "64 threads per SM at worst (≤ 168 registers, f32: 19 % on sm_80), 2 blocks of 256 (≤ 128, f64: 25 %).")


def _budgets(defines: tuple = ()) -> dict[str, Budget]:
    """Kernel name -> Budget at the given tunables (default: the sources' defaults), from each
    launcher's record (``launchers.SPECS``); the reasoning is BUDGET_RATIONALE and the records."""
    out = {}
    for spec in launchers.SPECS.values():
        tunables = {**sources.defaults(spec.family), **dict(defines)}
        for dt, size in (("f32", 4), ("f64", 8)):
            fast, naive = spec.budgets(tunables, size)
            names = sources.kernel_names(spec.family)
            for kernel in spec.kernels:
                out[f"{kernel}_{dt}"] = fast
                if f"{kernel}_naive_{dt}" in names:          # (the fused step has no naive twin: the
                    out[f"{kernel}_naive_{dt}"] = naive      # per-kernel step is its unfused equivalent)
    return out


#: kernel name -> Budget (checked by tests/test_nvrtc.py for every arch in ARCHS)
BUDGETS: dict[str, Budget] = _budgets()


_ERROR_LINE = re.compile(r"error: (.*)")


def tunable_problems(defines, arch: str = "sm_80") -> list[str] | None:
    """Why a set of tunables must be refused on every device: a family that does not compile with them
    (its static_asserts state CUDA's limits: threads per block, 48 KiB of static shared memory), or a
    kernel that spills registers to local memory.  [] when none; None when NVRTC is not installed
    (then only a compile on the device itself can refuse them, and spills go unseen)."""
    if not available()[0]:
        return None
    return list(_tunable_problems(sources.normalize_defines(defines), arch))


@functools.lru_cache(maxsize=None)
def _tunable_problems(defines: tuple, arch: str) -> tuple[str, ...]:
    names = {name for name, _ in defines}
    problems = []
    for family in sources.families():
        if not names & set(sources.defaults(family)):
            continue                       # these tunables do not touch this family
        try:
            compiled = compile_family(family, arch, dict(defines))
        except CompileError as e:
            errors = _ERROR_LINE.findall(str(e))
            problems.append(f"{family}.cu does not compile with them ({'; '.join(errors) or str(e).splitlines()[0]})")
            continue
        for kernel, r in compiled.resources.items():
            if r.spill_stores or r.spill_loads:
                problems.append(f"{kernel} spills {r.spill_stores + r.spill_loads} bytes of registers to local "
                                f"memory on {arch} ({r.registers} registers)")
    return tuple(problems)


def budget_violations(arch: str, defines=None) -> list[str]:
    """Every way the kernels, compiled for ``arch`` (with ``defines``, else the default tunables), break
    their budgets (spills, stack, occupancy below the budget's, shared memory over it); [] when none does."""
    if defines:
        measured = {}
        for family in sources.families():
            measured.update(compile_family(family, arch, defines).resources)
        budgets = _budgets(sources.normalize_defines(defines))
    else:
        measured, budgets = resources(arch), BUDGETS
    names = [k for fam in sources.families() for k in sources.kernel_names(fam)]
    over = [f"{name}: no budget in launchers.SPECS" for name in names if name not in budgets]
    over += [f"{name}: no ptxas report" for name in names if name not in measured]
    for name in names:
        if name not in budgets or name not in measured:
            continue
        r, budget = measured[name], budgets[name]
        if (r.spill_stores, r.spill_loads, r.stack) != (0, 0, 0):
            over.append(f"{name}: {r.spill_stores} B spill stores, {r.spill_loads} B spill loads, {r.stack} B stack")
        occ, occ_budget = (occupancy(arch, budget.threads, regs, budget.smem)
                           for regs in (r.registers, budget.registers))
        if occ < occ_budget:
            over.append(f"{name}: {r.registers} registers (budget {budget.registers}) give {occ:.1%} occupancy, "
                        f"below the budget's {occ_budget:.1%}")
        if r.smem > budget.smem:
            over.append(f"{name}: {r.smem} B static shared memory > budget {budget.smem}")
    return over


# -- the table ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def resources(arch: str) -> dict[str, Resources]:
    """Kernel name -> Resources for every family, compiled for ``arch`` with the default tunables."""
    out = {}
    for family in sources.families():
        out.update(compile_family(family, arch).resources)
    return out


def resource_table(archs=ARCHS) -> str:
    """A markdown table: per kernel and arch, registers / spill bytes / static smem and the occupancy
    that buys at the launcher's block size, beside the kernel's budget."""
    per_arch = {arch: resources(arch) for arch in archs}
    names = [k for fam in sources.families() for k in sources.kernel_names(fam)]
    major, minor = version()
    lines = [
        "# Kernel resources",
        "",
        f"Generated by `python -m gpubp.cuda.nvrtc > docs/kernel-resources.md` with NVRTC {major}.{minor} "
        f"(`{' '.join(sources.CUPY_OPTIONS + sources.CUPY_RAWMODULE_ADDS)}`, as cupy.RawModule builds them, "
        "plus `--ptxas-options=-v`; default tunables); do not edit by hand.",
        "",
        "Each cell: registers / spill bytes (stores+loads) / static shared memory (bytes) → theoretical occupancy "
        "at the launcher's block size.  Stack frames are 0 for every kernel (checked by tests/test_nvrtc.py).",
        "",
        "| kernel | budget: regs / smem (B) | occupancy at budget, sm_80 | " + " | ".join(archs) + " |",
        "|---|---|---|" + "---|" * len(archs),
    ]
    for name in names:
        budget = BUDGETS[name]
        cells = []
        for arch in archs:
            r = per_arch[arch][name]
            occ = occupancy(arch, budget.threads, r.registers, r.smem)
            cells.append(f"{r.registers} / {r.spill_stores + r.spill_loads} / {r.smem} → {occ:.0%}")
        lines.append(f"| `{name}` | {budget.registers} / {budget.smem} | {budget.target} | " + " | ".join(cells) + " |")
    lines += ["", "Budgets (`gpubp.cuda.nvrtc.BUDGETS`): " + BUDGET_RATIONALE, ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        print("usage: python -m gpubp.cuda.nvrtc > docs/kernel-resources.md", file=sys.stderr)
        return 2
    sys.stdout.write(resource_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
