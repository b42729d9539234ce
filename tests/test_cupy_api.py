"""Every CuPy name the GPU path calls exists in the installed CuPy.

No GPU is needed to look a name up, so this runs wherever CuPy is installed
(CI's second pass installs it on its GPU-less machine): a CuPy release that
renames or drops something gpubp uses fails here, not first on a user's GPU.
The names are read from gpubp's own source (``xp.<name>``, ``xp.cuda.<name>``,
``cupy.<dotted name>``), plus the methods called on CuPy objects, listed below.
"""
import importlib
import re
from pathlib import Path

import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'gpubp[gpu]')")

SRC = Path(__file__).resolve().parent.parent / "gpubp"

#: methods and attributes of CuPy objects that the source reaches through a variable
METHODS = [
    "RawModule.get_function",                            # cuda.sources._CupyModule
    "cuda.Stream.begin_capture", "cuda.Stream.end_capture", "cuda.Stream.synchronize",
    "cuda.Graph.launch",                                 # cuda.backend.CupyBackend.run_step
    "cuda.Stream.is_capturing",                          # cuda.backend: tune="lazy" times nothing in a capture
    "cuda.Event.record", "cuda.Event.synchronize",       # cuda.tuner.cuda_event_timer
    "cuda.Device.attributes", "cuda.Device.compute_capability",   # bench.timing.gpu_peaks
    "cuda.runtime.deviceGetAttribute",
    "ndarray.get",                                       # numpy_backend.to_numpy
]


def used_names():
    names = set()
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"\bxp\.((?:cuda\.)?[A-Za-z_]\w*)", text))
        names |= set(re.findall(r"\bcupy\.([A-Za-z_][\w.]*\w)", text))
        names |= {f"cupyx.{mod}.{fn}" for mod, fn in re.findall(r"\bfrom cupyx\.(\w+) import (\w+)", text)}
    return sorted(names)


def resolve(dotted):
    root, *parts = dotted.split(".")
    obj = importlib.import_module("cupyx") if root == "cupyx" else cupy
    if root != "cupyx":
        parts = [root] + parts
    path = obj.__name__
    for part in parts:
        if not hasattr(obj, part):              # a submodule not imported by its package
            obj = importlib.import_module(f"{path}.{part}")
        else:
            obj = getattr(obj, part)
        path = f"{path}.{part}"
    return obj


def test_the_source_names_cupy_things():
    names = used_names()
    assert {"matmul", "take", "cuda.Stream", "RawModule", "cupyx.profiler.benchmark"} <= set(names), names


@pytest.mark.parametrize("name", used_names() + METHODS)
def test_cupy_has(name):
    try:
        resolve(name)
    except (AttributeError, ImportError) as e:
        pytest.fail(f"gpubp uses cupy.{name}, which CuPy {cupy.__version__} does not have: {e}")
