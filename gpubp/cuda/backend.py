"""The kernel backends: every part of a step through the hand-written kernels of
``kernels/*.cu``, launched by ``gpubp.cuda.launchers``; the forward and BP2
GEMMs either on ``xp.matmul`` (cuBLAS on a GPU, BLAS under the emulator) with
the epilogue as its own kernel, or on gpubp's own GEMM kernels with the
epilogue fused (``gemm="own"``).

    emulated   NumPy arrays; the kernels run on the emulated CUDA device (the
               exact .cu source compiled for the CPU, every CUDA thread a fiber:
               for stepping through and editing kernels, not for speed)
    cupy       CuPy arrays; the kernels compiled by cupy.RawModule (NVRTC)

Options:
    fused_update=True     weight gradient, bias gradient and SGD update in one
                          kernel (dW never reaches memory); False: gradient
                          kernel, then the update as array expressions
    cublas_weight_grad=False  dW = a_prevᵀ δ by cuBLAS (xp.matmul) and db by a
                          reduction instead of our kernel, for comparison
    naive=False           the plain version of every kernel
    gemm="cublas"         the forward GEMM z = a_prev W and BP2's δ_{l+1} W_{l+1}ᵀ by
                          xp.matmul, each followed by its epilogue kernel; "own":
                          forward_gemm.cu and backward_gemm.cu, the epilogue fused
                          (no cuBLAS call in a step: it can be a CUDA graph)
    cuda_graph=False      capture a whole training step as a CUDA graph on first
                          use and replay it (cupy): one launch per step instead of
                          ~10 per layer, for small nets where launch overhead
                          dominates.  Needs gemm="own" (implied when gemm is not
                          given).  On the emulated device it runs the step once
                          while recording what reaches the array module, and
                          refuses a step a capture could not hold (cuBLAS, sync)
    defines=None          tunables injected as -D (e.g. {"TILE": 32})
    tune=False            "lazy" (cupy): a GEMM shape that gpubp tune has not measured on this
                          device is timed on its first launch (gpubp.cuda.tuner.LazyTuner) and the
                          winner kept in the device's table; refused on the emulated device
"""
from __future__ import annotations

import numpy as np

from ..numpy_backend import ArrayBackend
from ..validation import InputError
from . import launchers, nvrtc, sources, tuner, tuning
from .prepared import Call, OpCall, PreparedStep


#: CuPy (through 14.2, the newest release) refuses every cuBLAS call made while a stream is capturing:
#: cupy_backends/cuda/libs/cublas.pyx raises NotImplementedError('calling cuBLAS API during stream
#: capture is currently unsupported'), tracked as cupy/cupy#6290.  A training step's GEMMs are cuBLAS
#: calls (xp.matmul), so a step cannot be captured until it runs on GEMM kernels of gpubp's own.
CUBLAS_CAPTURE_LIMIT = ("CuPy refuses cuBLAS calls during CUDA stream capture (NotImplementedError 'calling cuBLAS "
                        "API during stream capture is currently unsupported', cupy/cupy#6290) and this step's "
                        "GEMMs are cuBLAS (xp.matmul)")

#: the options of the kernel backends, with their defaults (gemm=None: "own" with cuda_graph, else "cublas")
OPTIONS = {"fused_update": True, "cublas_weight_grad": False, "naive": False, "cuda_graph": False, "gemm": None,
           "defines": None, "fused_step": "auto", "steps_per_launch": None, "tune": False}
#: the options that ask for the per-kernel step (fused_step="auto" then leaves it to them)
PER_KERNEL_OPTIONS = ("fused_update", "cublas_weight_grad", "naive", "cuda_graph", "gemm")
#: fused_step="auto" takes the fused step for a step of at most this many FLOPs: one block holds one SM,
#: about 0.5 TFLOP/s fp32 on an H100 (67 TFLOP/s over 132 SMs); at a quarter of that, 2 MFLOP take 16 µs,
#: what the per-kernel step's 7-16 launches cost in latency alone (1.3-2.5 µs each).  Modeled, not measured:
#: a GPU will move this line (gpubp plan shows both sides).
FUSED_AUTO_MAX_FLOPS = 2.0e6
#: steps fit runs in one launch of the fused step (fewer at an epoch's end): the loss of every step still comes
#: back (a row each), and the weights stay in shared memory across them where they fit
STEPS_PER_LAUNCH = 32
GEMMS = ("cublas", "own", "auto")

#: array-module calls a CUDA graph cannot capture: cuBLAS behind them (cupy/cupy#6290), or a
#: host round trip (a capture cannot wait for the device or copy to and from the host)
NOT_CAPTURABLE = frozenset({"matmul", "dot", "vdot", "inner", "outer", "tensordot", "einsum", "linalg", "kron",
                            "asnumpy", "synchronize", "cuda"})


def check_option_names(options) -> None:
    """Refuse option names no kernel backend has (also under backend='auto', which may pick numpy)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"unknown backend option(s) {', '.join(map(repr, unknown))}; the options (of the "
                         f"kernel backends) are {', '.join(sorted(OPTIONS))}")


def check_options(options: dict) -> None:
    """Refuse what a kernel backend cannot do, before any device is touched: unknown option names,
    non-bool switches, and cuda_graph where the step cannot be captured."""
    check_option_names(options)
    for key, value in options.items():
        if key not in ("defines", "gemm", "fused_step", "steps_per_launch", "tune") and not isinstance(value, (bool, np.bool_)):
            raise InputError(f"backend option {key} must be True or False, got {value!r}")
    tune = options.get("tune", False)
    if not (tune is False or tune == "lazy"):
        raise InputError(f"backend option tune must be 'lazy' (time a GEMM shape on its first launch) or False, "
                         f"got {tune!r}")
    if tune == "lazy" and options.get("defines"):
        raise InputError("tune='lazy' picks the tiles per shape; defines fixes them: choose one")
    fused = options.get("fused_step", "auto")
    if not (fused == "auto" or isinstance(fused, (bool, np.bool_))):
        raise InputError(f"backend option fused_step must be 'auto', True or False, got {fused!r}")
    k = options.get("steps_per_launch")
    if k is not None and (isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1):
        raise InputError(f"backend option steps_per_launch must be a positive int (steps of fit in one launch of "
                         f"the fused step), got {k!r}")
    if fused is True:
        asked = [key for key in PER_KERNEL_OPTIONS if key in options and options[key] != OPTIONS[key]]
        if asked:
            raise InputError(f"fused_step=True runs each step as one kernel; {', '.join(asked)} ask(s) for the "
                             f"per-kernel step: choose one")
    gemm = options.get("gemm")
    if gemm is not None and gemm not in GEMMS:
        raise InputError(f"backend option gemm must be 'cublas', 'own' or 'auto', got {gemm!r}")
    if gemm == "auto" and options.get("cuda_graph"):
        raise InputError("gemm='auto' may pick cuBLAS, which a CUDA graph cannot capture: use gemm='own' with "
                         "cuda_graph=True")
    if gemm == "own" and options.get("cublas_weight_grad"):
        raise InputError("gemm='own' runs every product on gpubp's kernels; cublas_weight_grad=True asks for "
                         "cuBLAS: choose one")
    defines = options.get("defines")
    if defines:
        try:
            sources.normalize_defines(defines)
        except ValueError as e:
            raise InputError(str(e)) from None
        problems = nvrtc.tunable_problems(defines)      # None: NVRTC is not installed; the compile decides
        if problems:
            raise InputError(f"kernel tunables {dict(defines)} are refused on every device: {'; '.join(problems)}; "
                             f"pick smaller tiles (the defaults are {_default_tunables()})")
    if options.get("cuda_graph") and (gemm == "cublas" or options.get("cublas_weight_grad")):
        raise ValueError(f"cuda_graph=True cannot capture a step whose GEMMs are cuBLAS: {CUBLAS_CAPTURE_LIMIT}; "
                         f"use gemm='own' (the default with cuda_graph), or leave cuda_graph off")


def _default_tunables() -> dict:
    return {k: v for family in sources.families() for k, v in sources.defaults(family).items()}


class KernelBackend(ArrayBackend):
    def __init__(self, name, xp, kernels, *, fused_update=True, cublas_weight_grad=False, naive=False,
                 cuda_graph=False, gemm=None, fused_step="auto", steps_per_launch=None, tune=False):
        super().__init__(xp)
        self.tune = tune
        self.fused_step = fused_step
        self.steps_per_launch = steps_per_launch
        # what asks for the per-kernel step (fused_step="auto" leaves the step to it)
        self._per_kernel = [k for k, v in (("fused_update", not fused_update), ("cublas_weight_grad", cublas_weight_grad),
                                           ("naive", naive), ("cuda_graph", cuda_graph), ("gemm", gemm)) if v]
        self.cuda_graph = bool(cuda_graph)
        self.gemm = gemm or ("own" if cuda_graph else "cublas")
        self.name = name
        self.ks = kernels
        self.fused_update = bool(fused_update)
        self.cublas_weight_grad = bool(cublas_weight_grad)
        self.naive = bool(naive)
        self.capture_calls = {}          # key -> the array-module calls a checked step made (emulated cuda_graph)
        self._eager_once = set()
        self._recording = None           # the ops of the step being recorded (see record), else None
        self._counters = {}              # tiles -> the split-K counters (int32 zeros) of launches with that many
        self.tuned = None                # gpubp.cuda.tuning.Table measured on this device, if any
        self.tuner = None                # tune="lazy": times a shape the table lacks (gpubp.cuda.tuner.LazyTuner)

    #: steps on this backend are recorded once and replayed (gpubp.cuda.prepared)
    prepares = True

    # -- prepared steps ------------------------------------------------------
    def _submit(self, op) -> None:
        """Run one op's device work (a validated Launch, an array-module Call, an OpCall), and keep it
        if a step is being recorded.  Every op of a step on this backend comes through here."""
        if op is None:                   # nothing to launch (an empty array)
            return
        recording = self._recording
        if recording is None:
            return op()
        recording.append(op)
        if isinstance(op, OpCall):       # what it calls inside is its own business: not recorded twice
            self._recording = None
            try:
                op()
            finally:
                self._recording = recording
        else:
            op()

    def record(self, run, slots: dict, bound: tuple = ()) -> PreparedStep:
        """Run ``run()`` (one step's device work, for real) and return its ops as a PreparedStep whose
        slots are the arrays in ``slots`` (by identity).  ``bound``: the model's parameter arrays."""
        if self._recording is not None:
            raise RuntimeError("a step is already being recorded on this backend")
        self._recording = ops = []
        try:
            run()
        finally:
            self._recording = None
        return PreparedStep(ops, slots, bound)

    def replay(self, plans: dict, key, params: tuple, run, slots: dict, limit: int | None = None) -> None:
        """The prepared step ``plans[key]`` replayed with ``slots`` if it is bound to the model's ``params``;
        else ``run`` recorded (run for real) as ``plans[key]`` (the plans cleared first if ``limit`` of them are
        kept already: a learning-rate schedule makes a key per value)."""
        plan = plans.get(key)
        if plan is not None and plan.bound_to(params):
            return plan(slots)
        if limit is not None and len(plans) >= limit:
            plans.clear()
        plans[key] = self.record(run, slots, params)

    # -- the array-module ops of a step, through _submit ---------------------------
    def matmul(self, a, b, out):
        self._submit(Call(self, "matmul", (a, b), {"out": out}))

    def take_rows(self, X, idx, out):
        self._submit(Call(self, "take", (X, idx), {"axis": 0, "out": out}))

    def mean(self, x, out):
        self._submit(Call(self, "mean", (x,), {"keepdims": True, "out": out}))

    def copy(self, x, out):
        self._submit(Call(self, "copyto", (out, x), {}))

    def sgd_update(self, W, b, dW, db, vW=None, vb=None, *, eta, lmbda=0.0, mu=0.0):
        self._submit(OpCall(super().sgd_update, (W, b, dW, db, vW, vb), {"eta": eta, "lmbda": lmbda, "mu": mu}))

    def __repr__(self):
        opts = [k for k in ("fused_update", "cublas_weight_grad", "naive", "cuda_graph") if getattr(self, k)]
        return f"<gpubp backend {self.name!r} gemm={self.gemm} {' '.join(opts)}>"

    def run_step(self, step, idx, key=None, keep=()):
        """With ``cuda_graph`` on the emulated device: the step runs as the cupy backend's would, the
        first call for a key eagerly (scratch arrays and constants are made then), the second as the
        run a capture would hold: with the array module replaced by a recorder, refusing a step that
        calls what a CUDA graph cannot capture (NOT_CAPTURABLE).  Every call is one real step."""
        if not self.cuda_graph or key is None or key in self.capture_calls:
            return step(idx)
        if key not in self._eager_once:
            self._eager_once.add(key)
            return step(idx)
        recorder = _Recorder(self.xp)
        self.xp = recorder
        try:
            step(idx)
        finally:
            self.xp = recorder.module
        bad = sorted(set(recorder.calls) & NOT_CAPTURABLE)
        if bad:
            raise RuntimeError(f"this training step calls xp.{', xp.'.join(bad)}, which a CUDA graph cannot capture "
                               f"({CUBLAS_CAPTURE_LIMIT}, and a capture cannot wait for the device)")
        self.capture_calls[key] = tuple(recorder.calls)
        return None

    def release_steps(self):
        self.capture_calls.clear()
        self._eager_once.clear()

    @classmethod
    def create(cls, name, *, defines=None, **options):
        check_options(dict(options, defines=defines))
        if name == "emulated":
            if options.get("tune"):
                raise InputError(f"tune='lazy' is refused on the emulated device: {tuner.EMULATED_TIMES}; use it "
                                 f"with backend='cupy'")
            return cls("emulated", np, sources.emulated_kernels(defines), **options)
        if name == "cupy":
            ks = sources.cupy_kernels(defines)   # raises DeviceUnavailable with the reason and the fix
            import cupy
            bk = CupyBackend("cupy", cupy, ks, **options)
            if not defines:                      # tiles a user chose win over the tuner's
                device, cuda = tuner.current_device()
                bk.tuned = tuning.for_device(device, cuda)
                if bk.tune == "lazy":
                    bk.tuned = bk.tuned or tuning.Table(device, cuda)
                    bk.tuner = tuner.LazyTuner(bk.tuned, tuner.cuda_event_timer(),
                                               capturing=lambda: cupy.cuda.get_current_stream().is_capturing())
            return bk
        raise ValueError(f"no kernel backend {name!r}; use 'emulated' or 'cupy'")

    # -- the fused step (kernels/fused_step.cu) ----------------------------------------
    def fused_choice(self, sizes, B, dtype, momentum) -> tuple[bool, str]:
        """(whether a step of B rows of ``sizes`` runs as the fused kernel, why) under the fused_step option:
        "auto" takes it where it applies and the step is small (FUSED_AUTO_MAX_FLOPS); True insists
        (InputError naming why it cannot); False never."""
        if self.fused_step is False:
            return False, "the per-kernel step (fused_step=False)"
        itemsize = np.dtype(dtype).itemsize
        limit = self.ks.smem_per_block_optin - launchers.FUSED_STATIC_SMEM
        need = launchers.fused_step_smem(sizes, B, itemsize)
        L = len(sizes) - 1
        why = None
        if L > launchers.FUSED_MAX_LAYERS:
            why = f"{L} layers, more than the {launchers.FUSED_MAX_LAYERS} the fused step takes"
        elif need > limit:
            why = (f"a batch of {B} needs {need:,} B of shared memory for its activations and deltas, more than "
                   f"the {limit:,} B a block has ({self.ks.arch})")
        flops = launchers.fused_step_napkin((B, B, *sizes), itemsize)[2]
        if why is None and self.fused_step == "auto":
            if self._per_kernel:
                why = f"{', '.join(self._per_kernel)} ask(s) for the per-kernel step"
            elif flops > FUSED_AUTO_MAX_FLOPS:
                why = (f"a step is {flops / 1e6:.1f} MFLOP, above the {FUSED_AUTO_MAX_FLOPS / 1e6:g} MFLOP one block "
                       f"does faster than the per-kernel step's launches (modeled)")
        if why is not None:
            if self.fused_step is True:
                raise InputError(f"fused_step=True: the fused step cannot run {list(sizes)} with batches of {B}: "
                                 f"{why}; use fused_step='auto' (the per-kernel step where it does not apply)")
            return False, f"the per-kernel step (the fused step does not apply: {why})"
        weights = launchers.fused_step_smem(sizes, B, itemsize, keep_weights=True, momentum=momentum) <= limit
        return True, (f"the fused step: one kernel a step ({flops / 1e6:.2f} MFLOP), weights "
                      f"{'in shared memory across the steps of a launch' if weights else 'read from global memory'}")

    def fused_steps(self, cost, X, Y, idx, W, b, vW, vb, loss, *, B, eta, lmbda=0.0, mu=0.0) -> None:
        """ceil(len(idx) / B) SGD steps of the model (W, b, vW, vb: lists by layer) on rows idx of (X, Y) in one
        launch of fused_step.cu; the per-sample costs into ``loss`` (one row of B a step) if given."""
        kernel = cost.kernel.replace("output_delta", "fused_step")
        self._submit(launchers.prepare_fused_step(self.ks, kernel, X, Y, idx, W, b, vW, vb, loss, B=B, eta=eta,
                                                  lmbda=lmbda, mu=mu))

    # -- the batch ----------------------------------------------------------------
    def gather_rows(self, X, Y, idx, x, y):
        """x = X[idx], y = Y[idx] in one launch (gather.cu)."""
        self._submit(launchers.prepare_gather_rows(self.ks, X, Y, idx, x, y, naive=self.naive))

    # -- split-K workspace for the fast GEMMs ----------------------------------------
    def _gemm(self, family, M, N, K, dtype) -> tuple:
        """(KernelSet, split-K arguments) of a fast GEMM launch of an M×N output with reduction K: the tile set
        and split ``gpubp tune`` measured fastest for this shape on this device (``self.tuned``), else
        ``gemm_tiles`` (the narrow tiles for a narrow f32 output) and ``gemm_splits``; the split's workspace (a scratch partial per shape, an int32 zero a
        tile shared by the launches: each launch leaves its counters zero)."""
        if self.naive:
            return self.ks, {}
        entry = self._tuned_entry(family, dtype, M, N, K)
        ks = self.ks.variant(entry.tiles if entry is not None else launchers.gemm_tiles(self.ks, family, dtype, M, N))
        splits = entry.splits if entry is not None else launchers.gemm_splits(ks, family, M, N, K)
        return ks, self._split_workspace(ks, family, M, N, splits, dtype)

    def _own_gemm(self, family, M, N, K, dtype) -> bool:
        """Whether a forward or BP2 product runs on gpubp's GEMM kernel: gemm="own"; gemm="auto" where the
        tuner found it at least as fast as cuBLAS for this shape (cuBLAS where nothing was measured)."""
        if self.gemm != "auto":
            return self.gemm == "own"
        entry = self._tuned_entry(family, dtype, M, N, K)
        return entry is not None and entry.own_wins

    def _tuned_entry(self, family, dtype, M, N, K):
        """What the tuning table holds for one GEMM shape; with tune="lazy", a shape it lacks is timed now
        (once: the tuner puts it in the table).  None: nothing measured (the defaults run)."""
        entry = self.tuned.get(family, dtype, M, N, K) if self.tuned is not None else None
        if entry is None and self.tuner is not None and min(M, N) > 0:
            recording, self._recording = self._recording, None   # the timing runs are no part of the step
            try:
                entry = self.tuner(self, family, dtype, M, N, K)
            finally:
                self._recording = recording
        return entry

    def _split_workspace(self, ks, family, M, N, splits, dtype) -> dict:
        if splits == 1:
            return {}
        tile = ks.param(family, "TILE")
        tiles = launchers.ceil_div(M, tile) * launchers.ceil_div(N, tile)
        counters = self._counters.get(tiles)
        if counters is None:
            counters = self._counters[tiles] = self.xp.zeros(tiles, dtype=np.int32)
        return {"splits": splits, "partial": self._scratch((splits, M, N), np.dtype(dtype), "split-K partial"),
                "counters": counters}

    # -- feedforward ---------------------------------------------------------
    def bias_sigmoid(self, z, b):
        self._submit(launchers.prepare_bias_sigmoid(self.ks, z, b, naive=self.naive))

    def feedforward(self, a_prev, W, b, a):
        if not self._own_gemm("forward_gemm", *a.shape, W.shape[0], a.dtype):
            return super().feedforward(a_prev, W, b, a)
        ks, split = self._gemm("forward_gemm", *a.shape, W.shape[0], a.dtype)
        self._submit(launchers.prepare_gemm_bias_sigmoid(ks, a_prev, W, b, a, naive=self.naive, **split))

    def backprop(self, delta_next, W_next, a, delta):
        if not self._own_gemm("backward_gemm", *delta.shape, W_next.shape[1], delta.dtype):
            return super().backprop(delta_next, W_next, a, delta)
        ks, split = self._gemm("backward_gemm", *delta.shape, W_next.shape[1], delta.dtype)
        self._submit(launchers.prepare_gemm_sigmoid_delta(ks, delta_next, W_next, a, delta, naive=self.naive, **split))

    # -- backward --------------------------------------------------------------
    def check_cost(self, cost):
        """The kernels compute the costs whose class names one of delta.cu's output kernels."""
        kernel = getattr(cost, "kernel", None)
        if kernel not in launchers.output_delta_kernels():
            raise InputError(f"the {self.name} backend runs the costs whose kernels are in kernels/delta.cu "
                             f"({', '.join(launchers.output_delta_kernels())}); {cost.name!r} names "
                             f"{'no kernel' if kernel is None else repr(kernel)}; use backend='numpy' for a "
                             f"custom cost")

    def output_delta(self, cost, a, y, delta, loss=None):
        self._submit(launchers.prepare_output_delta(self.ks, cost.kernel, a, y, delta, loss, naive=self.naive))

    def loss(self, cost, a, y, loss):
        delta = self._scratch(a.shape, a.dtype, "delta")     # the kernel writes δ too; it is discarded
        self._submit(launchers.prepare_output_delta(self.ks, cost.kernel, a, y, delta, loss, naive=self.naive))

    def sigmoid_delta(self, g, a, delta):
        self._submit(launchers.prepare_sigmoid_delta(self.ks, g, a, delta, naive=self.naive))

    def weight_grad(self, a_prev, delta, dW, db, scale=1.0):
        if self.cublas_weight_grad:
            return self._submit(OpCall(super().weight_grad, (a_prev, delta, dW, db, scale), {}))
        ks, split = self._gemm("weight_grad", *dW.shape, a_prev.shape[0], dW.dtype)
        self._submit(launchers.prepare_weight_grad(ks, a_prev, delta, dW, db, scale=scale, naive=self.naive, **split))

    def weight_grad_sgd(self, a_prev, delta, W, b, vW=None, vb=None, *, scale=1.0, eta, lmbda=0.0, mu=0.0):
        if not self.fused_update or self.cublas_weight_grad:
            return super().weight_grad_sgd(a_prev, delta, W, b, vW, vb, scale=scale, eta=eta, lmbda=lmbda, mu=mu)
        ks, split = self._gemm("weight_grad", *W.shape, a_prev.shape[0], W.dtype)
        self._submit(launchers.prepare_weight_grad_sgd(ks, a_prev, delta, W, b, vW, vb, scale=scale, eta=eta,
                                                       lmbda=lmbda, mu=mu, naive=self.naive, **split))


class _Recorder:
    """An array module that records the name of every attribute taken from it, and hands it on."""

    def __init__(self, module):
        self.module, self.calls = module, []

    def __getattr__(self, name):
        self.calls.append(name)
        return getattr(self.module, name)


class CupyBackend(KernelBackend):
    """CuPy arrays on the current device: stream sync and CUDA graphs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._graphs = {}
        self._capture_stream = None

    def run_step(self, step, idx, key=None, keep=()):
        """With ``cuda_graph``: the first call for a key runs the step (so
        kernels compile and cuBLAS sets up outside the capture), then captures
        it on a side stream, reading its row indices from a buffer of its own;
        later calls copy ``idx`` into that buffer and launch the graph on the
        current stream, so the step stays ordered with everything around it.

        The side stream lives as long as the backend and runs nothing but
        captures: CuPy's memory pool keeps freed blocks per stream, so any
        scratch memory a captured step took is handed out again only to
        later captures, never to work that could run beside a replay."""
        if not self.cuda_graph or key is None:
            return step(idx)
        entry = self._graphs.get(key)
        if entry is not None:
            graph, idx_buf, _ = entry
            idx_buf[...] = idx
            graph.launch(stream=self.xp.cuda.get_current_stream())
            return None
        step(idx)
        idx_buf = idx.copy()
        self.xp.cuda.get_current_stream().synchronize()
        if self._capture_stream is None:
            self._capture_stream = self.xp.cuda.Stream(non_blocking=True)
        capture = self._capture_stream
        with capture:
            capture.begin_capture()
            try:
                step(idx_buf)
            finally:
                graph = capture.end_capture()
        self._graphs[key] = (graph, idx_buf, keep)
        return None

    def release_steps(self):
        self._graphs.clear()
        super().release_steps()

    def available_bytes(self):
        """Free device memory, counting what CuPy's pool holds but does not use."""
        free, _total = self.xp.cuda.runtime.memGetInfo()
        return int(free) + int(self.xp.get_default_memory_pool().free_bytes())

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()
