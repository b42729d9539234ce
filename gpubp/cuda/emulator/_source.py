"""Reading what the emulator needs from CuPy-style options and kernel source.

* :func:`parse_options` keeps the ``-D``/``-U`` macro options (in order),
  accepts and ignores the NVRTC code-generation options that have no meaning
  on a CPU, and rejects everything else with ``ValueError``;
  :func:`target_arch` reads the architecture of an ``-arch=`` option (the
  emulated device's target: ``__CUDA_ARCH__`` and its shared-memory ceiling).
* :func:`parse_kernels` finds the ``extern "C" __global__ void NAME(...)``
  definitions (also inside ``extern "C" { }`` blocks) in *preprocessed* source (so macros and ``#if`` are already
  resolved) and returns their parameter names and type text.  The types the
  launcher checks arguments against come from the compiler (see thunks.h);
  the text here is for names and messages.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import EmulatedCompileError

#: NVRTC options accepted and ignored: they tune code generation for a GPU.
IGNORED_OPTION_PREFIXES = (
    "-std=", "--std=", "-arch=", "--gpu-architecture=", "--use_fast_math", "-use_fast_math",
    "--fmad=", "-fmad=", "--ftz=", "-ftz=", "--prec-div=", "-prec-div=", "--prec-sqrt=", "-prec-sqrt=",
    "-lineinfo", "--generate-line-info", "--restrict", "-restrict", "--extra-device-vectorization",
    "-extra-device-vectorization", "-default-device", "--device-as-default-execution-space",
)

_MACRO = re.compile(r"[A-Za-z_]\w*(\([\w\s,.]*\))?")


def parse_options(options) -> tuple[tuple[str, str, str | None], ...]:
    """``("-DTILE=16", "-UX", "--use_fast_math")`` -> ``(("D", "TILE", "16"), ("U", "X", None))``.

    A ``-DNAME`` without a value defines NAME as 1, as a compiler does.
    """
    if isinstance(options, str):
        raise TypeError(f"options must be a tuple of strings, not the string {options!r}; write ({options!r},)")
    macros = []
    for opt in options:
        if not isinstance(opt, str):
            raise TypeError(f"option {opt!r} is not a string")
        for flag, long_flag, kind in (("-D", "--define-macro=", "D"), ("-U", "--undefine-macro=", "U")):
            if opt.startswith(long_flag) or (opt.startswith(flag) and not opt.startswith("--")):
                body = opt[len(long_flag):] if opt.startswith(long_flag) else opt[len(flag):]
                name, eq, value = body.partition("=")
                if not _MACRO.fullmatch(name) or "\n" in value or (kind == "U" and (eq or "(" in name)):
                    raise ValueError(f"malformed macro option {opt!r}")
                macros.append((kind, name, (value if eq else "1") if kind == "D" else None))
                break
        else:
            if not opt.startswith(IGNORED_OPTION_PREFIXES):
                raise ValueError(f"compile option {opt!r} is not supported by the emulated device: only -D/-U macro "
                                 f"options are honoured (GPU code-generation options such as "
                                 f"{', '.join(IGNORED_OPTION_PREFIXES[:4])} are accepted and ignored)")
    return tuple(macros)


_ARCH_OPTION = re.compile(r"(?:-arch|--gpu-architecture)=(?:sm|compute)_(\w+)")


def target_arch(options) -> str | None:
    """The architecture an NVRTC option names (``-arch=sm_80``, ``--gpu-architecture=compute_86``)
    as ``"sm_80"``; the last one wins, as with NVRTC.  ``None`` if no option names one."""
    arch = None
    for opt in options:
        m = _ARCH_OPTION.fullmatch(opt) if isinstance(opt, str) else None
        if m:
            arch = f"sm_{m.group(1)}"
    return arch


@dataclass(frozen=True)
class KernelSignature:
    name: str
    param_names: tuple[str, ...]
    param_types: tuple[str, ...]  # normalized source text, e.g. "const float*"


# A parenthesized group nested up to three levels deep, e.g. __launch_bounds__((16*16), 2).
_PARENS = r"\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)"
_SIGNATURE = re.compile(
    r"(?P<quals>(?:(?:__global__|__host__|__device__|static|inline|__launch_bounds__\s*" + _PARENS + r")\s*)+)"
    r"void\s+(?:__launch_bounds__\s*" + _PARENS + r"\s*)?"
    r"(?P<name>[A-Za-z_]\w*)\s*\((?P<params>[^()]*)\)\s*(?P<end>[{;])")
_EXTERN_C = re.compile(r'extern\s*"C"')
_QUALIFIERS = {"__restrict__", "__restrict", "restrict"}


def _extern_c_blocks(text: str) -> list[tuple[int, int]]:
    """The spans of ``extern "C" { ... }`` blocks (by brace counting)."""
    spans = []
    for m in re.finditer(r'extern\s*"C"\s*\{', text):
        depth, i = 0, m.end() - 1
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        spans.append((m.start(), i))
    return spans


def _declaration_prefix(text: str, pos: int) -> str:
    """The text of the declaration that ``pos`` is in, up to ``pos``."""
    start = max(text.rfind(c, 0, pos) for c in ";{}") + 1
    return text[start:pos]


def _parse_param(text: str, kernel: str) -> tuple[str, str]:
    m = re.fullmatch(r"(?P<type>.*?[\s*&])(?P<name>[A-Za-z_]\w*)", text.strip(), re.S)
    if not m or not m.group("type").strip() or "[" in text or "=" in text:
        raise EmulatedCompileError(f"kernel {kernel}: cannot parse parameter {text.strip()!r}; write `type name`, "
                                   f"e.g. `const float* __restrict__ a` (no arrays, defaults or unnamed parameters)")
    tokens = re.findall(r"[A-Za-z_]\w*|::|[^\sA-Za-z_]", m.group("type"))
    ctype = " ".join(t for t in tokens if t not in _QUALIFIERS)
    ctype = re.sub(r"\s*([*&])", r"\1", ctype)
    return ctype, m.group("name")


def parse_kernels(preprocessed: str, filename: str) -> tuple[KernelSignature, ...]:
    """The kernels with C linkage *defined* in ``preprocessed``, in source order:
    ``extern "C" __global__ void f(...) {`` or ``__global__ void f(...) {``
    inside an ``extern "C" { }`` block.  Template kernels (not launchable by
    name) and kernels without C linkage are skipped; a ``__global__`` with C
    linkage whose signature cannot be parsed raises EmulatedCompileError."""
    blocks = _extern_c_blocks(preprocessed)

    def c_linkage(pos: int) -> bool:
        prefix = _declaration_prefix(preprocessed, pos)
        return "template" not in prefix and (bool(_EXTERN_C.search(prefix)) or any(a < pos < b for a, b in blocks))

    kernels: dict[str, KernelSignature] = {}
    parsed = []  # spans of recognized signatures
    for m in _SIGNATURE.finditer(preprocessed):
        if "__global__" not in m.group("quals") or not c_linkage(m.start()):
            continue
        parsed.append((m.start(), m.end()))
        if m.group("end") != "{":
            continue  # a declaration; the definition carries the parameter names
        name = m.group("name")
        params = m.group("params").strip()
        pairs = [] if params in ("", "void") else [_parse_param(p, name) for p in params.split(",")]
        names = tuple(n for _, n in pairs)
        if len(set(names)) != len(names):
            raise EmulatedCompileError(f"kernel {name} in {filename}: repeated parameter name in {names}")
        kernels[name] = KernelSignature(name, names, tuple(t for t, _ in pairs))
    for m in re.finditer(r"\b__global__\b", preprocessed):
        if c_linkage(m.start()) and not any(a <= m.start() < b for a, b in parsed):
            snippet = " ".join(preprocessed[m.start():m.start() + 160].split())
            raise EmulatedCompileError(
                f"{filename}: cannot parse this kernel signature for the emulator: {snippet!r}; write "
                f'`extern "C" __global__ void name(type a, type b) {{` (optionally with __launch_bounds__(...))')
    return tuple(kernels.values())
