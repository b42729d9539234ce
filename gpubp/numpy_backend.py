"""The ops of one BP step as whole-array expressions (``ArrayBackend``), and
the NumPy backend tuned for the CPU (``NumpyBackend``).  The kernel backends
(``gpubp.cuda.backend``) subclass ``ArrayBackend``; ``gpubp.backend`` picks
one.  The MLP calls the methods below and never asks which backend it has.

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

from .validation import (DLPACK_CUDA, DLPACK_CUDA_MANAGED, DLPACK_DEVICES, DLPACK_HOST, InputError, dlpack_device,
                         from_dlpack, host_available_bytes, not_on_host_error)

#: |x| beyond which e^−x would leave the normal numbers: log(1/tiny), 87 (float32), 708 (float64); made
#: once here, not on every bias_sigmoid call (np.finfo and a log cost ~2 µs, a small net's σ ~2 µs)
_SIGMOID_BOUND = {np.dtype(t): float(np.floor(-np.log(np.finfo(t).tiny))) for t in (np.float32, np.float64)}


def to_numpy(x) -> np.ndarray:
    """A NumPy array of a NumPy or CuPy array (CuPy arrays copy to the host with ``.get()``)."""
    return np.asarray(x.get() if hasattr(x, "get") else x)


class ArrayBackend:
    """The ops of one BP step written as whole-array expressions on ``xp``.

    The base of every backend: ``NumpyBackend`` tunes a few ops for the CPU,
    the kernel backends replace the elementwise and gradient ops with CUDA
    kernels.  Scratch arrays are kept per (shape, dtype, role) so no op
    allocates after its first call.
    """

    name = "numpy"
    #: whether steps are recorded once and replayed (the kernel backends: gpubp.cuda.prepared); here every
    #: op is a ufunc or BLAS call with nothing to validate, so a step runs as written
    prepares = False

    def __init__(self, xp=np):
        self.xp = xp
        self._scratch_arrays = {}
        self._constants = {}
        self._clip = xp.clip

    def __repr__(self):
        return f"<gpubp backend {self.name!r}>"

    # -- arrays ------------------------------------------------------------
    def asarray(self, x, dtype):
        """A C-contiguous array of ``dtype`` on this backend (a copy only if needed)."""
        return self.xp.ascontiguousarray(self.xp.asarray(x, dtype=dtype))

    def from_dlpack(self, x, name="X"):
        """``x`` as an array this backend reads, when it is an array of another library that exports
        DLPack (a PyTorch tensor, a JAX array): the same memory, no copy, where it already lives where
        this backend computes (host memory for numpy and emulated, the current CUDA device for cupy); a
        host view for a device backend to upload once (the checks and ``asarray`` do); an InputError
        naming the fix where this backend cannot read it (a GPU tensor for the numpy backend).  Anything
        else (the backend's own arrays, NumPy and CuPy arrays, lists, pandas) comes back as it is."""
        if type(x) is self.xp.ndarray or isinstance(x, np.ndarray) or type(x).__module__.startswith("cupy"):
            return x
        device = dlpack_device(x)
        if device is None:
            return x
        kind, index = device
        if self.xp is not np and kind in (DLPACK_CUDA, DLPACK_CUDA_MANAGED):      # device or managed memory
            current = self.xp.cuda.Device().id
            if index != current:
                raise InputError(f"{name} is on CUDA device {index} but this model is on device {current}: move "
                                 f"it there first (PyTorch: {name}.to('cuda:{current}')), or build the model "
                                 f"inside `with cupy.cuda.Device({index}):`")
            return from_dlpack(x, name, self.xp, device)
        if kind in DLPACK_HOST:
            return from_dlpack(x, name, np, device)
        if self.xp is np:
            raise not_on_host_error(x, name, device)
        raise InputError(f"{name} is on {DLPACK_DEVICES.get(kind, f'DLPack device type {kind}')} device {index}, "
                         f"which the {self.name} backend cannot read (it computes on CUDA devices): copy it to "
                         f"the host or to a CUDA device first")

    def to_numpy(self, x) -> np.ndarray:
        return to_numpy(x)

    def available_bytes(self) -> int | None:
        """Memory a new array can take on this backend's device (None if unknown)."""
        return host_available_bytes()

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def take_rows(self, X, idx, out):
        """out = X[idx]: gather a mini-batch."""
        self.xp.take(X, idx, axis=0, out=out)

    def gather_rows(self, X, Y, idx, x, y):
        """x = X[idx], y = Y[idx]: a mini-batch's inputs and targets."""
        self.take_rows(X, idx, out=x)
        self.take_rows(Y, idx, out=y)

    def total(self, x) -> float:
        """The sum of every element of x, as a Python float (it waits for the device)."""
        return float(x.sum())

    def copy(self, x, out):
        """out[...] = x (on the device: no wait)."""
        self.xp.copyto(out, x)

    def mean(self, x, out):
        """out[0] = the mean of the 1-D array x (on the device: no wait)."""
        self.xp.mean(x, keepdims=True, out=out)

    def run_step(self, step, idx, key=None, keep=()):
        """Run ``step(idx)``, one training step's device work.  A backend may
        capture it once per ``key`` and replay it (CUDA graphs); ``keep``
        holds what a captured step refers to."""
        step(idx)

    def release_steps(self):
        """Forget captured steps (and the arrays they kept alive)."""

    def synchronize(self):
        """Wait for queued device work (a no-op on the CPU)."""

    def _scratch(self, shape, dtype, role):
        """A scratch array per (shape, dtype, role): arrays of different roles
        never alias, even when their shapes happen to agree."""
        key = (shape, dtype, role)       # shapes and dtypes come from arrays: already hashable
        t = self._scratch_arrays.get(key)
        if t is None:
            t = self._scratch_arrays[key] = self.xp.empty(shape, dtype=dtype)
        return t

    def _c(self, value, dtype):
        """``value`` as a 0-d array of ``dtype``, made once: a ufunc takes one
        about 0.5 µs faster than a Python float, which it must convert on
        every call (it matters for small nets, where a step is ~30 calls)."""
        key = (value, dtype)
        c = self._constants.get(key)
        if c is None:
            if len(self._constants) > 256:       # learning-rate schedules make new values; keep it bounded
                self._constants.clear()
            c = self._constants[key] = self.xp.asarray(value, dtype=dtype)
        return c

    # -- feedforward: z = a W + b, a = σ(z) --------------------------------
    def matmul(self, a, b, out):
        """out = a @ b  (the GEMMs: BLAS on the CPU, cuBLAS on the GPU)."""
        self.xp.matmul(a, b, out=out)

    def bias_sigmoid(self, z, b):
        """z ← σ(z + b) in place, σ(x) = 1 / (1 + e^−x): accurate in relative terms in both tails
        (½ tanh(x/2) + ½, one pass cheaper, gives exactly 0 for x ≲ −17 in float32, where σ is
        4e-8, and so a wrong δ through saturated units).  −x is clamped to ±log(1/tiny) (87 in
        float32, 708 in float64), so e^−x neither overflows nor underflows and σ stays a normal
        number (beyond the clamp σ is below the smallest normal float anyway); NaN passes through."""
        xp, one = self.xp, self._c(1.0, z.dtype)
        neg_b = self._scratch(b.shape, b.dtype, "neg_b")
        bound = _SIGMOID_BOUND[z.dtype]
        xp.negative(b, out=neg_b)
        xp.subtract(neg_b, z, out=z)                        # −x = −(z + b)
        self._clip(z, self._c(-bound, z.dtype), self._c(bound, z.dtype), out=z)
        xp.exp(z, out=z)                                    # e^−x
        z += one
        xp.divide(one, z, out=z)                            # 1 / (1 + e^−x)

    def feedforward(self, a_prev, W, b, a):
        """a = σ(a_prev W + b): the GEMM into a, then the bias and the sigmoid in place."""
        self.matmul(a_prev, W, out=a)
        self.bias_sigmoid(a, b)

    # -- backward ------------------------------------------------------------
    def backprop(self, delta_next, W_next, a, delta):
        """delta = (delta_next W_nextᵀ) ⊙ a ⊙ (1 − a) (BP2): the GEMM into delta, then σ' in place."""
        self.matmul(delta_next, W_next.T, out=delta)
        self.sigmoid_delta(delta, a, delta)

    def check_cost(self, cost) -> None:
        """Raise InputError if this backend cannot compute ``cost`` (every cost with ``fn``/``delta`` works here)."""

    def output_delta(self, cost, a, y, delta, loss=None):
        """delta = δ_L(a, y) for ``cost`` (per sample); loss[r] = per-sample cost (if given)."""
        tmp = self._scratch(a.shape, a.dtype, "tmp")
        if loss is not None:
            cost.fn(a, y, loss, tmp, self._scratch(a.shape, a.dtype, "tmp2"))
        cost.delta(a, y, delta, tmp)

    def loss(self, cost, a, y, loss):
        """loss[r] = per-sample cost of row r (no delta)."""
        cost.fn(a, y, loss, self._scratch(a.shape, a.dtype, "tmp"), self._scratch(a.shape, a.dtype, "tmp2"))

    def sigmoid_delta(self, g, a, delta):
        """delta = g ⊙ a ⊙ (1 − a)   (σ'(z) = a(1 − a); delta may be g)."""
        sp = self._scratch(a.shape, a.dtype, "tmp")
        self.xp.subtract(self._c(1.0, a.dtype), a, out=sp)
        sp *= a
        self.xp.multiply(g, sp, out=delta)

    def weight_grad(self, a_prev, delta, dW, db, scale=1.0):
        """dW = scale · a_prevᵀ δ  (the sum over the batch of outer products),
        db = scale · Σ_batch δ."""
        self.xp.matmul(a_prev.T, delta, out=dW)
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
        tmpW = self._scratch(W.shape, W.dtype, "update")
        if lmbda:
            self.xp.multiply(W, lmbda, out=tmpW)
            dW += tmpW
        for p, g, v, tmp in ((W, dW, vW, tmpW), (b, db, vb, self._scratch(b.shape, b.dtype, "update"))):
            if v is not None:
                v *= mu
                v += g
                g = v
            self.xp.multiply(g, eta, out=tmp)
            p -= tmp

    def weight_grad_sgd(self, a_prev, delta, W, b, vW=None, vb=None, *, scale=1.0, eta, lmbda=0.0, mu=0.0):
        """The weight gradient and the SGD update of one layer (fused on GPU
        backends, so dW is never written to memory; two steps here)."""
        dW = self._scratch(W.shape, W.dtype, "dW")
        db = self._scratch(b.shape, b.dtype, "db")
        self.weight_grad(a_prev, delta, dW, db, scale)
        self.sgd_update(W, b, dW, db, vW, vb, eta=eta, lmbda=lmbda, mu=mu)


class NumpyBackend(ArrayBackend):
    """The ops on NumPy arrays, tuned for the CPU.

    The weight update is W ← W − a_prevᵀ(η·δ): δ (B × n_out) is scaled before
    the GEMM instead of dW (n_in × n_out) after it, which saves a temporary
    and a pass over W when B < n_in, as it is for every layer fed by the
    input.

    Every product goes through NumPy's own BLAS.  (SciPy's BLAS could add the
    update to W inside the GEMM, via gemm's β, but SciPy's wheel bundles a
    second OpenBLAS, and two OpenBLAS thread pools used in turn spin against
    each other: one 128×784×256 sgemm of each, alternated, took 18 ms a pair
    against 1 ms.)
    """

    name = "numpy"

    def __init__(self):
        super().__init__(np)
        # the clip ufunc itself: np.clip's Python wrapper costs ~1 µs a call, and np.minimum with a
        # scalar is 4x slower than clip at 512×1024 (NumPy 2.4)
        self._clip = getattr(getattr(np, "_core", None) or np.core, "umath").clip

    def total(self, x) -> float:
        return float(np.add.reduce(x, axis=None))      # the ufunc itself: x.sum()'s wrapper costs ~1 µs

    def take_rows(self, X, idx, out):
        """out = X[idx].  ``mode="clip"`` because NumPy's default (``"raise"``)
        copies through a temporary; the indices come from a permutation, so
        they are always in range."""
        X.take(idx, axis=0, out=out, mode="clip")

    def weight_grad_sgd(self, a_prev, delta, W, b, vW=None, vb=None, *, scale=1.0, eta, lmbda=0.0, mu=0.0):
        if vW is not None:
            return super().weight_grad_sgd(a_prev, delta, W, b, vW, vb, scale=scale, eta=eta, lmbda=lmbda, mu=mu)
        dW = self._scratch(W.shape, W.dtype, "dW")
        db = self._scratch(b.shape, b.dtype, "db")
        eta_delta = self._scratch(delta.shape, delta.dtype, "eta_delta")
        np.multiply(delta, self._c(eta * scale, delta.dtype), out=eta_delta)     # η·δ
        np.matmul(a_prev.T, eta_delta, out=dW)             # η·∂C/∂W = a_prevᵀ (η δ)
        np.add.reduce(eta_delta, axis=0, out=db)           # η·∂C/∂b
        if lmbda:
            W *= 1.0 - eta * lmbda                    # W − η(∂C/∂W + λW) = (1 − ηλ)W − η ∂C/∂W
        W -= dW
        b -= db
