"""The module structure: every import inside gpubp (lazy ones in functions
included) runs down the layers below, so no two modules import each other, no
loop exists, and each module imports on its own in a fresh interpreter."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "gpubp"

#: bottom first; a module may import only modules of a lower layer (or of its own package below it)
LAYERS = [
    ["cuda.archs"],              # per-architecture limits: imports nothing of gpubp
    ["_version", "validation", "device", "costs", "progress", "blas", "cuda", "cuda.emulator", "check"],
    ["numpy_backend", "reference", "persistence", "datasets", "parallel", "cuda.sources", "cuda.tuning"],
    ["testing", "cuda.launchers"],
    ["cuda.nvrtc", "check.kernels", "cuda.prepared", "cuda.tuner"],
    ["cuda.backend", "cuda.sass"],
    ["cuda.dryrun"],
    ["backend"],
    ["mlp"],
    ["gradcheck", "bench.cases", "check.fit", "sklearn", "plan", "tune"],
    ["bench.timing", "bench.stats"],
    ["bench.plot", "bench.dp", "bench.host"],
    ["bench.report"],
    ["bench.suite"],
    ["bench", "check.sanitizers", "check.report"],
    ["check.run"],
    ["cli"],
    ["", "__main__"],            # "" is gpubp/__init__.py: the public names
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer_of(mod: str) -> int:
    for depth, names in enumerate(LAYERS):
        for name in names:
            if mod == name or (name and mod.startswith(name + ".") and name == "cuda.emulator"):
                return depth
    raise AssertionError(f"gpubp.{mod} is in no layer of tests/test_layers.py: add it where it belongs")


def imports_of(mod: str) -> set[str]:
    """The gpubp modules ``mod`` imports (relative or absolute, at the top or inside a function)."""
    path = MODULES[mod]
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.split(".")[0] == "gpubp"]
            out |= {t.removeprefix("gpubp").lstrip(".") for t in targets}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                base = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "gpubp":
                base = node.module.removeprefix("gpubp").lstrip(".")
            else:
                continue
            for alias in node.names:             # `from . import x` names a submodule when one exists
                sub = f"{base}.{alias.name}" if base else alias.name
                out.add(sub if sub in MODULES else base)
    out.discard(mod)
    return out


def test_every_module_has_a_layer():
    for mod in MODULES:
        layer_of(mod)


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_imports_run_down_the_layers(mod):
    up = sorted(f"gpubp.{m or '__init__'}" for m in imports_of(mod)
                if layer_of(m) >= layer_of(mod) and not _is_own_subpackage(mod, m))
    assert not up, f"gpubp.{mod or '__init__'} imports {up}, at or above its own layer"


def _is_own_subpackage(mod, other):
    """The emulator package's private modules import each other freely (one layer, one job)."""
    return mod.startswith("cuda.emulator") and other.startswith("cuda.emulator")


def test_no_import_loop():
    graph = {m: imports_of(m) for m in MODULES}
    state = {}

    def visit(m, stack):
        if state.get(m) == "done":
            return
        if state.get(m) == "open":
            loop = stack[stack.index(m):] + [m]
            if not all(x.startswith("cuda.emulator") for x in loop):
                pytest.fail("import loop: " + " -> ".join(f"gpubp.{x or '__init__'}" for x in loop))
            return
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, stack + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])


def test_each_module_imports_alone():
    mods = [f"gpubp.{m}" if m else "gpubp" for m in sorted(MODULES) if m != "__main__"]
    code = ("import importlib, subprocess, sys\n"
            "bad = []\n"
            f"for m in {mods!r}:\n"
            "    r = subprocess.run([sys.executable, '-c', f'import {m}'], capture_output=True, text=True)\n"
            "    if r.returncode: bad.append(m + ': ' + r.stderr.strip().splitlines()[-1])\n"
            "print('\\n'.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PKG.parent).stdout.strip()
    assert not out, out
