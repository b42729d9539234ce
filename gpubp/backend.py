"""Backend selection: a name (``"auto"``, ``"numpy"``, ``"emulated"``,
``"cupy"``) to a backend object and the reason it was picked.

    backend            arrays   GEMMs                  elementwise + gradients
    ``numpy``          NumPy    NumPy/BLAS             NumPy ufuncs (``out=``)   gpubp.numpy_backend
    ``emulated``       NumPy    NumPy/BLAS             kernels/*.cu on the emulated CUDA device (CPU)
    ``cupy``           CuPy     cuBLAS (cupy.matmul)   kernels/*.cu through cupy.RawModule
                                                       (both: gpubp.cuda.backend)
"""
from __future__ import annotations

from .device import cuda_status
from .numpy_backend import NumpyBackend
from .validation import InputError

BACKENDS = ("auto", "numpy", "emulated", "cupy")


def get_backend(name="auto", **options):
    """Return ``(backend, reason)`` for a backend name.

    ``auto`` picks ``cupy`` when CuPy imports and a device answers, else
    ``numpy``; ``reason`` says which was picked and why.  ``options`` go to the
    kernel backends (see ``gpubp.cuda.backend.KernelBackend``).
    """
    if not isinstance(name, str) and hasattr(name, "matmul"):
        return name, f"backend object {name!r}"
    if options:
        from .cuda.backend import check_option_names      # the kernel backends' options, checked under "auto" too
        check_option_names(options)
    if name == "cuda":
        name = "cupy"
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        ok, why = cuda_status()
        if ok:
            name, reason = "cupy", f"auto: picked cupy ({why})"
        else:
            ignored = f"; backend_options {sorted(options)} ignored: the numpy backend has none" if options else ""
            return NumpyBackend(), f"auto: picked numpy ({why}){ignored}"
    else:
        reason = f"{name} (requested)"
    if name == "numpy":
        if options:
            raise InputError(f"the numpy backend takes no backend_options, got {sorted(options)}; they are for "
                             f"backend='emulated' or 'cupy'")
        return NumpyBackend(), reason
    from .cuda.backend import KernelBackend     # lazily: the kernel machinery loads only when asked for
    return KernelBackend.create(name, **options), reason
