import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def launched(monkeypatch):
    """The names of the kernels launched from now on, on every KernelSet of the process (a GEMM may run on a
    variant: the narrow tiles, a tuned tile set).  Launches go through ``raw_function``'s callable, which
    prepared steps keep from their recording on; ``launched.stop()`` ends the count."""
    from gpubp.cuda import sources

    names = _Launched()
    raw = sources.KernelSet.raw_function
    monkeypatch.setattr(sources.KernelSet, "raw_function",
                        lambda ks, name: lambda *a, **k: names.append(name) or raw(ks, name)(*a, **k))
    names.stop = monkeypatch.undo
    return names


class _Launched(list):
    stop = None
