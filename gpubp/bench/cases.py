"""The cases of the benchmark suite: what is timed, with the check that its
answer is right (a float64 reference) and its napkin math (bytes, flops).

    step     one SGD step (batch gathered, feedforward, backprop, update) for
             the nets in ``NETS``, both losses: gpubp on each backend; the GEMM
             floor (only the matrix products a step must do, on the same
             backend); the obvious NumPy step; PyTorch autograd when installed
    kernel   each fused op against the unfused array expression it replaces,
             with the napkin math: bytes moved and flops per call
    e2e      training throughput on the digits data (samples per second)
    threads  gpubp's fit step on one BLAS thread against the BLAS's default count, per net and
             batch (``THREAD_NETS`` x ``THREAD_BATCHES``): where threads pay (``gpubp.blas``)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import blas
from ..backend import get_backend
from ..costs import get_cost
from ..cuda.launchers import SPECS
from ..mlp import MLP
from ..testing import assert_close, check_step_update
from ..validation import check_targets

#: (sizes, batch) of the whole-step cases
NETS = [([784, 30, 10], 10), ([784, 256, 256, 10], 128), ([784, 1024, 1024, 10], 512)]
LOSSES = ("mse", "cross_entropy")
#: (B, I, O) of the kernel cases: the hidden layer of the largest net
KERNEL_SHAPE = (512, 1024, 1024)
ETA = 0.01
#: the nets and batches of the threads group
THREAD_NETS = [[784, 30, 10], [784, 100, 10], [784, 256, 256, 10], [784, 1024, 1024, 10]]
THREAD_BATCHES = (10, 32, 128, 512)


@dataclass
class Case:
    """One thing to time: ``fn`` does one call; ``check`` raises if its result is wrong."""
    group: str                 # "step", "kernel", "e2e", "threads"
    case: str                  # what is computed, e.g. "[784, 30, 10] b10 mse"
    impl: str                  # who computes it, e.g. "gpubp numpy", "GEMM floor numpy"
    device: str                # "cpu" or "gpu"
    fn: Callable[[], object] | None
    check: Callable[[], None] | None = None
    floor: tuple | None = None  # (case, impl) of the row this one is divided by for "x floor"
    flops: float | None = None
    bytes: float | None = None
    items: int | None = None   # samples per call (e2e throughput)
    unavailable: str | None = None
    threads: int | None = None  # the BLAS threads it runs on (None: no host BLAS, or its library's own)
    pin_threads: bool = False   # timed with the BLAS pinned to ``threads`` (gpubp's own choice off)


def gpubp_threads(sizes, B):
    """The BLAS threads gpubp's own choice gives a step of ``sizes`` on B rows (gpubp.blas)."""
    return blas.threads_for(sizes, B) or blas.default_threads()



def net_label(sizes, B, loss):
    return f"{sizes} b{B} {loss}"


def batch(sizes, B, seed=0, n=None):
    """A data set of n samples (2·B by default) and one batch's row indices."""
    rng = np.random.default_rng(seed)
    n = n or max(2 * B, 64)
    X = rng.random((n, sizes[0]))
    Y = check_targets(rng.integers(0, max(2, sizes[-1]), n), n, sizes[-1], np.float64)   # one-hot
    idx = rng.permutation(n)[:B]
    return X, Y, idx


def obvious_step(Ws, bs, X, Y, idx, eta, loss):
    """One SGD step written the obvious way in NumPy (allocating freely)."""
    x, y = X[idx], Y[idx]
    acts = [x]
    with np.errstate(over="ignore"):
        for W, b in zip(Ws, bs):
            acts.append(1 / (1 + np.exp(-(acts[-1] @ W + b))))
    a = acts[-1]
    delta = ((a - y) * a * (1 - a) if loss == "mse" else a - y) / len(x)
    for l in range(len(Ws) - 1, -1, -1):
        gW, gb = acts[l].T @ delta, delta.sum(axis=0)
        if l:
            delta = (delta @ Ws[l].T) * acts[l] * (1 - acts[l])
        Ws[l] -= eta * gW
        bs[l] -= eta * gb


class _Reference:
    """The float64 update ΔW, Δb of one step from ``model0``'s initial weights."""

    def __init__(self, model0, X, Y, idx, loss):
        self.W0 = [w.astype(np.float64) for w in model0.weights]
        self.b0 = [b.astype(np.float64) for b in model0.biases]
        Ws, bs = [w.copy() for w in self.W0], [b.copy() for b in self.b0]
        obvious_step(Ws, bs, X, Y, idx, ETA, loss)
        self.dW = [w - w0 for w, w0 in zip(Ws, self.W0)]
        self.db = [b - b0 for b, b0 in zip(bs, self.b0)]


def step_cases(sizes, B, loss, backends=("numpy",), torch_devices=("cpu",), seed=0):
    """The cases of one whole-step comparison."""
    X, Y, idx = batch(sizes, B, seed)
    label = net_label(sizes, B, loss)
    model0 = MLP(sizes, loss=loss, backend="numpy", seed=seed)
    threads = gpubp_threads(sizes, B)      # NumPy rows all run on gpubp's choice: the ratios compare code
    ref = _Reference(model0, X, Y, idx, loss)
    cases = []
    for name in backends:
        device = "gpu" if name == "cupy" else "cpu"
        # on a GPU also the step on gpubp's own GEMMs (no cuBLAS), eagerly and replayed as a CUDA graph
        # (launch overhead matters for small nets)
        variants = [(f"gpubp {name}", {})] + ([("gpubp cupy own", {"gemm": "own"}),
                                               ("gpubp cupy graph", {"cuda_graph": True})] if name == "cupy" else [])
        for impl, options in variants:
            try:
                model = MLP(sizes, loss=loss, backend=name, seed=seed, backend_options=options)
            except Exception as e:
                reason = str(e)
                cases.append(Case("step", label, impl, device, None, unavailable=reason))
                if not options:
                    cases.append(Case("step", label, f"GEMM floor {name}", device, None, unavailable=reason))
                break
            Xd, Yd = model.to_device(X, Y)
            idxd = model.backend.asarray(idx, np.int64)

            def check(model=model, Xd=Xd, Yd=Yd, idxd=idxd, impl=impl):
                m = MLP(sizes, loss=loss, backend=model.backend, seed=seed)
                m.stepper(Xd, Yd, lr=ETA, with_loss=False)(idxd)
                check_step_update(impl, m.weights, m.biases, ref)

            # the step fit runs: the data on the device, checked once, then one step per call
            step = (lambda step=model.stepper(Xd, Yd, lr=ETA, with_loss=False), idxd=idxd: step(idxd))
            host = device == "cpu"
            cases.append(Case("step", label, impl, device, step, check, floor=(label, f"GEMM floor {name}"),
                              flops=step_flops(sizes, B), threads=threads if host else None))
            if not options:
                floor = gemm_floor_case(model, B, label, device, name)
                floor.threads, floor.pin_threads = (threads, True) if host else (None, False)
                cases.append(floor)
                cases.append(public_step_case(model, X, Y, idx, label, device, name, ref, seed))
                cases[-1].threads = threads if host else None
    obvious = _obvious_case(model0, X, Y, idx, loss, label, ref)
    obvious.threads, obvious.pin_threads = threads, True
    cases.append(obvious)
    for dev in torch_devices:
        cases.append(torch_step_case(model0, X, Y, idx, loss, label, dev, ref))
    return cases


def thread_cases(sizes, B, loss="cross_entropy", seed=0):
    """gpubp's fit step (a Stepper) of ``sizes`` on B rows with the BLAS pinned to one thread and to
    its default count (gpubp's own choice off), timed together: the ratio says where threads pay."""
    X, Y, idx = batch(sizes, B, seed)
    ref = _Reference(MLP(sizes, loss=loss, backend="numpy", seed=seed), X, Y, idx, loss)
    label, default = f"{sizes} b{B}", blas.default_threads()
    if default is None:
        return [Case("threads", label, "1 thread", "cpu", None, unavailable=blas.describe())]
    cases = []
    for n in dict.fromkeys((1, default)):
        model = MLP(sizes, loss=loss, backend="numpy", seed=seed)
        Xd, Yd = model.to_device(X, Y)
        idxd = np.asarray(idx, np.int64)

        def check(n=n):
            m = MLP(sizes, loss=loss, backend="numpy", seed=seed)
            with blas.pinned(n):
                m.stepper(Xd, Yd, lr=ETA, with_loss=False)(idxd)
            check_step_update(f"{label} on {n} BLAS thread(s)", m.weights, m.biases, ref)

        step = model.stepper(Xd, Yd, lr=ETA, with_loss=False)
        cases.append(Case("threads", label, f"{n} thread{'s' if n > 1 else ''}", "cpu",
                          lambda step=step: step(idxd), check, flops=step_flops(sizes, B), threads=n,
                          pin_threads=True))
    return cases


def public_step_case(model, X, Y, idx, label, device, name, ref, seed=0):
    """``net.step(X, y, lr)`` as a user's own loop calls it: the batch already on the device in the
    model's dtype, integer labels (its fast path: O(1) checks and one reduction, nothing copied)."""
    bk = model.backend
    Xb, yb = bk.asarray(X[idx], model.dtype), bk.asarray(Y[idx].argmax(axis=1), np.int64)

    def check():
        m = MLP(model.sizes, loss=model.cost.name, backend=bk, seed=seed)
        m.step(Xb, yb, lr=ETA)
        check_step_update(f"gpubp {name} step()", m.weights, m.biases, ref)

    return Case("step", label, f"gpubp {name} step()", device, lambda: model.step(Xb, yb, lr=ETA), check,
                floor=(label, f"GEMM floor {name}"), flops=step_flops(model.sizes, len(idx)))


def step_flops(sizes, B):
    """2·B·n_in·n_out per GEMM: L forward, L weight-gradient, L − 1 BP2 products."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    return 2 * B * (2 * sum(i * o for i, o in pairs) + sum(i * o for i, o in pairs[1:]))


def gemm_floor_case(model, B, label, device, name):
    """Only the matrix products of one step, on the model's backend, into preallocated arrays."""
    bk, L, sizes = model.backend, model.L, model.sizes
    dW = [None] + [bk.empty(w.shape, model.dtype) for w in model.W[1:]]
    a = [bk.empty((B, n), model.dtype) for n in sizes]              # a[l]: B × n_l, as in the step
    d = [None] + [bk.empty((B, n), model.dtype) for n in sizes[1:]]  # d[l] = δ_l
    W = model.W
    for arr in a + d[1:]:                # every operand defined (np.empty may hold NaN bit patterns)
        arr[...] = 0.5

    def floor():
        for l in range(1, L + 1):
            bk.matmul(a[l - 1], W[l], out=a[l])
        for l in range(L, 0, -1):
            bk.matmul(a[l - 1].T, d[l], out=dW[l])
            if l > 1:
                bk.matmul(d[l], W[l].T, out=d[l - 1])

    def check():   # the floor's products are the products (one of them, against NumPy)
        floor()
        assert_close(bk.to_numpy(dW[L]), bk.to_numpy(a[L - 1]).astype(np.float64).T @ bk.to_numpy(d[L]),
                     model.dtype, what=f"GEMM floor {name}")

    return Case("step", label, f"GEMM floor {name}", device, floor, check, flops=step_flops(sizes, B))


def _obvious_case(model0, X, Y, idx, loss, label, ref):
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    Ws, bs = model0.weights, model0.biases

    def check():
        W2, b2 = model0.weights, model0.biases
        obvious_step(W2, b2, X32, Y32, idx, ETA, loss)
        check_step_update("obvious numpy", W2, b2, ref)

    return Case("step", label, "obvious numpy", "cpu", lambda: obvious_step(Ws, bs, X32, Y32, idx, ETA, loss),
                check, floor=(label, "GEMM floor numpy"), flops=step_flops(model0.sizes, len(idx)))


def torch_step_case(model0, X, Y, idx, loss, label, device, ref):
    impl = f"torch {device}"
    dev = "gpu" if device == "cuda" else "cpu"
    try:
        import torch
    except ImportError:
        return Case("step", label, impl, dev, None, unavailable="PyTorch is not installed (pip install torch)")
    if device == "cuda" and not torch.cuda.is_available():
        return Case("step", label, impl, dev, None, unavailable="PyTorch sees no CUDA device")

    def build():
        layers = []
        for W, b in zip(model0.weights, model0.biases):
            lin = torch.nn.Linear(*W.shape)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W.T.copy()))
                lin.bias.copy_(torch.from_numpy(b))
            layers += [lin, torch.nn.Sigmoid()]
        net = torch.nn.Sequential(*layers).to(device)
        return net, torch.optim.SGD(net.parameters(), lr=ETA)

    Xt = torch.from_numpy(X.astype(np.float32)).to(device)
    Yt = torch.from_numpy(Y.astype(np.float32)).to(device)
    it = torch.from_numpy(idx).to(device)

    def cost(a, y):
        if loss == "mse":
            return 0.5 * ((a - y) ** 2).sum(dim=1).mean()
        return torch.nn.functional.binary_cross_entropy(a, y, reduction="sum") / a.shape[0]

    def step(net, opt):
        opt.zero_grad(set_to_none=True)
        x, y = Xt[it], Yt[it]
        cost(net(x), y).backward()
        opt.step()

    net, opt = build()

    def check():
        n2, o2 = build()
        step(n2, o2)
        lin = [m for m in n2 if isinstance(m, torch.nn.Linear)]
        check_step_update(impl, [m.weight.detach().cpu().numpy().T for m in lin],
                      [m.bias.detach().cpu().numpy() for m in lin], ref)

    floor = (label, "GEMM floor cupy" if dev == "gpu" else "GEMM floor numpy")
    return Case("step", label, impl, dev, lambda: step(net, opt), check, floor=floor,
                flops=step_flops(model0.sizes, len(idx)))


# -- kernel cases -------------------------------------------------------------------------------
#: the GEMM main loop's steps (gemm_mainloop.cuh's PIPELINE), each timed beside the default ("fused": two
#: stages, cp.async on sm_80+) on the kernel backends, as siboehm's ladder puts each optimisation beside
#: the last: "1-stage" is v1's schedule and tile (one shared stage, a 4×4 micro-tile, BK 16; it keeps
#: v2's 16-byte loads), "reg-staged" two stages through registers (v2 before cp.async)
MAINLOOP_LADDER = (("1-stage", {"MICRO": 4, "BK": 16, "PIPELINE": 1}), ("reg-staged", {"PIPELINE": 2}))
#: the ops whose kernels run the main loop
GEMM_OPS = ("gemm_bias_sigmoid", "gemm_sigmoid_delta", "weight_grad", "weight_grad_sgd")

def kernel_napkin(B, I, O, itemsize=4):
    """Per launcher: bytes its kernel must move (each operand read or written once), bytes the unfused
    array expressions move (every temporary written and read back), and flops; from the launcher's
    record (``gpubp.cuda.launchers.SPECS``)."""
    out = {}
    for op, spec in SPECS.items():
        fused, unfused, flops = spec.napkin(B, I, O, itemsize)
        out[op] = dict(fused=fused, unfused=unfused, flops=flops, math=spec.math, unfused_expr=spec.unfused)
    return out


def kernel_cases(backend_name, shape=KERNEL_SHAPE, seed=0):
    """For one backend, each op three ways, side by side (as llm.c's dev/cuda times its kernel
    versions): ``fused`` (gpubp's backend op: the CUDA kernel on cupy, in-place NumPy on numpy),
    ``naive`` (the plain kernel kept beside the fast one; kernel backends only) and ``unfused``
    (the array expression the op replaces); and the one GEMM that bounds the weight gradient.  The
    GEMM ops also run on the main loop's earlier steps (MAINLOOP_LADDER; kernel backends only)."""
    B, I, O = shape
    label = f"B={B} I={I} O={O}"
    device = "gpu" if backend_name == "cupy" else "cpu"
    napkin = kernel_napkin(B, I, O)
    versions = [("fused", {}), ("unfused", None)]
    if backend_name != "numpy":           # the kernel backends' fused ops include gpubp's own GEMMs
        versions = [("fused", {"gemm": "own"}), ("naive", {"naive": True, "gemm": "own"}), ("unfused", None)]
        versions[1:1] = [(name, {"gemm": "own", "defines": defines}) for name, defines in MAINLOOP_LADDER]
    cases = []

    def add(op, impl, fn, check, floor=None):
        cases.append(Case("kernel", f"{op} {label}", f"{impl} {backend_name}", device, fn, check, floor=floor,
                          bytes=napkin[op]["unfused" if impl == "unfused" else "fused"], flops=napkin[op]["flops"]))

    ladder = dict(MAINLOOP_LADDER)
    backends = {}                       # the backend ops: "fused", the ladder's and "naive"; "unfused" is array expressions
    for impl, options in versions:
        try:
            bk = get_backend(backend_name, **(options or {}))[0]
        except Exception as e:
            for op in napkin:
                if impl not in ladder or op in GEMM_OPS:
                    add(op, impl, None, None)
                    cases[-1].unavailable = str(e)
            continue
        if options is not None:
            backends[impl] = bk
        else:
            plain = bk                     # the backend as it is by default: cuBLAS GEMMs, then the epilogue
    if "fused" not in backends:
        return cases
    gemm_backends, backends = backends, {impl: k for impl, k in backends.items() if impl not in ladder}
    bk = backends["fused"]
    xp, f32 = bk.xp, np.float32
    rng = np.random.default_rng(seed)

    def dev(x):
        return bk.asarray(x, f32)

    def host(x):
        return bk.to_numpy(x).astype(np.float64)

    def checked(what, got, expected):
        assert_close(bk.to_numpy(got), expected, f32, what=f"{what} {backend_name}")

    g, a = dev(rng.standard_normal((B, O))), dev(rng.random((B, O)))
    y = dev(np.eye(O)[rng.integers(0, O, B)])
    z, b = dev(rng.standard_normal((B, O))), dev(rng.standard_normal(O))
    a_prev, delta = dev(rng.random((B, I))), dev(rng.standard_normal((B, O)) * 1e-2)
    W0 = rng.standard_normal((I, O))
    out, loss, dW, db = bk.empty((B, O), f32), bk.empty(B, f32), bk.empty((I, O), f32), bk.empty(O, f32)
    W, bb = dev(W0), dev(np.zeros(O))
    z64, b64, g64, a64, y64 = host(z), host(b), host(g), host(a), host(y)
    a_prev64, delta64 = host(a_prev), host(delta)
    gemm = (f"GEMM {label}", f"GEMM {backend_name}")
    cost = get_cost("mse")

    # the batch's gather, x = X[idx] and y = Y[idx] from 2B rows: one launch against two takes
    X2, Y2 = dev(rng.random((2 * B, I))), dev(np.eye(O)[rng.integers(0, O, 2 * B)])
    rows = bk.asarray(rng.permutation(2 * B)[:B], np.int64)
    gx, gy = bk.empty((B, I), f32), bk.empty((B, O), f32)
    gx64, gy64 = host(X2)[bk.to_numpy(rows)], host(Y2)[bk.to_numpy(rows)]

    def gather_check(fn, impl):
        x, y = fn()
        checked(f"gather_rows x {impl}", x, gx64)
        checked(f"gather_rows y {impl}", y, gy64)
    for impl, k in backends.items():
        run = (lambda k=k: (k.gather_rows(X2, Y2, rows, gx, gy), (gx, gy))[1])
        add("gather_rows", impl, run, lambda run=run, impl=impl: gather_check(run, impl))
    add("gather_rows", "unfused", lambda: (X2[rows], Y2[rows]), lambda: gather_check(lambda: (X2[rows], Y2[rows]),
                                                                                     "unfused"))

    # hidden delta (BP2's epilogue)
    sd = g64 * a64 * (1 - a64)
    for impl, k in backends.items():
        add("sigmoid_delta", impl, lambda k=k: k.sigmoid_delta(g, a, out),
            lambda k=k, impl=impl: (k.sigmoid_delta(g, a, out), checked(f"sigmoid_delta {impl}", out, sd)))
    add("sigmoid_delta", "unfused", lambda: g * a * (1 - a), lambda: checked("g*a*(1-a)", g * a * (1 - a), sd))

    # output delta and loss (BP1, MSE)
    od, od_loss = (a64 - y64) * a64 * (1 - a64), 0.5 * ((a64 - y64) ** 2).sum(1)

    def od_check(k, impl):
        k.output_delta(cost, a, y, out, loss)
        checked(f"output_delta {impl}", out, od)
        checked(f"output_delta loss {impl}", loss, od_loss)
    for impl, k in backends.items():
        add("output_delta", impl, lambda k=k: k.output_delta(cost, a, y, out, loss), lambda k=k, impl=impl: od_check(k, impl))
    add("output_delta", "unfused", lambda: ((a - y) * a * (1 - a), 0.5 * ((a - y) ** 2).sum(axis=1)),
        lambda: checked("(a-y)*a*(1-a)", (a - y) * a * (1 - a), od))

    # forward epilogue (in place: refreshed from z by the check only; the timed calls saturate harmlessly)
    zz = bk.empty((B, O), f32)
    sig = 1 / (1 + np.exp(-(z64 + b64)))

    def fwd_check(k, impl):
        zz[...] = z
        k.bias_sigmoid(zz, b)
        checked(f"bias_sigmoid {impl}", zz, sig)
    for impl, k in backends.items():
        add("bias_sigmoid", impl, lambda k=k: k.bias_sigmoid(zz, b), lambda k=k, impl=impl: fwd_check(k, impl))
    add("bias_sigmoid", "unfused", lambda: 1 / (1 + xp.exp(-(z + b))),
        lambda: checked("sigmoid(z+b)", 1 / (1 + xp.exp(-(z + b))), sig))

    # the forward layer a = σ(a_prev W + b) and BP2's (δ_next W_nextᵀ) ⊙ a(1 − a): gpubp's GEMMs with the
    # epilogue fused, against cuBLAS followed by the epilogue kernel, and against the GEMM alone (the floor)
    W_l = dev(rng.standard_normal((I, O)) / np.sqrt(I))
    W_l64 = host(W_l)
    fwd_out, bwd_out = bk.empty((B, O), f32), bk.empty((B, I), f32)
    fwd_ref = 1 / (1 + np.exp(-(a_prev64 @ W_l64 + b64)))
    bwd_ref = (delta64 @ W_l64.T) * a_prev64 * (1 - a_prev64)
    fwd_floor, bwd_floor = (f"GEMM a_prev@W {label}", f"GEMM {backend_name}"), (f"GEMM delta@W^T {label}",
                                                                                f"GEMM {backend_name}")
    for impl, k in list(gemm_backends.items()) + [("unfused", plain)]:
        add("gemm_bias_sigmoid", impl, lambda k=k: k.feedforward(a_prev, W_l, b, fwd_out),
            lambda k=k, impl=impl: (k.feedforward(a_prev, W_l, b, fwd_out),
                                    checked(f"gemm_bias_sigmoid {impl}", fwd_out, fwd_ref)), floor=fwd_floor)
        add("gemm_sigmoid_delta", impl, lambda k=k: k.backprop(delta, W_l, a_prev, bwd_out),
            lambda k=k, impl=impl: (k.backprop(delta, W_l, a_prev, bwd_out),
                                    checked(f"gemm_sigmoid_delta {impl}", bwd_out, bwd_ref)), floor=bwd_floor)
    for floor, fn, ref in ((fwd_floor, lambda: bk.matmul(a_prev, W_l, out=fwd_out), a_prev64 @ W_l64),
                           (bwd_floor, lambda: bk.matmul(delta, W_l.T, out=bwd_out), delta64 @ W_l64.T)):
        cases.append(Case("kernel", floor[0], floor[1], device, fn,
                          lambda fn=fn, ref=ref, out=(fwd_out if floor is fwd_floor else bwd_out):
                          (fn(), checked(f"GEMM {floor[0]}", out, ref)),
                          flops=2 * B * I * O, bytes=(B * I + B * O + I * O) * 4))

    # weight gradient + bias gradient (BP3, BP4)
    dW64, db64 = a_prev64.T @ delta64, delta64.sum(0)
    for impl, k in gemm_backends.items():
        add("weight_grad", impl, lambda k=k: k.weight_grad(a_prev, delta, dW, db),
            lambda k=k, impl=impl: (k.weight_grad(a_prev, delta, dW, db), checked(f"dW {impl}", dW, dW64),
                                    checked(f"db {impl}", db, db64)), floor=gemm)
    add("weight_grad", "unfused", lambda: (a_prev.T @ delta, delta.sum(axis=0)),
        lambda: checked("a_prev.T @ delta", a_prev.T @ delta, dW64), floor=gemm)

    # weight gradient + SGD update (W drifts during timing; the checks use fresh copies)
    W_ref = W0 - ETA * dW64

    def sgd_check(k, impl):
        W1, b1 = dev(W0), dev(np.zeros(O))
        k.weight_grad_sgd(a_prev, delta, W1, b1, eta=ETA)
        checked(f"W after the {impl} update", W1, W_ref)
        checked(f"b after the {impl} update", b1, -ETA * db64)

    def unfused_sgd(W1=W, b1=bb):
        W1 -= ETA * (a_prev.T @ delta)
        b1 -= ETA * delta.sum(axis=0)

    def unfused_sgd_check():
        W1, b1 = dev(W0), dev(np.zeros(O))
        unfused_sgd(W1, b1)
        checked("W after the unfused update", W1, W_ref)

    for impl, k in gemm_backends.items():
        add("weight_grad_sgd", impl, lambda k=k: k.weight_grad_sgd(a_prev, delta, W, bb, eta=ETA),
            lambda k=k, impl=impl: sgd_check(k, impl), floor=gemm)
    add("weight_grad_sgd", "unfused", unfused_sgd, unfused_sgd_check, floor=gemm)
    # the floor of both: the one GEMM
    cases.append(Case("kernel", gemm[0], gemm[1], device,
                      lambda: bk.matmul(a_prev.T, delta, out=dW),
                      lambda: (bk.matmul(a_prev.T, delta, out=dW), checked("GEMM", dW, dW64)),
                      flops=2 * B * I * O, bytes=(B * I + B * O + I * O) * 4))
    return cases


# -- end to end --------------------------------------------------------------------------------
def e2e_case(backend_name, epochs=3):
    device = "gpu" if backend_name == "cupy" else "cpu"
    impl = f"gpubp {backend_name}"
    try:
        from .. import datasets
        data = datasets.digits()
        MLP([64, 64, 10], backend=backend_name)
    except Exception as e:
        return Case("e2e", "digits [64, 64, 10] b10 fit", impl, device, None, unavailable=str(e))

    def fit():
        net = MLP([64, 64, 10], loss="cross_entropy", backend=backend_name, seed=0)
        net.fit(data.X_train, data.y_train, epochs=epochs, batch_size=10, lr=1.0, progress=False)
        return net

    def check():
        acc = fit().evaluate(data.X_test, data.y_test)["accuracy"]
        if acc < 0.9:
            raise AssertionError(f"digits accuracy after {epochs} epochs is {acc:.3f}, expected >= 0.9")

    return Case("e2e", f"digits [64, 64, 10] b10 fit x{epochs} epochs", impl, device, fit, check,
                items=epochs * len(data.X_train))
