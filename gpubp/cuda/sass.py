"""The kernels' own SASS: NVRTC's cubin disassembled with nvdisasm, its instructions counted.

A GPU's speed on a tiled GEMM is bounded by what its inner loop issues: FFMA per shared-memory load
(one shared-load wavefront a clock against four warp-FFMAs: under 4 FFMA a load, the loads bound it),
the loads' width, and spills.  All of that is in the compiled code, and needs no GPU to read::

    counts = sass.instruction_counts("forward_gemm", "sm_90")
    counts["gemm_bias_sigmoid_f32"].ffma_per_shared_load     # 33.2 (the σ epilogue's FFMAs included)
    counts["gemm_bias_sigmoid_f32"].main_loop.fma_share      # 0.63: FFMA among the main loop's instructions

nvdisasm comes from the pip wheel ``nvidia-cuda-nvdisasm`` (in the ``nvrtc`` and ``test`` extras), else
a CUDA toolkit's (``$CUDA_HOME/bin``, ``/usr/local/cuda/bin``, ``PATH``).
"""
from __future__ import annotations

import collections
import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import nvrtc

__all__ = ["available", "disassemble", "instruction_counts", "KernelCounts"]

_INSTALL_HINT = "pip install 'gpubp[nvrtc]' (the nvidia-cuda-nvdisasm wheel)"


@functools.lru_cache(maxsize=None)
def _nvdisasm() -> str | None:
    candidates = []
    try:
        import nvidia
        candidates += [p for root in map(Path, nvidia.__path__) for p in sorted(root.glob("*/bin/nvdisasm"))]
    except ImportError:
        pass
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(Path(home) / "bin" / "nvdisasm")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return shutil.which("nvdisasm")


def available() -> tuple[bool, str]:
    """(True, path of nvdisasm) or (False, why and the fix)."""
    ok, why = nvrtc.available()
    if not ok:
        return False, why
    path = _nvdisasm()
    return (True, path) if path else (False, f"nvdisasm not found; {_INSTALL_HINT}")


def disassemble(cubin: bytes) -> str:
    """nvdisasm's text of a cubin."""
    path = _nvdisasm()
    if path is None:
        raise FileNotFoundError(f"nvdisasm not found; {_INSTALL_HINT}")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([path, "-c", f.name], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"nvdisasm failed: {out.stderr.strip()}")
    return out.stdout


@dataclass
class KernelCounts:
    """One kernel's instructions by opcode (``LDS.128``, ``FFMA.FTZ``: the whole mnemonic); ``main_loop``: those
    of its loop that holds the most FMAs (the span from a backward branch's target to the branch, every path
    through it counted once), None for a kernel without a loop."""
    name: str
    opcodes: collections.Counter = field(default_factory=collections.Counter)
    main_loop: "KernelCounts | None" = None

    @property
    def total(self) -> int:
        return sum(self.opcodes.values())

    @property
    def fma_share(self) -> float:
        """FMAs over all instructions: in a GEMM's main loop, what is left over is staging and index arithmetic."""
        return self.fma / self.total if self.total else 0.0

    def count(self, *bases: str) -> int:
        """Instructions whose opcode, before its first '.', is one of ``bases`` (``count("FFMA")``)."""
        return sum(n for op, n in self.opcodes.items() if op.split(".")[0] in bases)

    @property
    def fma(self) -> int:
        return self.count("FFMA", "DFMA")

    @property
    def shared_loads(self) -> dict[int, int]:
        """Shared-memory load instructions by width in bits (LDS is 32, LDS.64, LDS.128; LDS.U8 … 8 …)."""
        out = collections.Counter()
        for op, n in self.opcodes.items():
            parts = op.split(".")
            if parts[0] == "LDS":
                widths = [int(p.lstrip("U").lstrip("S")) for p in parts[1:] if p.lstrip("US").isdigit()]
                out[widths[0] if widths else 32] += n
        return dict(out)

    @property
    def ffma_per_shared_load(self) -> float:
        loads = sum(self.shared_loads.values())
        return self.fma / loads if loads else float("inf")

    @property
    def wide_shared_load_share(self) -> float:
        """The share of shared-memory load instructions 64 or 128 bits wide."""
        loads = self.shared_loads
        total = sum(loads.values())
        return sum(n for w, n in loads.items() if w >= 64) / total if total else 1.0


_SECTION = re.compile(r"^\s*\.section\s+\.text\.(\w+)")
_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)(.*)")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_TARGET = re.compile(r"\((\.L_x_\d+)\)")
#: the predicate "never" (not true): ptxas puts three ``@!PT LDS RZ, [RZ]`` before each LDGSTS (cp.async), which
#: never issue; counted, they would read as 32-bit shared loads
_NEVER = re.compile(r"@!U?PT\s")


def parse(text: str) -> dict[str, KernelCounts]:
    """Kernel name -> its instruction counts, from nvdisasm's text (an instruction predicated on ``!PT``, which
    never runs, is not counted)."""
    kernels, current = {}, None
    code = {}                         # kernel -> [(address, opcode, branch target label)], {label: address}
    pending = []                      # labels waiting for the address of the next instruction
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            current = kernels.setdefault(m.group(1), KernelCounts(m.group(1)))
            code[current.name] = ([], {})
            pending = []
            continue
        if current is None:
            continue
        m = _LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = _INSTRUCTION.search(line)
        if m:
            address = int(m.group(1), 16)
            instructions, labels = code[current.name]
            labels.update((label, address) for label in pending)
            pending = []
            if m.group(2) and _NEVER.match(m.group(2)):
                continue
            target = _TARGET.search(m.group(4)) if m.group(3).startswith("BRA") else None
            instructions.append((address, m.group(3), target.group(1) if target else None))
            current.opcodes[m.group(3)] += 1
    for name, (instructions, labels) in code.items():
        kernels[name].main_loop = _main_loop(name, instructions, labels)
    return kernels


def _main_loop(name, instructions, labels) -> KernelCounts | None:
    """The loop (a backward branch: from its target to itself) with the most FMAs, counted."""
    best = None
    for address, _op, target in instructions:
        start = labels.get(target) if target else None
        if start is None or start > address:
            continue
        loop = KernelCounts(f"{name} main loop", collections.Counter(op for a, op, _ in instructions
                                                                     if start <= a <= address))
        if best is None or loop.fma > best.fma:
            best = loop
    return best


@functools.lru_cache(maxsize=None)
def instruction_counts(family: str, arch: str = "sm_90", defines: tuple = ()) -> dict[str, KernelCounts]:
    """The instruction counts of every kernel of ``kernels/<family>.cu`` compiled by NVRTC for ``arch``
    (with the options CuPy compiles with)."""
    return parse(disassemble(nvrtc.compile_family(family, arch, dict(defines)).cubin))
