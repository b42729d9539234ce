"""Compiling a kernel source into an emulator shared library, with a disk cache.

:func:`build` turns (source, macros, target architecture) into the path of a
``.so`` that holds the kernels, a thunk per kernel, the runtime (runtime.cpp)
and a JSON description of the kernels.  Steps, on a cache miss only:

1. preprocess the source alone with the macros and ``__CUDA_ARCH__``
   (``$CXX -E``) and parse the kernel signatures from that (so ``#if`` and
   macros are resolved);
2. generate a wrapper translation unit: cuda_shim.h, thunks.h, the macros as
   ``#define``s (after the system headers, so they cannot break them), the
   source, then the thunks;
3. compile the wrapper to an object; its undefined TLS symbols are the
   ``extern __shared__`` arrays (see _elf.py), for which a generated
   ``dynamic_shared.S`` defines one region of the architecture's per-block
   ceiling with every name an alias of its start;
4. link the object, the runtime's object (runtime.cpp, compiled once per
   cache directory and compiler, not once per module) and dynamic_shared.S
   (``-shared``) into a temporary file in the cache directory and rename it
   into place (atomic, so concurrent processes never see a partial library).

The cache key is the sha256 of the source, its file name (compiled into
``__FILE__``), the macros, the architecture, every file of this package that
shapes the build, the compile flags and the compiler's ``--version``.  The cache directory is
``$GPUBP_CACHE_DIR/emulator`` or else ``~/.cache/gpubp/emulator``.  The
compiler is ``$CXX`` (may include arguments) or else ``g++``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from .. import archs
from ._elf import tls_init_functions, tls_symbols
from ._errors import EmulatedCompileError
from ._source import KernelSignature, parse_kernels

HERE = Path(__file__).resolve().parent
#: Files whose content shapes a built library: any change invalidates the cache.
BUILD_INPUTS = ("cuda_shim.h", "runtime.h", "runtime.cpp", "thunks.h", "include/cuda_pipeline.h",
                "include/cuda_pipeline_primitives.h", "_build.py", "_source.py", "_elf.py")
#: the symbol of the dynamic shared-memory region (runtime.cpp) and of its size
DYNAMIC_SHARED = "gpubp_dynamic_shared"
# -fno-strict-aliasing: kernels type-pun (__float_as_int); -U_FORTIFY_SOURCE:
# the fortified longjmp checks that it jumps up the *same* stack, and the fault
# handler jumps from the signal stack (below a fiber) to the launch;
# -fstack-clash-protection: a frame larger than a page touches every page on
# the way down, so it hits the fiber's guard page instead of jumping over it
# into the next fiber's stack.
FLAGS = ("-std=c++17", "-O2", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing", "-U_FORTIFY_SOURCE",
         "-fstack-clash-protection")
COMPILE_TIMEOUT_S = 300

_compile_count = 0
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def compile_count() -> int:
    """How many libraries this process has compiled (cache misses); for tests."""
    return _compile_count


def cache_dir() -> Path:
    root = os.environ.get("GPUBP_CACHE_DIR")
    return Path(root) / "emulator" if root else Path.home() / ".cache" / "gpubp" / "emulator"


def compiler() -> list[str]:
    """The C++ compiler command: ``$CXX`` split like a shell would, or ``g++``."""
    cmd = shlex.split(os.environ.get("CXX", "") or "g++")
    if shutil.which(cmd[0]) is None:
        raise EmulatedCompileError(
            f"the emulated CUDA device compiles kernels with a C++ compiler, and {cmd[0]!r} was not found "
            f"(set CXX, or install g++, e.g. `apt-get install g++`); the NumPy backend needs no compiler")
    return cmd


def compiler_available() -> bool:
    try:
        compiler()
    except EmulatedCompileError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _compiler_identity(cmd: tuple[str, ...]) -> str:
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise EmulatedCompileError(f"`{' '.join(cmd)} --version` failed:\n{out.stderr}")
    return f"{shutil.which(cmd[0])}\n{' '.join(cmd)}\n{out.stdout}"


def _key(source: str, filename: str, macros, arch: str, cmd: list[str]) -> str:
    h = hashlib.sha256()
    for part in (source, filename, repr(macros), arch, repr(FLAGS), _compiler_identity(tuple(cmd))):
        h.update(part.encode())
        h.update(b"\0")
    for name in BUILD_INPUTS:
        h.update((HERE / name).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _run(cmd: list[str], what: str, filename: str) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    if out.returncode != 0:
        raise EmulatedCompileError(f"{what} {filename} for the emulated device failed:\n"
                                   f"$ {shlex.join(cmd)}\n{out.stderr.strip()}")
    return out.stdout


def _dynamic_shared_asm(names, capacity: int, init_functions=()) -> str:
    """Assembly defining the dynamic shared-memory region (``capacity`` bytes of TLS, 16-byte aligned,
    as CUDA aligns dynamic shared memory) with every ``extern __shared__`` name an alias of it, and the
    TLS init functions the object calls (``_elf.tls_init_functions``) as functions that return at once."""
    lines = []
    if init_functions:
        lines += ["    .text", "    .p2align 4"]
        for fn in init_functions:
            lines += [f"    .globl {fn}", f"    .hidden {fn}", f"    .type {fn}, %function", f"{fn}:", "    ret",
                      f"    .size {fn}, .-{fn}"]
    lines += ['    .section .tbss,"awT",%nobits', "    .p2align 4"]
    for name in (DYNAMIC_SHARED, *names):
        lines += [f"    .globl {name}", f"    .hidden {name}", f"    .type {name}, %object",
                  f"    .size {name}, {capacity}"]
    lines += [f"{name}:" for name in (DYNAMIC_SHARED, *names)]
    lines += [f"    .zero {max(capacity, 1)}", "    .section .rodata", "    .p2align 3",
              f"    .globl {DYNAMIC_SHARED}_capacity", f"    .hidden {DYNAMIC_SHARED}_capacity",
              f"    .type {DYNAMIC_SHARED}_capacity, %object", f"    .size {DYNAMIC_SHARED}_capacity, 8",
              f"{DYNAMIC_SHARED}_capacity:", f"    .quad {capacity}",
              '    .section .note.GNU-stack,"",%progbits']
    return "\n".join(lines) + "\n"


def _wrapper(macros, kernels: tuple[KernelSignature, ...], filename: str) -> str:
    lines = [f"// generated by gpubp.cuda.emulator for {filename}: do not edit",
             '#include "cuda_shim.h"', '#include "thunks.h"']
    for kind, name, value in macros:
        lines.append(f"#define {name} {value}" if kind == "D" else f"#undef {name}")
    lines.append('#include "kernel.cu"')
    # The source's own macros are still defined here: only gpubp_ names below.
    for k in kernels:
        lines.append(f'extern "C" GPUBP_EXPORT void gpubp_thunk_{k.name}(void** gpubp_args) '
                     f"{{ ::gpubp::invoke({k.name}, gpubp_args); }}")
        lines.append(f'extern "C" GPUBP_EXPORT int gpubp_describe_{k.name}(::gpubp::param_desc* gpubp_out, '
                     f"int gpubp_capacity) {{ return ::gpubp::describe({k.name}, gpubp_out, gpubp_capacity); }}")
    info = json.dumps({"filename": filename, "kernels": [
        {"name": k.name, "param_names": k.param_names, "param_types": k.param_types} for k in kernels]})
    lines.append(f'extern "C" GPUBP_EXPORT const char* gpubp_module_info() {{ return R"gpubp_json({info})gpubp_json"; }}')
    return "\n".join(lines) + "\n"


def _lock_for(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _runtime_object(cmd: list[str]) -> Path:
    """runtime.cpp compiled to an object in the cache directory (once: it is the same for every module)."""
    h = hashlib.sha256()
    for part in (repr(FLAGS), _compiler_identity(tuple(cmd)), (HERE / "runtime.h").read_text(),
                 (HERE / "runtime.cpp").read_text()):
        h.update(part.encode())
        h.update(b"\0")
    directory = cache_dir()
    target = directory / f"runtime-{h.hexdigest()[:32]}.o"
    with _lock_for(str(target)):
        if target.exists():
            return target
        directory.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=target.stem + ".", suffix=".o.partial", dir=directory)
        os.close(fd)
        try:
            _run([*cmd, *FLAGS, f"-I{HERE}", "-c", "-o", partial, str(HERE / "runtime.cpp")], "compiling", "runtime.cpp")
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return target


def build(source: str, macros, filename: str, arch: str = archs.DEFAULT_EMULATED) -> Path:
    """The cached library for ``source`` compiled with ``macros`` (from
    :func:`parse_options`) for the target architecture ``arch`` (``__CUDA_ARCH__``
    and the dynamic shared-memory ceiling); compiles it on a cache miss.
    ``filename`` names the source in compiler messages and ``__FILE__``."""
    target_arch = archs.get(arch)
    cmd = compiler()
    key = _key(source, filename, macros, arch, cmd)
    directory = cache_dir()
    target = directory / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(filename).stem)[:40]}-{key[:32]}.so"
    with _lock_for(key):
        if target.exists():
            return target
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="gpubp-emu-") as tmp:
            work = Path(tmp)
            quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
            (work / "kernel.cu").write_text(f'#line 1 "{quoted}"\n{source}')
            defines = [f"-D{n}={v}" if kind == "D" else f"-U{n}" for kind, n, v in macros]
            arch_flags = [f"-D__CUDA_ARCH__={target_arch.compute_capability}", f"-I{HERE / 'include'}"]
            pre = _run([*cmd, "-E", "-P", "-x", "c++", "-std=c++17", *arch_flags, *defines, str(work / "kernel.cu")],
                       "preprocessing", filename)
            kernels = parse_kernels(pre, filename)
            (work / "wrapper.cpp").write_text(_wrapper(macros, kernels, filename))
            fd, partial = tempfile.mkstemp(prefix=target.stem + ".", suffix=".so.partial", dir=directory)
            os.close(fd)
            try:
                global _compile_count
                with _locks_guard:
                    _compile_count += 1
                obj = work / "wrapper.o"
                _run([*cmd, *FLAGS, *arch_flags, f"-I{HERE}", "-c", "-o", str(obj), str(work / "wrapper.cpp")],
                     "compiling", filename)
                extern_shared = sorted({s.name for s in tls_symbols(obj) if not s.defined})
                capacity = target_arch.smem_per_block_optin if extern_shared else 0
                (work / "dynamic_shared.S").write_text(_dynamic_shared_asm(extern_shared, capacity,
                                                                           tls_init_functions(obj)))
                _run([*cmd, *FLAGS, "-shared", "-o", partial, str(obj), str(_runtime_object(cmd)),
                      str(work / "dynamic_shared.S")], "linking", filename)
                os.replace(partial, target)
            finally:
                if os.path.exists(partial):
                    os.unlink(partial)
    return target

