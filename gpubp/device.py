"""Is there a CUDA device here?  The one probe of CuPy, its driver and a
device, and the error raised when the answer is no.

Imports nothing of gpubp: the backends, the kernel loader and the CLI all ask
here, so there is one answer (and one wording of its fix).
"""
from __future__ import annotations


class DeviceUnavailable(RuntimeError):
    """The requested device (CuPy + a CUDA GPU) cannot be used here; the message says why and the fix."""


def cuda_status() -> tuple[bool, str]:
    """(True, description) if CuPy imports and a CUDA device answers, else
    (False, the reason in words, with the fix)."""
    fix = "use backend='numpy' (or 'emulated') on this machine"
    try:
        import cupy
    except ImportError:
        return False, ("CuPy is not installed; on a machine with an NVIDIA GPU, pip install 'gpubp[gpu]' "
                       f"for CUDA 12 or 'gpubp[gpu-cuda13]' for CUDA 13, else {fix}")
    except Exception as e:  # a broken CuPy install raises all sorts of things
        return False, f"CuPy failed to import ({e}); reinstall it, or {fix}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        try:
            v = cupy.cuda.runtime.runtimeGetVersion()
            need = f"an NVIDIA GPU whose driver supports CUDA {v // 1000}.{v % 1000 // 10} (`nvidia-smi` shows both)"
        except Exception:
            need = "an NVIDIA GPU and its driver (`nvidia-smi` shows both)"
        return False, f"CuPy found no usable CUDA driver/device ({e}); the cupy backend needs {need}, else {fix}"
    if n < 1:
        return False, f"CuPy is installed but there is no CUDA device; {fix}"
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    except Exception as e:
        return False, f"the CUDA device does not answer: {e}"
    return True, f"{n} CUDA device(s); device 0: {name}"


def require_cupy():
    """The ``cupy`` module, or :class:`DeviceUnavailable` with the reason and the fix."""
    ok, why = cuda_status()
    if not ok:
        raise DeviceUnavailable(why)
    import cupy
    return cupy
