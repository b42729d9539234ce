"""The backend seam: which array module holds the arrays, and who computes
each part of a BP step.  This is the only module that knows backends exist;
the MLP calls the methods below and never asks which backend it has.

    backend            arrays   GEMMs                  elementwise + gradients
    ``numpy``          NumPy    NumPy/BLAS             NumPy ufuncs (``out=``)
    ``emulated``       NumPy    NumPy/BLAS             kernels/*.cu on the emulated CUDA device (CPU)
    ``cupy``           CuPy     cuBLAS (cupy.matmul)   kernels/*.cu through cupy.RawModule

Every op writes into arrays it is given (the MLP allocates them once per batch
size), so a steady-state training step allocates nothing.  Shapes follow the
MLP: activations ``a`` are B × n (batch-first, row-major), ``W`` is n_in × n_out
so that ``z = a W + b``.
"""
from __future__ import annotations

import numpy as np


class ArrayBackend:
    """The ops of one BP step written as whole-array expressions on ``xp``.

    This is the NumPy backend, and the fallback for every op a kernel backend
    does not override.  Scratch arrays are kept per (shape, dtype) so no op
    allocates after its first call.
    """

    name = "numpy"

    def __init__(self, xp=np):
        self.xp = xp
        self._scratch_arrays = {}

    def __repr__(self):
        return f"<gpubp backend {self.name!r}>"

    # -- arrays ------------------------------------------------------------
    def asarray(self, x, dtype):
        """A C-contiguous array of ``dtype`` on this backend (a copy only if needed)."""
        return self.xp.ascontiguousarray(self.xp.asarray(x, dtype=dtype))

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x.get() if hasattr(x, "get") else x)

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def take_rows(self, X, idx, out):
        """out = X[idx]: gather a mini-batch."""
        self.xp.take(X, idx, axis=0, out=out)

    def synchronize(self):
        """Wait for queued device work (a no-op on the CPU)."""

    def _scratch(self, shape, dtype, k=0):
        key = (tuple(shape), np.dtype(dtype), k)
        t = self._scratch_arrays.get(key)
        if t is None:
            t = self._scratch_arrays[key] = self.xp.empty(shape, dtype=dtype)
        return t

    # -- feedforward: z = a W + b, a = σ(z) --------------------------------
    def matmul(self, a, b, out):
        """out = a @ b  (the GEMMs: BLAS on the CPU, cuBLAS on the GPU)."""
        self.xp.matmul(a, b, out=out)

    def bias_sigmoid(self, z, b):
        """z ← σ(z + b) in place, with σ(x) = ½ tanh(x / 2) + ½ (equal to
        1 / (1 + e^−x) and free of overflow for large |x|)."""
        xp = self.xp
        xp.add(z, b, out=z)
        z *= 0.5
        xp.tanh(z, out=z)
        z *= 0.5
        z += 0.5

    # -- backward ------------------------------------------------------------
    def output_delta(self, cost, a, y, delta, loss=None, scale=1.0):
        """delta = scale · δ_L(a, y) for ``cost``; loss[r] = per-sample cost (if given)."""
        tmp = self._scratch(a.shape, a.dtype, 0)
        if loss is not None:
            cost.fn(a, y, loss, tmp, self._scratch(a.shape, a.dtype, 1))
        cost.delta(a, y, delta, tmp)
        if scale != 1.0:
            delta *= scale

    def loss(self, cost, a, y, loss):
        """loss[r] = per-sample cost of row r (no delta)."""
        cost.fn(a, y, loss, self._scratch(a.shape, a.dtype, 0), self._scratch(a.shape, a.dtype, 1))

    def sigmoid_delta(self, g, a, delta):
        """delta = g ⊙ a ⊙ (1 − a)   (σ'(z) = a(1 − a); delta may be g)."""
        sp = self._scratch(a.shape, a.dtype, 0)
        self.xp.subtract(1, a, out=sp)
        sp *= a
        self.xp.multiply(g, sp, out=delta)

    def weight_grad(self, a_prev, delta, dW, db, scale=1.0):
        """dW = scale · a_prevᵀ δ  (the sum over the batch of outer products),
        db = scale · Σ_batch δ."""
        self.matmul(a_prev.T, delta, out=dW)
        self.xp.sum(delta, axis=0, out=db)
        if scale != 1.0:
            dW *= scale
            db *= scale

    def sgd_update(self, W, b, dW, db, vW=None, vb=None, *, eta, lmbda=0.0, mu=0.0):
        """Mini-batch SGD with L2 weight decay λ and momentum μ:

            g = dW + λ W;   v ← μ v + g;   W ← W − η v      (v = g without momentum)
            gb = db;        vb ← μ vb + gb; b ← b − η vb     (biases are not decayed)

        ``dW``/``db`` are used as scratch and left changed.
        """
        tmpW = self._scratch(W.shape, W.dtype, 2)
        if lmbda:
            self.xp.multiply(W, lmbda, out=tmpW)
            dW += tmpW
        for p, g, v, tmp in ((W, dW, vW, tmpW), (b, db, vb, self._scratch(b.shape, b.dtype, 2))):
            if v is not None:
                v *= mu
                v += g
                g = v
            self.xp.multiply(g, eta, out=tmp)
            p -= tmp

    def weight_grad_sgd(self, a_prev, delta, W, b, vW=None, vb=None, *, scale=1.0, eta, lmbda=0.0, mu=0.0):
        """The weight gradient and the SGD update of one layer (fused on GPU
        backends, so dW is never written to memory; two steps here)."""
        dW = self._scratch(W.shape, W.dtype, 3)
        db = self._scratch(b.shape, b.dtype, 3)
        self.weight_grad(a_prev, delta, dW, db, scale)
        self.sgd_update(W, b, dW, db, vW, vb, eta=eta, lmbda=lmbda, mu=mu)


class NumpyBackend(ArrayBackend):
    """The ops on NumPy, with the SGD update fused into the weight-gradient
    GEMM through BLAS (``scipy.linalg.blas``), the CPU twin of the fused CUDA
    kernel: ``gemm`` computes C ← α·op(A)·op(B) + β·C, so

        W ← (1 − ηλ)·W − η·scale·a_prevᵀ δ        is one gemm with C = W, β = 1 − ηλ
        v ← μ·v + scale·a_prevᵀ δ                  is one gemm with C = v, β = μ

    and dW never exists.  NumPy's matmul has no β, which would cost a
    temporary and two more passes over W per layer.  Arrays are C-ordered; BLAS
    is Fortran-ordered, so every operand is passed transposed (a free view):
    Wᵀ ← β·Wᵀ + α·δᵀ·a_prev.
    """

    name = "numpy"

    def __init__(self):
        super().__init__(np)
        from scipy.linalg import blas
        self._gemm = {np.dtype(np.float32): blas.sgemm, np.dtype(np.float64): blas.dgemm}
        self._axpy = {np.dtype(np.float32): blas.saxpy, np.dtype(np.float64): blas.daxpy}

    def matmul(self, a, b, out):
        """out = a @ b as one BLAS gemm on Fortran views: outᵀ = bᵀ aᵀ.

        Every GEMM of the NumPy backend goes through SciPy's BLAS, never
        NumPy's: the two wheels bundle separate OpenBLAS builds whose thread
        pools, used in turn, spin against each other (a step ran 10x slower)."""
        (A, ta), (B, tb) = _blas_operand(b), _blas_operand(a)
        _into(out, self._gemm[out.dtype](1.0, A, B, c=out.T, trans_a=ta, trans_b=tb, overwrite_c=1))

    def take_rows(self, X, idx, out):
        """out = X[idx].  ``mode="clip"`` because NumPy's default (``"raise"``)
        copies through a temporary; the indices come from a permutation, so
        they are always in range."""
        X.take(idx, axis=0, out=out, mode="clip")

    def weight_grad_sgd(self, a_prev, delta, W, b, vW=None, vb=None, *, scale=1.0, eta, lmbda=0.0, mu=0.0):
        gemm = self._gemm[W.dtype]
        db = self._scratch(b.shape, b.dtype, 3)
        np.sum(delta, axis=0, out=db)                                    # Σ_batch δ
        if vW is None:
            # W ← W − η(g + λW) = (1 − ηλ) W − η·scale·a_prevᵀ δ
            _into(W, gemm(-eta * scale, delta.T, a_prev.T, beta=1.0 - eta * lmbda, c=W.T, trans_b=1, overwrite_c=1))
            db *= eta * scale
            b -= db
            return
        # v ← μ v + scale·a_prevᵀ δ + λW;   W ← W − η v
        _into(vW, gemm(scale, delta.T, a_prev.T, beta=mu, c=vW.T, trans_b=1, overwrite_c=1))
        axpy = self._axpy[W.dtype]
        w, v = W.reshape(-1), vW.reshape(-1)
        if lmbda:
            _into(vW, axpy(w, v, a=lmbda))
        _into(W, axpy(v, w, a=-eta))
        vb *= mu
        db *= scale
        vb += db
        _into(b, axpy(vb, b, a=-eta))


def _blas_operand(x):
    """(array, trans) such that BLAS reads xᵀ without a copy: a C-ordered x is
    a Fortran-ordered xᵀ; a transposed view (Fortran-ordered) is read with trans."""
    return (x.T, 0) if x.flags.c_contiguous else (x, 1)


def _into(target, result):
    """BLAS wrappers update their output in place when it is contiguous and of
    the right dtype (always so here); should one ever hand back a copy, keep
    the result rather than lose the update."""
    if not np.may_share_memory(target, result):
        target[...] = result.reshape(target.shape[::-1]).T if result.ndim == 2 else result.reshape(target.shape)


def cuda_status() -> tuple[bool, str]:
    """(True, description) if CuPy imports and a CUDA device answers, else
    (False, the reason in words, with the fix)."""
    try:
        import cupy
    except ImportError:
        return False, ("CuPy is not installed (pip install 'gpubp[gpu]' for CUDA 12, "
                       "'gpubp[gpu-cuda13]' for CUDA 13)")
    except Exception as e:  # a broken CuPy install raises all sorts of things
        return False, f"CuPy failed to import: {e}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return False, f"CuPy found no usable CUDA driver/device: {e}"
    if n < 1:
        return False, "CuPy is installed but there is no CUDA device"
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    except Exception as e:
        return False, f"the CUDA device does not answer: {e}"
    return True, f"{n} CUDA device(s); device 0: {name}"


BACKENDS = ("auto", "numpy", "emulated", "cupy")


def get_backend(name="auto", **options):
    """Return ``(backend, reason)`` for a backend name.

    ``auto`` picks ``cupy`` when CuPy imports and a device answers, else
    ``numpy``; ``reason`` says which was picked and why.  ``options`` go to the
    kernel backends (see ``gpubp.kernel_backend.KernelBackend``).
    """
    if not isinstance(name, str) and hasattr(name, "matmul"):
        return name, f"backend object {name!r}"
    if name == "cuda":
        name = "cupy"
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        ok, why = cuda_status()
        if ok:
            name, reason = "cupy", f"auto: picked cupy ({why})"
        else:
            return NumpyBackend(), f"auto: picked numpy ({why})"
    else:
        reason = f"{name} (requested)"
    if name == "numpy":
        if options:
            raise TypeError(f"the numpy backend takes no options, got {sorted(options)}")
        return NumpyBackend(), reason
    from .kernel_backend import KernelBackend
    return KernelBackend.create(name, **options), reason
