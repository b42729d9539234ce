"""A sigmoid multilayer perceptron trained by backpropagation.

The code follows the four BP equations, with layers l = 1 … L and a[0] = x
(batch-first: every activation is B × n, W[l] is n_{l−1} × n_l):

    feedforward    z_l = a_{l−1} W_l + b_l,   a_l = σ(z_l)
    (BP1) output   δ_L = ∇_a C ⊙ σ'(z_L)     = (a_L − y) ⊙ a_L(1 − a_L)  for MSE,
                                              = a_L − y                   for sigmoid + cross-entropy
    (BP2) hidden   δ_l = (δ_{l+1} W_{l+1}ᵀ) ⊙ a_l(1 − a_l)
    (BP3) biases   ∂C/∂b_l = mean over the batch of δ_l
    (BP4) weights  ∂C/∂W_l = a_{l−1}ᵀ δ_l / B   (the sum of per-sample outer products)

The batch cost is the mean per-sample cost, so every gradient carries 1/B:
the δ_l below are per-sample errors, and the 1/B is applied where BP3/BP4
sum them over the batch (``scale=1/B``), fused into that step.

Arrays live on a backend (chosen by ``gpubp.backend``): NumPy, the emulated CUDA device,
or CuPy.  This module never asks which; it calls the backend's ops.

Non-goals: other activations, convolution, automatic differentiation.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import blas, persistence
from .backend import get_backend
from .costs import get_cost
from . import parallel
from .parallel import DataParallel, share
from .progress import Progress
from .validation import (InputError, check_dtype, check_memory, check_positive, check_seed, check_sizes,
                         check_targets, check_X)

class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


class SaturationWarning(RuntimeWarning):
    """Training ended with (nearly) every sigmoid saturated: σ'(z) = 0, so no gradient flows."""


@dataclass
class Gradients:
    """∂C/∂W_l and ∂C/∂b_l of the mean batch cost, as NumPy arrays, numbered as ``MLP.W``: ``dW[l]``,
    ``db[l]`` for the layers l = 1 … L of the equations (``dW[0]`` and ``db[0]`` are None, as ``W[0]``
    is), so ``net.W[l] -= lr * grads.dW[l]`` is a step; ``loss`` is the batch's mean cost C."""
    dW: list
    db: list
    loss: float


@dataclass
class History:
    """What ``fit`` measured: one entry per epoch, in order (``len(hist.loss)`` is the epochs run).

    loss            the epoch's mean training cost per sample: each sample's cost taken in the step
                    that trained on it, before that step's update (so it lags the weights at the end)
    test_loss       mean cost per sample on ``test_data`` after the epoch (empty without test_data)
    test_accuracy   fraction of ``test_data`` classified right after the epoch (empty without it)
    seconds         wall time of the epoch, its test evaluation included
    """
    loss: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)


class _Workspace:
    """Every array one step needs for a batch of B samples, allocated once."""

    def __init__(self, bk, sizes, B, dtype):
        self.B = B
        self.a = [bk.empty((B, n), dtype) for n in sizes]           # a[0] = x; a[l] holds z_l, then σ(z_l)
        self.delta = [None] + [bk.empty((B, n), dtype) for n in sizes[1:]]
        self.y = bk.empty((B, sizes[-1]), dtype)
        self.loss = bk.empty((B,), dtype)                              # per-sample cost
        self.rows = bk.xp.arange(B)                                    # 0 … B−1, to one-hot labels into y


class MLP:
    """A sigmoid MLP: ``MLP([784, 30, 10], loss="cross_entropy")``.

    sizes     layer widths, input first (at least 2 entries); layers are numbered l = 1 … L as in
              the equations, and every per-layer list is indexed by l: ``W[l]``, ``b[l]`` (and
              ``backward``'s ``dW[l]``, ``db[l]``), with index 0 None (``weights``/``biases``
              are the NumPy copies ``W[1:]``, ``b[1:]``, for iterating)
    loss      ``"mse"`` (quadratic, the default here, as Nielsen's network.py) or ``"cross_entropy"``
              (sigmoid + cross-entropy: ``gpubp train``'s default, it learns faster)
    backend   ``"auto"`` (CuPy if a device answers, else NumPy), ``"numpy"``,
              ``"emulated"`` (the CUDA kernels on the CPU, slow), ``"cupy"``;
              ``backend_options`` go to the kernel backends
    dtype     float32 (default) or float64
    init      ``"scaled"``: W ~ N(0, 1/fan_in), b ~ N(0, 1) (default);
              ``"normal"``: W, b ~ N(0, 1) (the classic tutorial network)
    seed      seeds initialisation and the shuffling in ``fit``
    """

    def __init__(self, sizes, loss="mse", backend="auto", dtype=np.float32, seed=None, init="scaled",
                 backend_options=None, verbose=False):
        self.sizes = check_sizes(sizes)
        self.cost = get_cost(loss)
        self.dtype = check_dtype(dtype)
        if backend_options is not None and not isinstance(backend_options, Mapping):
            raise InputError(f"backend_options must be a dict like {{'naive': True}}, got "
                             f"{type(backend_options).__name__}")
        self.backend, self.backend_reason = get_backend(backend, **(backend_options or {}))
        self.backend.check_cost(self.cost)
        if verbose:
            print(f"gpubp: backend {self.backend_reason}", file=sys.stderr)
        self.rng = np.random.default_rng(check_seed(seed))
        if init not in ("scaled", "normal"):
            raise InputError(f"init must be 'scaled' or 'normal', not {init!r}")
        self.init = init
        n_params = sum(n_in * n_out + n_out for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]))
        check_memory(f"MLP({self.sizes}) in {self.dtype.name}: its {n_params:,} weights and biases (twice that "
                     f"with momentum)", n_params * self.dtype.itemsize, self.backend.available_bytes(),
                     f"on the {self.backend.name} backend")
        self.W, self.b = [None], [None]                 # W[l], b[l] for l = 1 … L, as in the equations
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            w = self.rng.standard_normal((n_in, n_out), dtype=self.dtype)     # drawn in the model's dtype
            if init == "scaled":
                w *= self.dtype.type(1 / np.sqrt(n_in))
            self.W.append(self.backend.asarray(w, self.dtype))
            self.b.append(self.backend.asarray(self.rng.standard_normal(n_out, dtype=self.dtype), self.dtype))
        self.vW, self.vb = None, None                   # momentum buffers, made on first use
        self.parallel_reason = None                     # how the last data-parallel fit summed its gradients
        self._workspaces = {}
        self._step_plans = {}                           # step()'s prepared steps, per (B, η, λ, μ)
        self._fused_for = {}                            # (B, momentum?) -> whether a step is the fused kernel

    # -- introspection ------------------------------------------------------
    @property
    def L(self) -> int:
        """Number of weight layers."""
        return len(self.sizes) - 1

    @property
    def weights(self):
        """NumPy copies of W[1:]: layer 1 first, for iterating (index by layer with ``W[l]``)."""
        return [self.backend.to_numpy(w).copy() for w in self.W[1:]]

    @property
    def biases(self):
        return [self.backend.to_numpy(b).copy() for b in self.b[1:]]

    def __repr__(self):
        return (f"MLP({self.sizes}, loss={self.cost.name!r}, backend={self.backend.name!r}, "
                f"dtype={self.dtype.name})")

    def _blas(self, B):
        """The BLAS thread count for a step or forward pass of B rows, set for a ``with`` block
        (gpubp.blas: one thread for small GEMMs); nothing on a backend whose GEMMs are not NumPy's."""
        if not self._host_blas:
            return contextlib.nullcontext()
        return blas.limit_for(self.sizes, B)

    @property
    def _host_blas(self) -> bool:
        """Whether this backend's GEMMs are NumPy's BLAS on this host (not CuPy's, not a dry run's)."""
        return self.backend.xp is np and getattr(self.backend, "host_blas", True)

    def _workspace(self, B):
        ws = self._workspaces.get(B)
        if ws is None:
            ws = self._workspaces[B] = _Workspace(self.backend, self.sizes, B, self.dtype)
        return ws


    # -- the two phases of backprop ----------------------------------------
    def _feedforward(self, ws):
        """z_l = a_{l−1} W_l + b_l,  a_l = σ(z_l);  every a_l is kept for the backward pass."""
        bk, a = self.backend, ws.a
        for l in range(1, self.L + 1):
            bk.feedforward(a[l - 1], self.W[l], self.b[l], a[l])       # a_l = σ(a_{l−1} W_l + b_l)
        return a[self.L]

    def _backpropagate(self, ws, loss=None):
        """δ_L (BP1), then δ_l = (δ_{l+1} W_{l+1}ᵀ) ⊙ a_l(1 − a_l) (BP2) down to layer 1."""
        bk, a, delta, L = self.backend, ws.a, ws.delta, self.L
        bk.output_delta(self.cost, a[L], ws.y, delta[L], loss)                          # BP1
        for l in range(L - 1, 0, -1):
            bk.backprop(delta[l + 1], self.W[l + 1], a[l], delta[l])    # δ_l = (δ_{l+1} W_{l+1}ᵀ) ⊙ a_l(1 − a_l)  (BP2)

    # -- public API ----------------------------------------------------------
    def forward(self, X):
        """Output activations a_L for a batch X (n × sizes[0]), as an array of the backend."""
        X = self._checked_X(X)
        out = self.backend.empty((len(X), self.sizes[-1]), self.dtype)
        with self._blas(min(len(X), 1024)):
            for start, stop, ws in self._chunks(X):
                out[start:stop] = self._feedforward(ws)
        return out

    def backward(self, X, y) -> Gradients:
        """∂C/∂W_l and ∂C/∂b_l of the mean batch cost (BP3, BP4), as NumPy copies, indexed by
        layer as ``W`` is: ``grads.dW[l]`` is ∂C/∂W_l for l = 1 … L, ``grads.dW[0]`` is None.

        X: B × sizes[0]; y: B integer labels or B × sizes[-1] targets.  The
        model is not changed."""
        ws = self._loaded(X, y)
        with self._blas(ws.B):
            self._feedforward(ws)
            self._backpropagate(ws, loss=ws.loss)
        dW, db = [None], [None]                         # dW[l] for layer l, as W[l]
        for l in range(1, self.L + 1):
            dW_l = self.backend.empty(self.W[l].shape, self.dtype)
            db_l = self.backend.empty(self.b[l].shape, self.dtype)
            self.backend.weight_grad(ws.a[l - 1], ws.delta[l], dW_l, db_l, scale=1.0 / ws.B)  # a_{l−1}ᵀ δ_l / B, Σ δ_l / B
            dW.append(self.backend.to_numpy(dW_l))
            db.append(self.backend.to_numpy(db_l))
        return Gradients(dW, db, float(self.backend.to_numpy(ws.loss).mean()))

    def step(self, X, y, lr, weight_decay=0.0, momentum=0.0):
        """One mini-batch SGD step on (X, y); returns the batch's mean cost before the step.

        Fast path: when X is already an array of the model's dtype on its device (NumPy for
        "numpy"/"emulated", CuPy for "cupy", or another library's tensor there, seen through
        DLPack), C-contiguous, B × sizes[0], and y is either
        B integer labels or B × sizes[-1] targets of the model's dtype there, the checks
        cost O(1) plus one reduction over the batch (a NaN/Inf or out-of-range value sends
        it to the full checks, which name it), and X is read where it is, not copied."""
        hyper = self._hyper(lr, weight_decay, momentum)
        ndarray = self.backend.xp.ndarray
        if type(X) is not ndarray or type(y) is not ndarray:       # a PyTorch/JAX tensor: read in place
            X, y = self.backend.from_dlpack(X, "X"), self.backend.from_dlpack(y, "y")
        ws = self._fast_batch(X, y)
        if ws is None:                                  # anything else: checked and copied
            ws = self._loaded(X, y)
            X = ws.a[0]
        with self._blas(ws.B):
            self._prepared_step(ws, X, hyper)
        return self.backend.total(ws.loss) / ws.B

    def _prepared_step(self, ws, X, hyper):
        """One training step of ``ws`` with X (checked, B × sizes[0]) as layer 1's input, read in place.
        On a backend that prepares steps, the step of each (B, η, λ, μ) is recorded the first time and
        replayed after, with X as its slot."""
        bk = self.backend
        own_x = ws.a[0]
        ws.a[0] = X                                     # read in place: layer 1's a_prev is the caller's X
        try:
            if not bk.prepares:
                return self._train_step(ws, *hyper, ws.loss)
            def run():
                if self._fused(ws.B, hyper[2]):         # one kernel: X's rows 0 … B−1 (ws.rows), ws.y's targets
                    self._fused_steps(X, ws.y, ws.rows, ws.loss, ws.B, hyper)
                else:
                    self._train_step(ws, *hyper, ws.loss)
            # X is a slot: a GEMM's launch is bound to how X lies (16-byte aligned or not: its vector loads)
            bk.replay(self._step_plans, (ws.B, *hyper, bk.ks.aligned16(X)), self._params(), run, {"x": X}, limit=16)
        finally:
            ws.a[0] = own_x

    def _fused(self, B, mu) -> bool:
        """Whether a training step of B rows runs as the fused kernel (kernels/fused_step.cu) on this backend,
        decided once per (B, momentum) by the backend's fused_step option; backend_reason says which step
        runs and why."""
        key = (B, bool(mu))
        got = self._fused_for.get(key)
        if got is None:
            choose = getattr(self.backend, "fused_choice", None)
            if choose is None:                          # the numpy backend: its own ops, no kernels
                got = self._fused_for[key] = False
            else:
                got, why = choose(self.sizes, B, self.dtype, bool(mu))
                self._fused_for[key] = got
                self.backend_reason = f"{self.backend_reason.split('; training step: ')[0]}; training step: {why}"
        return got

    def _steps_per_launch(self, B, mu, steps) -> int:
        """How many steps of B rows go in one launch: K > 1 where the fused step runs (the backend option
        steps_per_launch, else STEPS_PER_LAUNCH, at most ``steps``), else 1."""
        if steps < 2 or not self._fused(B, mu):
            return 1
        from .cuda.backend import STEPS_PER_LAUNCH
        return max(1, min(steps, self.backend.steps_per_launch or STEPS_PER_LAUNCH))

    def _fused_steps(self, X, Y, idx, loss, B, hyper) -> None:
        """ceil(len(idx) / B) SGD steps on rows idx of (X, Y) in one launch of the fused kernel; the per-sample
        costs into ``loss`` (a row of B a step)."""
        eta, lmbda, mu = hyper
        vW, vb = (self.vW, self.vb) if mu else (None, None)
        self.backend.fused_steps(self.cost, X, Y, idx, self.W, self.b, vW, vb, loss, B=B, eta=eta, lmbda=lmbda,
                                 mu=mu)

    def _params(self) -> tuple:
        """The parameter arrays a prepared step is bound to: W, b and the momentum buffers."""
        if self.vW is None:
            return (*self.W, *self.b)
        return (*self.W, *self.b, *self.vW, *self.vb)

    def _fast_batch(self, X, y):
        """The workspace with y's targets in it if (X, y) may skip the full checks, else None."""
        bk, dtype = self.backend, self.dtype
        if type(X) is not bk.xp.ndarray or X.dtype != dtype or X.ndim != 2 or X.shape[1] != self.sizes[0] \
                or not X.flags.c_contiguous or X.shape[0] == 0 or type(y) is not bk.xp.ndarray:
            return None
        B, n_out = X.shape[0], self.sizes[-1]
        if y.shape == (B, n_out) and y.dtype == dtype:          # targets
            if not math.isfinite(bk.total(X) + bk.total(y)) or bk.total(y < 0) or bk.total(y > 1):
                return None
            ws = self._workspace(B)
            ws.y[...] = y
            return ws
        if y.shape == (B,) and y.dtype.kind in "iu" and y.dtype.itemsize == 8 and n_out > 1:   # class labels
            # one reduction checks 0 <= y < n_out: a negative int64 is a huge uint64
            if not math.isfinite(bk.total(X)) or int(y.view(bk.xp.uint64).max()) >= n_out:
                return None
            ws = self._workspace(B)
            ws.y.fill(0)                                        # one-hot into the workspace
            ws.y[ws.rows, y] = 1
            return ws
        return None

    def _loaded(self, X, y):
        """The workspace of len(X) rows with the checked batch copied into it."""
        X, Y = self._to_device(X, y)
        ws = self._workspace(len(X))
        ws.a[0][...] = X
        ws.y[...] = Y
        return ws

    def to_device(self, X, y=None, names=("X", "y")):
        """(X, Y): the inputs and, if ``y`` is given, the targets (labels one-hot encoded,
        B × sizes[-1]), checked once and copied to the model's device in its dtype, for
        :meth:`stepper`.  Y is None without ``y``."""
        if y is None:
            return self.backend.asarray(self._checked_X(X, names[0]), self.dtype), None
        return self._to_device(X, y, names)

    def _to_device(self, X, y, names=("X", "y")):
        """(X, Y) checked and on the device; y is required (None is refused, naming it)."""
        X = self._checked_X(X, names[0])
        Y = check_targets(self.backend.from_dlpack(y, names[1]), len(X), self.sizes[-1], self.dtype, names[1])
        bk = self.backend
        return bk.asarray(X, self.dtype), bk.asarray(Y, self.dtype)

    def _checked_X(self, X, name="X"):
        """X checked (check_X) and ready for ``backend.asarray``: an array of another library through
        DLPack (``backend.from_dlpack``: in place where it lives on the model's device), and an array of the
        backend itself (CuPy on "cupy") kept as it is, not the host copy its checks read, so that one
        already of the model's dtype is used without a copy."""
        X = self.backend.from_dlpack(X, name)
        checked = check_X(X, self.sizes[0], name, dtype=self.dtype)
        return X if type(X) is self.backend.xp.ndarray else checked

    def stepper(self, X, Y, lr, weight_decay=0.0, momentum=0.0, with_loss=True) -> "Stepper":
        """SGD steps on rows of data already on the device: ``step = net.stepper(X, Y, lr=0.5)``,
        then ``step(idx)`` for each batch of row indices (an int64 array on the device).

        X, Y come from :meth:`to_device` (or are the backend's arrays of the model's dtype,
        C-contiguous, X: n × sizes[0], Y: n × sizes[-1] targets in [0, 1]).  X and Y are checked
        here, once (shapes, dtype, NaN/Inf, the targets' range); a step checks its index array in
        O(1) plus one reduction (the range), allocates nothing, and otherwise never waits for the
        device.  ``fit`` runs its epochs on one of these."""
        return Stepper(self, X, Y, *self._hyper(lr, weight_decay, momentum), with_loss=with_loss)

    _last_hyper = (None, None)         # ((lr, weight_decay, momentum), (η, λ, μ)) of the last check

    def _hyper(self, lr, weight_decay, momentum):
        """(η, λ, μ) checked, and the momentum buffers made if μ > 0 (the last values are remembered:
        a loop calling step with the same hyper-parameters does not check them again)."""
        key, checked = self._last_hyper
        if key == (lr, weight_decay, momentum) and type(lr) is float and (not checked[2] or self.vW is not None):
            return checked
        eta = check_positive("lr", lr)
        lmbda = check_positive("weight_decay", weight_decay, allow_zero=True)
        mu = check_positive("momentum", momentum, allow_zero=True)
        if mu >= 1:
            raise InputError(f"momentum must be in [0, 1), got {momentum!r}")
        if mu and self.vW is None:
            self.vW = [None] + [self.backend.zeros(w.shape, self.dtype) for w in self.W[1:]]
            self.vb = [None] + [self.backend.zeros(b.shape, self.dtype) for b in self.b[1:]]
        self._last_hyper = ((lr, weight_decay, momentum), (eta, lmbda, mu))
        return eta, lmbda, mu

    def _train_step(self, ws, eta, lmbda, mu, loss=None):
        """Feedforward, backpropagate (the per-sample costs into ``loss`` when given), and update
        every layer (W_l −= η ∂C/∂W_l …).  Device work only: nothing here waits for the device."""
        self._feedforward(ws)
        self._backpropagate(ws, loss=loss)
        bk = self.backend
        for l in range(1, self.L + 1):
            vW, vb = (self.vW[l], self.vb[l]) if mu else (None, None)
            bk.weight_grad_sgd(ws.a[l - 1], ws.delta[l], self.W[l], self.b[l], vW, vb, scale=1.0 / ws.B,
                               eta=eta, lmbda=lmbda, mu=mu)                        # BP3, BP4, SGD

    def fit(self, X, y, epochs=10, batch_size=10, lr=0.5, weight_decay=0.0, momentum=0.0,
            shuffle=True, test_data=None, progress=None, callback=None, comm=None, allreduce="auto") -> History:
        """Mini-batch SGD for ``epochs`` passes over (X, y), shuffled every epoch.

        test_data   optional (X_test, y_test) evaluated after each epoch
        progress    None (default) or True: progress on stderr, the training loss with it, in the form
                    where it is read (gpubp.progress): a bar and a line per epoch in a terminal,
                    tqdm's notebook bar in Jupyter, a line per epoch and one every few seconds
                    within long epochs when stderr is a file or a pipe; False: nothing
        callback    called as callback(epoch, history) after each epoch; return False to stop
        comm        an mpi4py communicator (MPI.COMM_WORLD) of more than one rank: synchronous
                    data-parallel SGD (gpubp.parallel), every rank running this same call on the same
                    data; batch_size stays the global batch.  Only rank 0 shows progress.
        allreduce   how the ranks' gradients are summed: "auto", "host", "pinned", "nccl",
                    "cuda-aware" (see gpubp.parallel); ``self.parallel_reason`` says which ran
        Raises TrainingDiverged, naming epoch and step, if the loss turns NaN/Inf; warns
        (SaturationWarning) if training ends with nearly every sigmoid saturated.

        With ``comm``, the ranks agree in one collective before the first step on what they run
        (sizes, loss, dtype, backend, the hyper-parameters, the data's length and checksums); a
        rank whose checks fail, or a disagreement, is an error on every rank (RankFailed on the
        others, naming the rank and the values), and so is a failure at an epoch's end (the test
        evaluation, the callback) or a callback that stops some ranks only.  A rank that fails
        inside a step, while the others wait in its all-reduce, aborts the MPI job.
        """
        comm = parallel.communicator(comm)          # None: one process
        plan = error = None
        try:                                        # every check, on every rank, before any collective
            if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
                raise InputError(f"epochs must be a positive integer, got {epochs!r}")
            if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
                raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
            X, Y = self._to_device(X, y)
            test = None
            if test_data is not None:        # checked and uploaded once, evaluated after every epoch
                if isinstance(test_data, (str, bytes, dict)) or not hasattr(test_data, "__len__") \
                        or len(test_data) != 2:
                    raise InputError(f"test_data must be a pair (X_test, y_test), got {type(test_data).__name__}"
                                     + (f" of {len(test_data)}" if hasattr(test_data, "__len__") else ""))
                X_test, y_test = test_data
                Xt, Yt = self._to_device(X_test, y_test, names=("X_test", "y_test"))
                test = (Xt, Yt, self._labels(self.backend.to_numpy(Yt)))
            hyper = self._hyper(lr, weight_decay, momentum)
            if comm is not None:
                parallel.check_allreduce(allreduce)
                plan = {"sizes": self.sizes, "loss": self.cost.name, "dtype": self.dtype.name,
                        "backend": self.backend.name, "epochs": int(epochs), "batch size": int(batch_size),
                        "lr": hyper[0], "weight decay": hyper[1], "momentum": hyper[2], "shuffle": bool(shuffle),
                        "allreduce": allreduce, "samples": len(X), "X checksum": parallel.checksum(X),
                        "y checksum": parallel.checksum(Y), "test samples": 0 if test is None else len(test[0])}
        except Exception as e:
            if comm is None:
                raise
            error = e
        if comm is not None:
            parallel.agree(comm, plan, error)       # raises on every rank if one failed or they disagree
            dp = DataParallel(self, comm, allreduce)
            self.parallel_reason = f"{dp.size} ranks: {dp.reason}"
            step = ParallelStepper(self, X, Y, *hyper, dp=dp)
            dp.broadcast(self.W[1:] + self.b[1:] + (self.vW[1:] + self.vb[1:] if self.vW is not None else []))
            if dp.rank != 0:
                progress = False
        else:
            step = Stepper(self, X, Y, *hyper)
        n = len(X)
        B = min(int(batch_size), n)
        steps = -(-n // B)
        bar = Progress(epochs * steps, enabled=progress)
        hist = History()
        try:
            with np.errstate(over="ignore", invalid="ignore"), self._blas(B):   # a diverging loss: reported below
                self._fit_epochs(step, int(epochs), B, steps, shuffle, test, callback, bar, hist)
        finally:
            self.backend.release_steps()           # captured graphs hold this fit's data arrays
            bar.close()
        self._warn_if_saturated(step.final_ws(), step.eta)
        return hist

    def _fit_epochs(self, step, epochs, B, steps, shuffle, test, callback, bar, hist):
        """The epochs of ``fit``.  Each step's mean cost stays on the device
        (``losses``) and is read back, and checked, only when the progress bar
        redraws, every ``CHECK_EVERY`` seconds and at the end of an epoch: a
        GPU queues steps without waiting for each one to finish.  (Data-parallel
        ranks read every ``step.check_every`` steps instead, alike, so that a
        divergence stops them all at the same step.)"""
        bk, n = self.backend, len(step.X)
        width = step.loss_width(B)
        losses = bk.zeros((steps, width), self.dtype)     # each step's costs (a short last batch leaves zeros)
        last = n - (steps - 1) * B                        # the last batch of an epoch may be short
        every = step.check_every
        K = step.steps_per_launch(B, steps)               # > 1: K steps in one launch of the fused step
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            try:
                order = step.order(self.rng.permutation(n) if shuffle else np.arange(n))   # rank 0's, in parallel
                read, total = 0, 0.0                      # steps whose cost has been read, and their summed cost
                next_check = t0 + self.CHECK_EVERY
                for k0 in range(0, steps, K):
                    k = min(steps, k0 + K)                # steps k0 … k−1, then k steps are done
                    if K == 1:
                        step(order[k0 * B:k * B], loss_row=losses[k0] if k < steps or width == 1 else
                             losses[k0, :last])
                        draw = bar.tick()
                    else:                                 # each step's costs into its row of losses
                        step.many(order[k0 * B:k * B], losses[k0:k])
                        draw = any([bar.tick() for _ in range(k - k0)])
                    if (draw or time.perf_counter() >= next_check) if every is None else k % every == 0:
                        total += self._read_losses(losses, read, k, epoch, steps, step.eta)
                        read, next_check = k, time.perf_counter() + self.CHECK_EVERY
                    if draw and read:
                        bar.draw(f"epoch {epoch}/{epochs} loss {total / min(n, read * B):.4f}")
                total += self._read_losses(losses, read, steps, epoch, steps, step.eta)
            except BaseException as e:
                step.failed(e, f"in epoch {epoch}")       # a data-parallel rank alone: the job is aborted
                raise
            stop, error = False, None
            try:                                          # the epoch's end: each rank's own work
                hist.loss.append(total / n)
                self._check_parameters(epoch, step.eta)   # the last step's update has no loss after it
                if test is not None:
                    ev = self._evaluate_on(*test)
                    hist.test_loss.append(ev["loss"])
                    hist.test_accuracy.append(ev["accuracy"])
                hist.seconds.append(time.perf_counter() - t0)
                bar.epoch_done(epoch, epochs, hist)
                stop = callback is not None and callback(epoch, hist) is False
            except Exception as e:
                error = e
            if step.epoch_end(epoch, stop, error):       # data-parallel: every rank learns of the others
                break

    CHECK_EVERY = 0.1   # seconds between reads of the training loss during an epoch

    def _read_losses(self, losses, lo, hi, epoch, steps, eta):
        """The summed cost of steps lo … hi−1 of the epoch (their rows of ``losses``, read from the
        device, so it waits for them); raises TrainingDiverged naming the first step whose cost is
        NaN or infinite."""
        if hi <= lo:
            return 0.0
        got = self.backend.to_numpy(losses[lo:hi]).astype(np.float64).sum(axis=1)
        bad = np.flatnonzero(~np.isfinite(got))
        if bad.size:
            raise TrainingDiverged(
                f"the training loss became {got[bad[0]]} at epoch {epoch}, step {lo + bad[0] + 1} of {steps}; "
                f"lower the learning rate (lr={eta:g}) or check the data for extreme values")
        return float(got.sum())

    #: the share of σ' = a(1 − a) values below the dtype's epsilon on the last batch beyond which fit warns
    SATURATED = 0.99

    def _warn_if_saturated(self, ws, eta):
        """Warn if nearly every unit of the last batch is saturated (σ'(z) = a(1 − a) below the dtype's
        epsilon, so an error flowing back through it vanishes): the loss then stays flat without diverging,
        typically after a learning rate so large that the weights grew by orders of magnitude.
        The hidden layers count, and the output layer for MSE (cross-entropy's δ_L has no σ')."""
        if ws is None:
            return
        xp, last = self.backend.xp, self.L + (1 if self.cost.name == "mse" else 0)
        layers = [ws.a[l] for l in range(1, last)]
        if not layers:
            return
        eps = float(np.finfo(self.dtype).eps)       # σ' below it: an error through the unit is lost in rounding
        flat = sum(int(xp.count_nonzero(a * (1 - a) < eps)) for a in layers)
        units = sum(int(a.size) for a in layers)
        if flat >= self.SATURATED * units:
            largest = max(float(xp.abs(w).max()) for w in self.W[1:])
            warnings.warn(f"training ended with {flat / units:.1%} of the sigmoids of the last batch saturated "
                          f"(σ'(z) < {eps:.2g}, so no gradient flows through them) and weights up to |W| = "
                          f"{largest:.3g}: the loss cannot improve; lower the learning rate (lr={eta:g}) and "
                          f"retrain, or standardise the inputs", SaturationWarning, stacklevel=3)

    def _check_parameters(self, epoch, eta):
        """Raise TrainingDiverged if a weight or bias is NaN or infinite (one reduction per array)."""
        xp = self.backend.xp
        for kind, params in (("W", self.W), ("b", self.b)):
            for l in range(1, self.L + 1):
                if not bool(xp.isfinite(params[l]).all()):
                    raise TrainingDiverged(
                        f"{kind}{l} became NaN or infinite in epoch {epoch} while its step losses stayed finite "
                        f"(a last update, or saturated units that hide it); lower the learning rate (lr={eta:g}) "
                        f"or check the data for extreme values")

    def _chunks(self, X, Y=None, chunk=1024):
        """(start, stop, workspace) for each chunk of rows, the rows of X (and Y) loaded into it
        (X, Y: checked arrays, on the host or the device)."""
        for start in range(0, len(X), chunk):
            stop = min(len(X), start + chunk)
            ws = self._workspace(stop - start)
            ws.a[0][...] = self.backend.asarray(X[start:stop], self.dtype)
            if Y is not None:
                ws.y[...] = self.backend.asarray(Y[start:stop], self.dtype)
            yield start, stop, ws

    @staticmethod
    def _labels(a) -> np.ndarray:
        """Class labels of outputs or targets: argmax, or > ½ for a single unit."""
        return (a[:, 0] > 0.5).astype(np.int64) if a.shape[1] == 1 else a.argmax(axis=1)

    def predict(self, X) -> np.ndarray:
        """Class labels: argmax of a_L, or a_L > ½ for a 1-unit output (NumPy int array)."""
        return self._labels(self.backend.to_numpy(self.forward(X)))

    def evaluate(self, X, y) -> dict:
        """{"loss": mean per-sample cost, "accuracy": fraction of correct labels, "n": samples}."""
        X = self._checked_X(X)
        Y = check_targets(self.backend.from_dlpack(y, "y"), len(X), self.sizes[-1], self.dtype)
        return self._evaluate_on(X, Y, self._labels(Y))

    def _evaluate_on(self, X, Y, labels) -> dict:
        """``evaluate`` on checked X, Y (host or device arrays) and the true labels (NumPy)."""
        total, correct = 0.0, 0
        with self._blas(min(len(X), 1024)):
            for start, stop, ws in self._chunks(X, Y):
                aL = self._feedforward(ws)
                self.backend.loss(self.cost, aL, ws.y, ws.loss)
                total += float(self.backend.to_numpy(ws.loss).astype(np.float64).sum())
                correct += int((self._labels(self.backend.to_numpy(aL)) == labels[start:stop]).sum())
        return {"loss": total / len(X), "accuracy": correct / len(X), "n": len(X)}

    # -- persistence (the file format: gpubp.persistence) ---------------------
    def save(self, path):
        """Write the model to ``path`` (.npz) atomically: a temp file in the same
        folder, fsync'd, then renamed over ``path``, so a crash never leaves a
        half-written model."""
        persistence.save(self, path)

    @classmethod
    def load(cls, path, backend="auto", backend_options=None) -> "MLP":
        """Read a model written by ``save``; checks the format and every shape."""
        saved = persistence.read(path)
        model = cls(saved.sizes, loss=saved.loss, backend=backend, dtype=saved.dtype, init=saved.init,
                    backend_options=backend_options)
        put = model.backend.asarray
        model.W = [None] + [put(w, model.dtype) for w in saved.W[1:]]
        model.b = [None] + [put(b, model.dtype) for b in saved.b[1:]]
        if saved.vW is not None:
            model.vW = [None] + [put(v, model.dtype) for v in saved.vW[1:]]
            model.vb = [None] + [put(v, model.dtype) for v in saved.vb[1:]]
        return model


class Stepper:
    """SGD steps of one model on rows of data already on its device (see ``MLP.stepper``).

    ``step(idx, loss_out=None)`` gathers the rows ``idx`` into the model's
    workspace (``take(out=)``: nothing is allocated) and runs one training
    step; the backend runs it directly or replays it as a CUDA graph.  The
    per-sample costs are left in the workspace; ``loss_out`` (a 1-element
    device array of the model's dtype) receives their mean, on the device:
    nothing waits for it.

    ``idx`` is checked on every call: a 1-D int64 array of the backend, not
    empty (O(1)), every index in [0, len(X)) (one reduction, which on a GPU
    waits for it).  Slices of the epoch order that ``fit`` checked once
    (:meth:`order`) skip the reduction.
    """

    ws = None              # the workspace of the last step (fit reads its activations at the end)
    check_every = None     # fit reads the losses on its own clock (a ParallelStepper: every k steps)

    @staticmethod
    def loss_width(B: int) -> int:
        """How many costs a step of B rows writes into fit's loss row: one per sample."""
        return B

    def __init__(self, model, X, Y, eta, lmbda, mu, with_loss=True):
        self._last = None               # (rows, fused?) of the last step: final_ws replays its batch's forward pass
        n_in, n_out, dtype, xp = model.sizes[0], model.sizes[-1], model.dtype, model.backend.xp
        for name, arr, width in (("X", X, n_in), ("Y", Y, n_out)):
            if not isinstance(arr, xp.ndarray) or arr.dtype != dtype or arr.ndim != 2 or arr.shape[1] != width \
                    or not arr.flags.c_contiguous:
                raise InputError(f"stepper: {name} must be a C-contiguous {xp.__name__} array of {dtype} with "
                                 f"{width} columns (got {type(arr).__name__} "
                                 f"{getattr(arr, 'dtype', '')} {getattr(arr, 'shape', '')}); "
                                 f"pass the arrays net.to_device(X, y) returns")
        if len(X) != len(Y):
            raise InputError(f"stepper: X has {len(X)} rows but Y has {len(Y)}; pass one target row per sample")
        if len(X) == 0:
            raise InputError("stepper: X has no rows; pass at least one sample")
        for name, arr in (("X", X), ("Y", Y)):        # what step() checks, once here
            bad = ~xp.isfinite(arr)
            if bool(bad.any()):
                r, c = (int(i) for i in xp.argwhere(bad)[0])
                raise InputError(f"stepper: {name} contains {int(bad.sum())} NaN/Inf value(s), the first at row "
                                 f"{r}, column {c}; remove or impute them (net.to_device(X, y) names them too)")
        if bool((Y < 0).any()) or bool((Y > 1).any()):
            raise InputError("stepper: Y holds targets outside [0, 1] (the output layer is a sigmoid); pass the "
                             "targets net.to_device(X, y) makes from labels, or scale them into [0, 1]")
        self.model, self.X, self.Y = model, X, Y
        self.eta, self.lmbda, self.mu, self.with_loss = eta, lmbda, mu, with_loss
        self._ndarray, self._order = xp.ndarray, None
        self._per_B = {}                # B -> the step of batches of B rows (see _make_step)
        self._host_blas = model._host_blas
        self._plans = {}                # (B, cost row given?) -> its PreparedStep, on a backend that prepares

    def order(self, order):
        """The rows' order for an epoch as a device array (a ParallelStepper makes it rank 0's), checked
        once: steps on its slices skip the range check."""
        order = self.model.backend.asarray(order, np.int64)
        if order.base is not None:                      # its slices must have it as their base
            order = order.copy()
        self._check_rows(order)
        self._order = order
        return order

    def _check_rows(self, idx):
        """Every index in [0, len(X)) (one reduction: a negative int64 is a huge uint64)."""
        n = len(self.X)
        if int(idx.view(np.uint64).max()) >= n:
            lo, hi = int(idx.min()), int(idx.max())
            raise InputError(f"stepper: row index {lo if lo < 0 else hi} is out of range for X's {n} rows; every "
                             f"index must be in [0, {n})")

    def _checked(self, idx, loss_out):
        """The O(1) checks of a step's arguments, and the range of idx unless it slices the checked order."""
        if type(idx) is not self._ndarray or idx.dtype != np.int64 or idx.ndim != 1 or idx.shape[0] == 0:
            xp = self.model.backend.xp
            raise InputError(
                f"stepper: idx must be a non-empty 1-D int64 {xp.__name__} array of row indices, got "
                f"{type(idx).__name__} {getattr(idx, 'dtype', '')} {getattr(idx, 'shape', '')}; e.g. "
                f"{xp.__name__}.asarray(rows, dtype={xp.__name__}.int64)")
        if idx.base is None or idx.base is not self._order:
            self._check_rows(idx)
        if loss_out is not None and (type(loss_out) is not self._ndarray or loss_out.shape != (1,)
                                     or loss_out.dtype != self.model.dtype):
            raise InputError(f"stepper: loss_out must be a 1-element {self.model.dtype} array on the model's device "
                             f"(e.g. a slice losses[k:k+1]), got {type(loss_out).__name__} "
                             f"{getattr(loss_out, 'dtype', '')} {getattr(loss_out, 'shape', '')}")

    def __call__(self, idx, loss_out=None, loss_row=None) -> None:
        """One step on rows ``idx``; returns None (nothing waits for the device): ``loss_out`` (1 element)
        receives the batch's mean cost before the update; ``loss_row`` (B elements, what fit passes)
        receives the per-sample costs themselves, written by the output kernel with no reduction of its
        own.  (``net.step(X, y, lr)`` is the one that returns the mean cost, as a float.)"""
        self._checked(idx, loss_out)
        if loss_row is not None and (type(loss_row) is not self._ndarray or loss_row.shape != idx.shape
                                     or loss_row.dtype != self.model.dtype or not loss_row.flags.c_contiguous):
            raise InputError(f"stepper: loss_row must be a C-contiguous {self.model.dtype} array of one cost per "
                             f"row of idx ({idx.shape[0]}), got {type(loss_row).__name__} "
                             f"{getattr(loss_row, 'dtype', '')} {getattr(loss_row, 'shape', '')}")
        B = idx.shape[0]
        per_B = self._per_B.get(B)
        if per_B is None:
            per_B = self._per_B[B] = self._make_step(B)
        if not self._host_blas:
            return per_B(idx, loss_out, loss_row)
        with self.model._blas(B):            # inside fit, whose limit is the same: a microsecond
            per_B(idx, loss_out, loss_row)

    @property
    def prepared(self) -> list:
        """The prepared steps recorded so far (``gpubp.cuda.prepared.PreparedStep``; none on numpy)."""
        return list(self._plans.values())

    def _make_step(self, B):
        """The step of batches of B rows: on a backend that prepares steps, the first call records the
        gather and the training step (the row indices and the per-sample cost row are its slots), later
        calls replay it; the backend may capture it as a CUDA graph (the cost row is then copied out)."""
        model, X, Y = self.model, self.X, self.Y
        bk, with_loss = model.backend, self.with_loss
        ws = self.ws = model._workspace(B)
        hyper = (self.eta, self.lmbda, self.mu)
        graph = getattr(bk, "cuda_graph", False)       # a captured graph bakes in its arrays: no cost-row slot
        plans = self._plans

        fused = model._fused(B, self.mu)

        def gather_and_step(idx, loss):
            if fused:                                                 # the whole step in one kernel
                return model._fused_steps(X, Y, idx, loss, B, hyper)
            bk.gather_rows(X, Y, idx, ws.a[0], ws.y)                  # x = X[idx], y = Y[idx]
            model._train_step(ws, *hyper, loss)

        kinds = {False: (B, False), True: (B, True)}     # the plans' keys: (B, cost row given?)

        def device_step(idx, row):
            """The step's device work: recorded once per kind of cost output, replayed after."""
            loss = row if row is not None else (ws.loss if with_loss else None)
            if not bk.prepares:
                return gather_and_step(idx, loss)
            bk.replay(plans, kinds[row is not None], model._params(), lambda: gather_and_step(idx, loss),
                      {"idx": idx, "loss": row})

        mean = bk.mean
        if not graph:
            prepares = bk.prepares

            def step(idx, loss_out, loss_row):
                self.ws, self._last = ws, (idx, fused)
                plan = plans.get(kinds[loss_row is not None]) if prepares else None
                if plan is not None and plan.bound_to(model._params()):    # the replay: what most steps are
                    plan({"idx": idx, "loss": loss_row})
                else:
                    device_step(idx, loss_row)
                if loss_out is not None and (with_loss or loss_row is not None):
                    mean(loss_row if loss_row is not None else ws.loss, out=loss_out)
            return step

        # the key names everything a captured graph bakes in: arrays (kept alive by the backend) and scalars
        key, keep, run_step = (id(X), id(Y), id(ws), *hyper, with_loss), (X, Y, ws), bk.run_step

        def graph_step(idx, loss_out, loss_row):
            self.ws = ws
            run_step(lambda i: device_step(i, None), idx, key=key, keep=keep)
            if loss_row is not None:                     # the graph writes ws.loss; the row is copied from it
                bk.copy(ws.loss, out=loss_row)
            if loss_out is not None and (with_loss or loss_row is not None):
                mean(loss_row if loss_row is not None else ws.loss, out=loss_out)
        return graph_step

    # -- K steps in one launch (the fused step) -----------------------------------------------------------
    def steps_per_launch(self, B: int, steps: int) -> int:
        """How many steps of B rows fit runs in one launch (MLP._steps_per_launch)."""
        return self.model._steps_per_launch(B, self.mu, steps)

    def many(self, idx, loss_rows) -> None:
        """ceil(len(idx) / B) steps in one launch of the fused step, the k-th on rows idx[k·B : (k+1)·B] (the
        last may be short); ``loss_rows`` (K × B, C-contiguous: fit's rows of its loss buffer) receives each
        step's per-sample costs.  Checked as a step's idx is; recorded once per (B, len(idx)) and replayed."""
        self._checked(idx, None)
        if type(loss_rows) is not self._ndarray or loss_rows.ndim != 2 or loss_rows.dtype != self.model.dtype \
                or not loss_rows.flags.c_contiguous or loss_rows.shape[0] != -(-idx.shape[0] // loss_rows.shape[1]):
            raise InputError(f"stepper.many: loss_rows must be a C-contiguous {self.model.dtype} array of one row "
                             f"of B costs per step (ceil(len(idx) / B) rows), got {type(loss_rows).__name__} "
                             f"{getattr(loss_rows, 'dtype', '')} {getattr(loss_rows, 'shape', '')}")
        model, B = self.model, loss_rows.shape[1]
        if not model._fused(B, self.mu):
            raise InputError(f"stepper.many: batches of {B} do not run as the fused step here "
                             f"({model.backend_reason}); call the stepper once a step")
        hyper, bk = (self.eta, self.lmbda, self.mu), model.backend
        self._last = (idx[(loss_rows.shape[0] - 1) * B:], True)           # the launch's last batch
        run = (lambda: model._fused_steps(self.X, self.Y, idx, loss_rows, B, hyper))
        if not bk.prepares:
            return run()
        bk.replay(self._plans, ("many", B, idx.shape[0]), model._params(), run, {"idx": idx, "loss": loss_rows})

    def final_ws(self):
        """The workspace of the last step with its activations (what fit's saturation check reads): as the
        last step left it, or, after a fused step (which keeps them in shared memory), its batch's forward
        pass now."""
        last = getattr(self, "_last", None)
        if last is None or not last[1]:
            return self.ws
        rows, model = last[0], self.model
        ws = self.ws = model._workspace(rows.shape[0])
        model.backend.gather_rows(self.X, self.Y, rows, ws.a[0], ws.y)
        model._feedforward(ws)
        return ws

    # -- what fit asks of a stepper around its steps (a ParallelStepper involves the other ranks) --------
    def failed(self, error, where) -> None:
        """A step (or the loss read between steps) raised ``error``: fit lets it propagate."""

    def epoch_end(self, epoch, stop, error) -> bool:
        """The end of an epoch: raise ``error`` if the epoch's end failed, else True to stop training."""
        if error is not None:
            raise error
        return stop


class ParallelStepper(Stepper):
    """One synchronous data-parallel SGD step of the global batch ``idx`` (see gpubp.parallel): this
    rank's share of the rows, their gradient sums into the flat buffer, one all-reduce, the mean, and
    the identical update on every rank.  ``loss_out`` receives the global mean cost.

    The ranks read the step losses alike, every ``check_every`` steps (every step when the summed
    buffer is on the host anyway), so a divergence stops them at the same step; an epoch ends with
    one collective (:func:`gpubp.parallel.epoch_end`); a rank that fails inside a step, where the
    others wait in the all-reduce for it, aborts the job."""

    def __init__(self, model, X, Y, eta, lmbda, mu, dp):
        super().__init__(model, X, Y, eta, lmbda, mu, with_loss=True)
        self.dp = dp
        self.check_every = 1 if dp.path in ("host", "pinned") else 32

    def order(self, order):
        return super().order(self.dp.bcast_order(order))

    @staticmethod
    def loss_width(B: int) -> int:
        """One cost a step: the global batch's summed cost, from the all-reduce."""
        return 1

    def steps_per_launch(self, B: int, steps: int) -> int:
        """One step a launch: every step ends in the ranks' all-reduce."""
        return 1

    def final_ws(self):
        return self.ws

    def __call__(self, idx, loss_out=None, loss_row=None) -> None:
        self._checked(idx, loss_out)
        model, bk, dp = self.model, self.model.backend, self.dp
        lo, hi = share(0, len(idx), dp.rank, dp.size)
        mine = idx[lo:hi]
        ws = self.ws = model._workspace(len(mine))
        bk.take_rows(self.X, mine, out=ws.a[0])
        bk.take_rows(self.Y, mine, out=ws.y)
        model._feedforward(ws)
        model._backpropagate(ws, loss=ws.loss)
        for l in range(1, model.L + 1):                      # sums over this rank's rows (BP3, BP4 without 1/B)
            dW, db = dp.grads(l)
            bk.weight_grad(ws.a[l - 1], ws.delta[l], dW, db, scale=1.0)
        bk.xp.sum(ws.loss, keepdims=True, out=dp.loss_sum)
        dp.allreduce()                                       # one call: every layer and the cost
        dp.buf *= 1.0 / len(idx)                             # the global batch's mean
        for l in range(1, model.L + 1):
            dW, db = dp.grads(l)
            vW, vb = (model.vW[l], model.vb[l]) if self.mu else (None, None)
            bk.sgd_update(model.W[l], model.b[l], dW, db, vW, vb, eta=self.eta, lmbda=self.lmbda, mu=self.mu)
        if loss_row is not None:                             # the global batch's summed cost (buf holds the mean)
            bk.xp.multiply(dp.loss_sum, len(idx), out=loss_row)
        if loss_out is not None:
            loss_out[...] = dp.loss_sum                      # the global batch's mean cost

    def failed(self, error, where) -> None:
        if isinstance(error, TrainingDiverged):             # every rank read the same losses at the same step
            parallel.mark_collective(error, 0)
        elif parallel.reporter_of(error) is None:
            parallel.abort(self.dp.comm, error, where)

    def epoch_end(self, epoch, stop, error) -> bool:
        return parallel.epoch_end(self.dp.comm, epoch, stop, error)
