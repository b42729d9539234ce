import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="module", params=["emulated", pytest.param("cupy", marks=pytest.mark.gpu)])
def dev(request):
    """The device the kernel checks run on (gpubp.check.kernels.Device): the emulated one, and with -m gpu
    the current CUDA device (skipped with the reason where there is none)."""
    from gpubp.check import kernels as checks
    from gpubp.cuda import sources

    if request.param == "emulated":
        return checks.emulated_device()
    try:
        return checks.cupy_device()
    except sources.DeviceUnavailable as e:
        pytest.skip(f"no GPU for the cupy backend: {e}")


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
