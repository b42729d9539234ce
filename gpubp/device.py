"""Is there a CUDA device here?  The one probe of CuPy, its driver and a
device, the facts behind the answer, and the error raised when it is no.

Imports nothing of gpubp: the backends, the kernel loader, ``gpubp check``
and the CLI all ask here, so there is one answer (and one wording of its fix).

Two things are settled here before CuPy is first imported, because CuPy
settles them at import:

* its kernel cache.  CuPy 14 opens ``$CUPY_CACHE_DIR`` (default
  ``~/.cupy/kernel_cache``) when ``cupy`` is imported and fails the import if
  the folder cannot be made (a read-only or missing home on a cluster node).
  When that folder is not usable, ``CUPY_CACHE_DIR`` is pointed at a fresh
  temporary folder instead, and :data:`notes` says so.
* nothing else yet; the driver is read after the import (``driver_advice``).
"""
from __future__ import annotations

import os
import tempfile


class DeviceUnavailable(RuntimeError):
    """The requested device (CuPy + a CUDA GPU) cannot be used here; the message says why and the fix."""


#: what was done to make CuPy usable here (read by ``gpubp check`` and ``gpubp info``)
notes: list[str] = []

_FIX = "use backend='numpy' (or 'emulated') on this machine"
_FIX_CLI = "use --backend numpy (or emulated) on this machine"


def for_command_line(text: str, fix: str = _FIX_CLI) -> str:
    """A message of this module as a command-line user reads it: the fix spelt as the flag
    (``--backend numpy``), not as the Python argument (``backend='numpy'``) the library says;
    ``fix`` instead, for a command that has no ``--backend`` (``gpubp tune`` needs the GPU itself)."""
    return text.replace(_FIX, fix)


def _usable_dir(path: str) -> bool:
    """True if ``path`` is (or can be made) a folder a file can be written in (a real write: root ignores modes)."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def cupy_cache_dir(environ=None) -> tuple[str | None, str | None]:
    """(folder to use as CUPY_CACHE_DIR, why) when CuPy's kernel cache folder is not usable,
    else (None, None): the folder CuPy would use is fine."""
    environ = os.environ if environ is None else environ
    wanted = environ.get("CUPY_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cupy", "kernel_cache")
    if _usable_dir(wanted):
        return None, None
    fallback = tempfile.mkdtemp(prefix="gpubp-cupy-kernel-cache-")
    origin = "CUPY_CACHE_DIR" if environ.get("CUPY_CACHE_DIR") else "CuPy's default kernel cache"
    return fallback, (f"{origin} {wanted} cannot be written, so CUPY_CACHE_DIR={fallback} (kernels are "
                      f"recompiled in every new process; set CUPY_CACHE_DIR to a writable folder to keep them)")


_prepared = False


def prepare_cupy() -> None:
    """Settle CuPy's kernel cache folder before CuPy is imported (once per process)."""
    global _prepared
    if _prepared:
        return
    _prepared = True
    import sys
    if "cupy" in sys.modules:          # too late to change what CuPy read at import
        return
    folder, why = cupy_cache_dir()
    if folder:
        os.environ["CUPY_CACHE_DIR"] = folder
        notes.append(why)


def driver_advice(driver: int, runtime: int) -> str | None:
    """Why a driver that reports CUDA ``driver`` (cudaDriverGetVersion: 12040 = 12.4, 0 = no driver)
    cannot run a CuPy built for CUDA ``runtime``, with the fix; None if it can."""
    def v(x):
        return f"{x // 1000}.{x % 1000 // 10}"
    if driver == 0:
        return ("no NVIDIA driver is loaded (cudaDriverGetVersion reports 0: libcuda.so is missing or there is "
                "no GPU); `nvidia-smi` shows whether the machine has both")
    if driver // 1000 < runtime // 1000:
        other = f"cupy-cuda{driver // 1000}x"
        return (f"the NVIDIA driver supports CUDA {v(driver)} but this CuPy is built for CUDA {v(runtime)}, a newer "
                f"major version: install {other} instead ('gpubp[gpu]' is CUDA 12, 'gpubp[gpu-cuda13]' CUDA 13) "
                f"or upgrade the driver")
    return None


def gpu_name(props) -> str:
    """The device's name from a ``cupy.cuda.runtime.getDeviceProperties`` dict (bytes or str, by CuPy version)."""
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def cuda_status() -> tuple[bool, str]:
    """(True, description) if CuPy imports and a CUDA device answers, else
    (False, the reason in words, with the fix)."""
    prepare_cupy()
    try:
        import cupy
    except ImportError:
        return False, ("CuPy is not installed; on a machine with an NVIDIA GPU, pip install 'gpubp[gpu]' "
                       f"for CUDA 12 or 'gpubp[gpu-cuda13]' for CUDA 13, else {_FIX}")
    except Exception as e:  # a broken CuPy install raises all sorts of things
        return False, f"CuPy failed to import ({type(e).__name__}: {e}); reinstall it, or {_FIX}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        try:
            advice = driver_advice(cupy.cuda.runtime.driverGetVersion(), cupy.cuda.runtime.runtimeGetVersion())
        except Exception:
            advice = None
        if advice is None:
            try:
                v = cupy.cuda.runtime.runtimeGetVersion()
                advice = f"the cupy backend needs an NVIDIA GPU whose driver supports CUDA {v // 1000}.{v % 1000 // 10}"
            except Exception:
                advice = "the cupy backend needs an NVIDIA GPU and its driver"
            advice += " (`nvidia-smi` shows both)"
        return False, f"CuPy found no usable CUDA driver/device ({e}); {advice}; else {_FIX}"
    if n < 1:
        return False, f"CuPy is installed but there is no CUDA device; {_FIX}"
    try:
        name = gpu_name(cupy.cuda.runtime.getDeviceProperties(0))
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


def cuda_environment() -> dict:
    """The facts behind :func:`cuda_status`, each read separately so that one that fails leaves the
    rest: CuPy, CUDA runtime, driver and NVRTC versions, the devices (name, compute capability,
    memory), CuPy's kernel cache folder, and what was done to make CuPy usable (``notes``)."""
    ok, why = cuda_status()
    env = {"usable": ok, "status": why, "notes": list(notes), "cupy": None}
    try:
        import cupy
    except Exception:
        return env
    rt = cupy.cuda.runtime
    env["cupy"] = cupy.__version__
    for key, read in (("runtime", rt.runtimeGetVersion), ("driver", rt.driverGetVersion)):
        try:
            env[key] = read()
        except Exception as e:
            env[key] = f"unreadable: {e}"
    try:
        from cupy_backends.cuda.libs import nvrtc
        env["nvrtc"] = ".".join(map(str, nvrtc.getVersion()))
    except Exception as e:
        env["nvrtc"] = f"unreadable: {e}"
    env["kernel_cache"] = os.environ.get("CUPY_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cupy",
                                                                           "kernel_cache")
    devices = []
    if ok:
        for i in range(rt.getDeviceCount()):
            try:
                p = rt.getDeviceProperties(i)
                devices.append({"id": i, "name": gpu_name(p), "compute_capability": f"{p['major']}.{p['minor']}",
                                "memory_gib": round(p["totalGlobalMem"] / 2**30, 1),
                                "sms": p["multiProcessorCount"]})
            except Exception as e:
                devices.append({"id": i, "error": str(e)})
    env["devices"] = devices
    return env
