"""The benchmark suite: CPU against GPU, fused kernels against unfused
expressions, every training step against its GEMM floor.

Every case is checked before it is timed (a mismatch raises), warmed up so
compilation and first-touch stay out of the numbers, then timed:

    CPU   ``time.perf_counter`` over many repetitions (auto-ranged batches of
          calls, median of the batches)
    GPU   CUDA events around each call (``cupyx.profiler.benchmark``)

Rows on different devices never share a timer.  The same case builders feed
``gpubp bench`` (no pytest needed) and the pytest-benchmark files in
``benchmarks/``.

Groups of rows:
    step     one SGD step (batch gathered, feedforward, backprop, update) for
             the nets in ``NETS``, both losses: gpubp on each backend; the GEMM
             floor (only the matrix products a step must do, on the same
             backend); the obvious NumPy step; PyTorch autograd when installed
    kernel   each fused op against the unfused array expression it replaces,
             with the napkin math: bytes moved and flops per call
    e2e      training throughput on the digits data (samples per second)
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from . import __version__
from .backend import cuda_status, get_backend
from .mlp import MLP
from .testing import assert_close
from .validation import check_targets

#: (sizes, batch) of the whole-step cases
NETS = [([784, 30, 10], 10), ([784, 256, 256, 10], 128), ([784, 1024, 1024, 10], 512)]
LOSSES = ("mse", "cross_entropy")
#: (B, I, O) of the kernel cases: the hidden layer of the largest net
KERNEL_SHAPE = (512, 1024, 1024)
ETA = 0.01
#: OpenBLAS, and PyTorch's OpenMP, keep idle threads spinning for a while after
#: a call; two libraries spinning at once on 2 cores slow each other tenfold.
#: Each case starts after this pause so the previous library's threads sleep.
SETTLE_S = 0.3


# -- cases ----------------------------------------------------------------------------------------
@dataclass
class Case:
    """One thing to time: ``fn`` does one call; ``check`` raises if its result is wrong."""
    group: str                 # "step", "kernel", "e2e"
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


@dataclass
class Row:
    group: str
    case: str
    impl: str
    device: str
    median_s: float | None = None
    spread_s: float | None = None   # interquartile range of the per-call times
    n_calls: int = 0
    floor: tuple | None = None
    floor_ratio: float | None = None
    flops: float | None = None
    bytes: float | None = None
    gbps: float | None = None
    tflops: float | None = None
    peak_bw_fraction: float | None = None
    peak_flops_fraction: float | None = None
    throughput: float | None = None   # items per second (e2e)
    note: str = ""
    failed: bool = False              # its check failed (or it raised): not timed, and the run fails


def _net_label(sizes, B, loss):
    return f"{sizes} b{B} {loss}"


def _batch(sizes, B, seed=0, n=None):
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


def _check_params(what, got_W, got_b, ref):
    """Compare the *updates* (W after − W before): W itself barely moves in one
    step, so comparing W would hide an update that is off by percents.  A
    float32 W stores its update only to within a few ulp(W), so the absolute
    tolerance is 4 ulp of the largest parameter on top of rtol 2e-3."""
    ulp = np.finfo(np.float32).eps
    for l in range(len(ref.dW)):
        for kind, got, p0, d in (("W", got_W, ref.W0, ref.dW), ("b", got_b, ref.b0, ref.db)):
            atol = 2e-3 * float(np.abs(d[l]).max()) + 4 * ulp * float(np.abs(p0[l]).max())
            assert_close(np.asarray(got[l], np.float64) - p0[l], d[l], rtol=2e-3, atol=atol,
                         what=f"{what}: {kind}{l + 1} update after one step")


def step_cases(sizes, B, loss, backends=("numpy",), torch_devices=("cpu",), seed=0):
    """The cases of one whole-step comparison."""
    X, Y, idx = _batch(sizes, B, seed)
    label = _net_label(sizes, B, loss)
    model0 = MLP(sizes, loss=loss, backend="numpy", seed=seed)
    ref = _Reference(model0, X, Y, idx, loss)
    cases = []
    for name in backends:
        device = "gpu" if name == "cupy" else "cpu"
        # on a GPU, also the step replayed as a CUDA graph (launch overhead matters for small nets)
        variants = [(f"gpubp {name}", {})] + ([("gpubp cupy graph", {"cuda_graph": True})] if name == "cupy" else [])
        for impl, options in variants:
            try:
                model = MLP(sizes, loss=loss, backend=name, seed=seed, backend_options=options)
            except Exception as e:
                reason = str(e)
                cases.append(Case("step", label, impl, device, None, unavailable=reason))
                if not options:
                    cases.append(Case("step", label, f"GEMM floor {name}", device, None, unavailable=reason))
                break
            bk = model.backend
            Xd, Yd, idxd = bk.asarray(X, model.dtype), bk.asarray(Y, model.dtype), bk.asarray(idx, np.int64)

            def check(model=model, Xd=Xd, Yd=Yd, idxd=idxd, impl=impl):
                m = MLP(sizes, loss=loss, backend=model.backend, seed=seed)
                m._train_on(Xd, Yd, idxd, ETA, 0.0, 0.0, with_loss=False)
                _check_params(impl, m.weights, m.biases, ref)

            hyper = model._check_hyper(ETA, 0.0, 0.0)
            step = (lambda model=model, Xd=Xd, Yd=Yd, idxd=idxd, hyper=hyper:
                    model._train_on(Xd, Yd, idxd, *hyper, with_loss=False))
            cases.append(Case("step", label, impl, device, step, check, floor=(label, f"GEMM floor {name}"),
                              flops=step_flops(sizes, B)))
            if not options:
                cases.append(gemm_floor_case(model, B, label, device, name))
    cases.append(_obvious_case(model0, X, Y, idx, loss, label, ref))
    for dev in torch_devices:
        cases.append(torch_step_case(model0, X, Y, idx, loss, label, dev, ref))
    return cases


def step_flops(sizes, B):
    """2·B·n_in·n_out per GEMM: L forward, L weight-gradient, L − 1 BP2 products."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    return 2 * B * (2 * sum(i * o for i, o in pairs) + sum(i * o for i, o in pairs[1:]))


def gemm_floor_case(model, B, label, device, name):
    """Only the matrix products of one step, on the model's backend, into preallocated arrays."""
    bk, L = model.backend, model.L
    ws = model._workspace(B)
    dW = [None] + [bk.empty(w.shape, model.dtype) for w in model.W[1:]]
    a, d, W = ws.a, ws.delta, model.W
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

    return Case("step", label, f"GEMM floor {name}", device, floor, check, flops=step_flops(model.sizes, ws.B))


def _obvious_case(model0, X, Y, idx, loss, label, ref):
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    Ws, bs = model0.weights, model0.biases

    def check():
        W2, b2 = model0.weights, model0.biases
        obvious_step(W2, b2, X32, Y32, idx, ETA, loss)
        _check_params("obvious numpy", W2, b2, ref)

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
        _check_params(impl, [m.weight.detach().cpu().numpy().T for m in lin],
                      [m.bias.detach().cpu().numpy() for m in lin], ref)

    floor = (label, "GEMM floor cupy" if dev == "gpu" else "GEMM floor numpy")
    return Case("step", label, impl, dev, lambda: step(net, opt), check, floor=floor,
                flops=step_flops(model0.sizes, len(idx)))


# -- kernel cases -------------------------------------------------------------------------------
def kernel_napkin(B, I, O, itemsize=4):
    """Bytes each op must move (each operand read or written once) and flops,
    fused against the unfused array expressions (every temporary written and
    read back)."""
    n, s = B * O, itemsize
    return {
        "sigmoid_delta": dict(fused=3 * n * s, unfused=8 * n * s, flops=3 * n,
                              math="delta = g*a*(1-a)", unfused_expr="g * a * (1 - a)"),
        "bias_sigmoid": dict(fused=(2 * n + O) * s, unfused=(10 * n + O) * s, flops=4 * n,
                             math="z = sigmoid(z + b)", unfused_expr="1 / (1 + exp(-(z + b)))"),
        "weight_grad": dict(fused=(B * I + B * O + I * O + O) * s, unfused=(B * I + 2 * B * O + I * O + O) * s,
                            flops=2 * B * I * O + n, math="dW = A^T D, db = sum_B D",
                            unfused_expr="A.T @ D; D.sum(0)"),
        "weight_grad_sgd": dict(fused=(B * I + B * O + 2 * I * O + 2 * O) * s,
                                unfused=(B * I + 2 * B * O + 6 * I * O + 6 * O) * s,
                                flops=2 * B * I * O + n + 2 * I * O + 2 * O,
                                math="W -= eta A^T D, b -= eta sum_B D",
                                unfused_expr="dW = A.T @ D; W -= eta * dW; b -= eta * D.sum(0)"),
    }


def kernel_cases(backend_name, shape=KERNEL_SHAPE, seed=0):
    """For one backend: each fused op (gpubp's backend op: the CUDA kernel on
    cupy, in-place NumPy on numpy) and the unfused expression it replaces."""
    B, I, O = shape
    label = f"B={B} I={I} O={O}"
    device = "gpu" if backend_name == "cupy" else "cpu"
    napkin = kernel_napkin(B, I, O)
    try:
        bk, _ = get_backend(backend_name)
    except Exception as e:
        return [Case("kernel", f"{op} {label}", f"{who} {backend_name}", device, None, unavailable=str(e),
                     bytes=napkin[op][key], flops=napkin[op]["flops"])
                for op in napkin for who, key in (("fused", "fused"), ("unfused", "unfused"))]
    xp, f32 = bk.xp, np.float32
    rng = np.random.default_rng(seed)

    def dev(a):
        return bk.asarray(a, f32)

    g, a = dev(rng.standard_normal((B, O))), dev(rng.random((B, O)))
    z, b = dev(rng.standard_normal((B, O))), dev(rng.standard_normal(O))
    A, D = dev(rng.random((B, I))), dev(rng.standard_normal((B, O)) * 1e-2)
    W0, delta, dW, db = rng.standard_normal((I, O)), bk.empty((B, O), f32), bk.empty((I, O), f32), bk.empty(O, f32)
    W, bb = dev(W0), dev(np.zeros(O))
    z0 = bk.to_numpy(z).astype(np.float64)
    g64, a64 = bk.to_numpy(g).astype(np.float64), bk.to_numpy(a).astype(np.float64)
    A64, D64 = bk.to_numpy(A).astype(np.float64), bk.to_numpy(D).astype(np.float64)
    b64 = bk.to_numpy(b).astype(np.float64)

    def checked(what, got, expected):
        assert_close(bk.to_numpy(got), expected, f32, what=f"{what} {backend_name}")

    cases = []
    gemm = (f"GEMM {label}", f"GEMM {backend_name}")

    def add(op, impl, fn, check, floor=None):
        key = "fused" if impl == "fused" else "unfused"
        cases.append(Case("kernel", f"{op} {label}", f"{impl} {backend_name}", device, fn, check, floor=floor,
                          bytes=napkin[op][key], flops=napkin[op]["flops"]))

    # hidden delta
    add("sigmoid_delta", "fused", lambda: bk.sigmoid_delta(g, a, delta),
        lambda: (bk.sigmoid_delta(g, a, delta), checked("sigmoid_delta", delta, g64 * a64 * (1 - a64))))
    add("sigmoid_delta", "unfused", lambda: g * a * (1 - a),
        lambda: checked("g*a*(1-a)", g * a * (1 - a), g64 * a64 * (1 - a64)))
    # forward epilogue (in place: refreshed from z0 by the check only; the timed calls saturate harmlessly)
    zz = bk.empty((B, O), f32)
    sig = 1 / (1 + np.exp(-(z0 + b64)))

    def fused_fwd_check():
        zz[...] = z
        bk.bias_sigmoid(zz, b)
        checked("bias_sigmoid", zz, sig)
    add("bias_sigmoid", "fused", lambda: bk.bias_sigmoid(zz, b), fused_fwd_check)
    add("bias_sigmoid", "unfused", lambda: 1 / (1 + xp.exp(-(z + b))),
        lambda: checked("sigmoid(z+b)", 1 / (1 + xp.exp(-(z + b))), sig))
    # weight gradient + bias gradient
    add("weight_grad", "fused", lambda: bk.weight_grad(A, D, dW, db),
        lambda: (bk.weight_grad(A, D, dW, db), checked("dW", dW, A64.T @ D64), checked("db", db, D64.sum(0))),
        floor=gemm)
    add("weight_grad", "unfused", lambda: (A.T @ D, D.sum(axis=0)),
        lambda: checked("A.T @ D", A.T @ D, A64.T @ D64), floor=gemm)
    # weight gradient + SGD update (W drifts during timing; the check uses fresh copies)
    W_ref = W0 - ETA * (A64.T @ D64)

    def fused_sgd_check():
        W1, b1 = dev(W0), dev(np.zeros(O))
        bk.weight_grad_sgd(A, D, W1, b1, eta=ETA)
        checked("W after fused update", W1, W_ref)
        checked("b after fused update", b1, -ETA * D64.sum(0))

    def unfused_sgd(W1=W, b1=bb):
        W1 -= ETA * (A.T @ D)
        b1 -= ETA * D.sum(axis=0)

    def unfused_sgd_check():
        W1, b1 = dev(W0), dev(np.zeros(O))
        unfused_sgd(W1, b1)
        checked("W after unfused update", W1, W_ref)

    add("weight_grad_sgd", "fused", lambda: bk.weight_grad_sgd(A, D, W, bb, eta=ETA), fused_sgd_check, floor=gemm)
    add("weight_grad_sgd", "unfused", unfused_sgd, unfused_sgd_check, floor=gemm)
    # the floor of both: the one GEMM
    cases.append(Case("kernel", gemm[0], gemm[1], device,
                      lambda: bk.matmul(A.T, D, out=dW),
                      lambda: (bk.matmul(A.T, D, out=dW), checked("GEMM", dW, A64.T @ D64)),
                      flops=2 * B * I * O, bytes=(B * I + B * O + I * O) * 4))
    return cases


# -- end to end --------------------------------------------------------------------------------
def e2e_case(backend_name, epochs=3):
    device = "gpu" if backend_name == "cupy" else "cpu"
    impl = f"gpubp {backend_name}"
    try:
        from . import datasets
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


# -- timing --------------------------------------------------------------------------------------
def time_gpu(fn, min_time=0.5):
    """Per-call GPU times (s) from CUDA events (cupyx.profiler.benchmark)."""
    from cupyx.profiler import benchmark
    probe = benchmark(fn, n_repeat=3, n_warmup=3)
    per = max(float(np.median(probe.gpu_times[0])), 1e-6)
    n = int(min(max(min_time / per, 10), 2000))
    result = benchmark(fn, n_repeat=n, n_warmup=5)
    return list(result.gpu_times[0]), n


def gpu_peaks():
    """(peak GB/s, peak FP32 TFLOP/s, description) read from device 0, or Nones."""
    try:
        import cupy
        rt = cupy.cuda.runtime
        dev = cupy.cuda.Device(0)
        attr = dev.attributes
        sms = attr["MultiProcessorCount"]
        clock_khz = attr.get("ClockRate") or rt.deviceGetAttribute(13, 0)
        mem_khz = attr.get("MemoryClockRate") or rt.deviceGetAttribute(36, 0)
        bus_bits = attr.get("GlobalMemoryBusWidth") or rt.deviceGetAttribute(37, 0)
        cc = dev.compute_capability
        cores = {"75": 64, "80": 64}.get(cc, 128)    # FP32 lanes per SM: 64 on sm_75/sm_80, 128 on sm_86+
        bw = 2 * mem_khz * 1e3 * bus_bits / 8 / 1e9
        tf = sms * cores * 2 * clock_khz * 1e3 / 1e12
        name = rt.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else name
        return bw, tf, f"{name} (sm_{cc}, {sms} SMs): peak {bw:.0f} GB/s, {tf:.1f} FP32 TFLOP/s"
    except Exception as e:
        return None, None, f"device peaks unavailable: {e}"


def time_cpu_interleaved(fns, min_time=0.5, rounds=None):
    """Per-call times (s) of several functions timed in alternating rounds
    (A B C A B C …), so that drift in the machine's speed (a shared VM's
    neighbours, frequency changes) falls on all of them alike and their
    ratios stay honest.  Each round times one auto-ranged batch of calls."""
    batch = []
    for fn in fns:                       # warm up and size each batch to ≥ 5 ms
        fn()
        n = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            if time.perf_counter() - t0 >= 0.005 or n >= 1 << 20:
                break
            n *= 2
        batch.append(n)
    samples = [[] for _ in fns]
    end = time.perf_counter() + min_time * len(fns)
    k = 0
    while k < (rounds or 5) or (rounds is None and time.perf_counter() < end):
        for i, fn in enumerate(fns):
            n = batch[i]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[i].append((time.perf_counter() - t0) / n)
        k += 1
    return [(s, batch[i] * len(s)) for i, s in enumerate(samples)]


def _new_row(case: Case) -> Row:
    row = Row(case.group, case.case, case.impl, case.device, flops=case.flops, bytes=case.bytes, floor=case.floor)
    if case.fn is None:
        row.note = f"unavailable: {case.unavailable}"
    return row


def _finish_row(row: Row, case: Case, samples, n, peaks) -> Row:
    row.median_s = statistics.median(samples)
    q = np.percentile(samples, [25, 75])
    row.spread_s, row.n_calls = float(q[1] - q[0]), n
    if case.items:
        row.throughput = case.items / row.median_s
    if case.bytes:
        row.gbps = case.bytes / row.median_s / 1e9
    if case.flops:
        row.tflops = case.flops / row.median_s / 1e12
    if case.device == "gpu":
        bw, tf = peaks
        if bw and row.gbps:
            row.peak_bw_fraction = row.gbps / bw
        if tf and row.tflops:
            row.peak_flops_fraction = row.tflops / tf
    return row


def _pool(case: Case) -> str:
    """Which thread pool a case runs on: cases of one pool are timed together,
    interleaved; a different pool starts after a pause (see SETTLE_S)."""
    if case.device == "gpu":
        return "gpu"
    return "torch" if case.impl.startswith("torch") else "numpy"


def _failed(row: Row, when: str, e: Exception):
    first = (str(e).strip().splitlines() or [""])[0]
    row.failed, row.note = True, f"FAILED {when}: {type(e).__name__}: {first}"


def run_cases(cases, quick=False, peaks=(None, None)) -> list:
    """Check every case, then time the ones that passed: consecutive CPU cases
    of one thread pool interleaved, GPU cases with CUDA events one by one.
    A case whose check fails, or that raises (a CUDA error, a compile error),
    is never timed: its row says FAILED and why, and the rest still run."""
    min_time = 0.15 if quick else 0.6
    rows = [_new_row(c) for c in cases]
    live = []
    for case, row in zip(cases, rows):
        if case.fn is None:
            continue
        try:
            if case.check is not None:
                case.check()
        except Exception as e:
            _failed(row, "its check", e)
            continue
        live.append((case, row))
    groups = []
    for case, row in live:
        key = (_pool(case), case.case)
        if groups and groups[-1][0] == key and key[0] != "gpu":
            groups[-1][1].append((case, row))
        else:
            groups.append((key, [(case, row)]))
    for (pool, _), members in groups:
        time.sleep(SETTLE_S / 3 if quick else SETTLE_S)
        try:
            if pool == "gpu":
                (case, row), = members
                _finish_row(row, case, *time_gpu(case.fn, min_time), peaks)
            else:
                rounds = 3 if members[0][0].group == "e2e" else None
                timed = time_cpu_interleaved([c.fn for c, _ in members], min_time, rounds)
                for (case, row), (samples, n) in zip(members, timed):
                    _finish_row(row, case, samples, n, peaks)
        except Exception as e:
            for _, row in members:
                _failed(row, "while timed", e)
    return rows


# -- the suite -------------------------------------------------------------------------------------
@dataclass
class Report:
    rows: list = field(default_factory=list)
    machine: dict = field(default_factory=dict)

    def to_json(self):
        return {"machine": self.machine, "rows": [asdict(r) for r in self.rows]}


def machine_info():
    ok, why = cuda_status()
    info = {"gpubp": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "cuda": why}
    try:
        import threadpoolctl
        info["blas"] = [f"{i['internal_api']} {i.get('version')} {i['num_threads']} threads ({i['prefix']})"
                        for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    except ImportError:
        pass
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def parse_sizes(text):
    """'784,30,10:10;784,256,256,10:128' → [([784, 30, 10], 10), ...]"""
    nets = []
    for part in text.split(";"):
        if not part.strip():
            continue
        try:
            sizes, B = part.split(":")
            nets.append(([int(s) for s in sizes.split(",")], int(B)))
        except ValueError:
            raise ValueError(f"--sizes takes 'w0,w1,...:batch' separated by ';', e.g. '784,30,10:10'; got {part!r}") from None
    return nets


def run(backends=None, nets=None, quick=False, groups=("step", "kernel", "e2e"), log=print) -> Report:
    """Run the suite and return its rows; ``log`` receives one line per case."""
    ok, why = cuda_status()
    if backends is None:
        backends = ["numpy"] + (["cupy"] if ok else [])
    gpu_note = None if ok else why
    report = Report(machine=machine_info())
    peaks = gpu_peaks() if ok else (None, None, None)
    report.machine["gpu_peaks"] = peaks[2] if ok else None
    nets = nets or NETS
    cases = []
    torch_devices = ["cpu"] + (["cuda"] if ok else [])
    if "step" in groups:
        for sizes, B in nets:
            for loss in LOSSES:
                cases += step_cases(sizes, B, loss, backends=backends, torch_devices=torch_devices)
                if "cupy" not in backends and gpu_note:
                    label = _net_label(sizes, B, loss)
                    cases.append(Case("step", label, "gpubp cupy", "gpu", None, unavailable=gpu_note,
                                      flops=step_flops(sizes, B)))
    if "kernel" in groups:
        for name in dict.fromkeys(list(backends) + ["cupy"]):
            cases += kernel_cases(name)
    if "e2e" in groups:
        cases += [e2e_case(name, epochs=2 if quick else 5) for name in backends]
    by_case = {}
    for case in cases:                     # the cases of one comparison run together
        by_case.setdefault((case.group, case.case), []).append(case)
    for group in by_case.values():
        for row in run_cases(group, quick, peaks[:2]):
            report.rows.append(row)
            log(_row_line(row))
    _fill_ratios(report.rows)
    return report


def _fill_ratios(rows):
    medians = {(r.case, r.impl): r.median_s for r in rows if r.median_s}
    for r in rows:
        floor = medians.get(tuple(r.floor)) if r.floor and r.median_s else None
        if floor:
            r.floor_ratio = r.median_s / floor


def _fmt_time(s):
    if s is None:
        return "-"
    for unit, k in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if s >= k:
            return f"{s / k:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _fmt_num(x, unit=""):
    if x is None:
        return "-"
    for suffix, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= k:
            return f"{x / k:.3g} {suffix}{unit}"
    return f"{x:.3g} {unit}".strip()


def _row_line(r):
    if r.median_s is None:        # the reason only; its fix is in the header and the table
        return f"{r.group:6} {r.case:34} {r.impl:22} {r.note.split('; ')[0]}"
    extra = f" x{r.floor_ratio:.2f} floor" if r.floor_ratio else ""
    if r.throughput:
        extra += f" {r.throughput:,.0f} samples/s"
    return f"{r.group:6} {r.case:34} {r.impl:22} {_fmt_time(r.median_s):>9} ±{_fmt_time(r.spread_s)}{extra}"


def format_table(report: Report) -> str:
    head = ["group", "case", "implementation", "device", "median", "spread (IQR)", "x GEMM floor",
            "bytes/call", "flops/call", "GB/s", "TFLOP/s", "% peak BW", "% peak FLOP", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.rows:
        cells = [r.group, r.case, r.impl, r.device, _fmt_time(r.median_s),
                 _fmt_time(r.spread_s) if r.spread_s is not None else "-",
                 f"{r.floor_ratio:.2f}" if r.floor_ratio else "-",
                 _fmt_num(r.bytes, "B"), _fmt_num(r.flops),
                 f"{r.gbps:.1f}" if r.gbps else "-", f"{r.tflops:.3f}" if r.tflops else "-",
                 f"{100 * r.peak_bw_fraction:.0f}%" if r.peak_bw_fraction else "-",
                 f"{100 * r.peak_flops_fraction:.0f}%" if r.peak_flops_fraction else "-",
                 (f"{r.throughput:,.0f} samples/s " if r.throughput else "") + r.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: Report, path) -> str | None:
    """Time per step (log scale) for each net and implementation, GEMM floor
    marked, and the speed-up of gpubp over the obvious NumPy step.  Returns
    None when matplotlib is missing (the reason is the caller's to print)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed (pip install 'gpubp[bench]'): no plot"
    steps = [r for r in report.rows if r.group == "step"]
    cases = list(dict.fromkeys(r.case for r in steps))
    impls = [i for i in dict.fromkeys(r.impl for r in steps if r.median_s) if not i.startswith("GEMM floor")]
    if not impls:
        return "no training step was timed: no plot"
    missing = {r.impl: r.note for r in steps if not r.median_s and r.impl not in impls}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(1, len(impls))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x = np.arange(len(cases))
    for k, impl in enumerate(impls):
        vals = [next((r.median_s for r in steps if r.case == c and r.impl == impl and r.median_s), np.nan)
                for c in cases]
        ax.bar(x + (k - (len(impls) - 1) / 2) * width, np.array(vals) * 1e3, width, label=impl,
               color=colors[k % len(colors)])
    for dev, style in (("numpy", "-"), ("cupy", "--")):
        for i, c in enumerate(cases):
            f = next((r.median_s for r in steps if r.case == c and r.impl == f"GEMM floor {dev}" and r.median_s), None)
            if f:
                ax.hlines(f * 1e3, i - 0.45, i + 0.45, colors="black", linestyles=style, linewidth=2,
                          label=f"GEMM floor {dev}" if i == 0 else None)
    ax.set_yscale("log")
    def short(c):   # "[784, 30, 10] b10 mse" → "784-30-10\nbatch 10\nmse"
        net, rest = c.split("] ")
        B, loss = rest.split(" ", 1)
        return f"{net.strip('[').replace(', ', '-')}\nbatch {B[1:]}\n{loss.replace('cross_entropy', 'cross-entropy')}"
    ax.set_xticks(x)
    ax.set_xticklabels([short(c) for c in cases], fontsize=8)
    if missing:
        ax.text(0.01, 0.99, "\n".join(f"{k}: {v}" for k, v in missing.items()), transform=ax.transAxes,
                fontsize=7, va="top", ha="left", color="dimgray", wrap=True)
    ax.set_ylabel("time per SGD step (ms, log scale)")
    ax.set_title("One training step: gpubp against baselines (black: GEMM floor)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.94))
    ax.grid(axis="y", which="both", alpha=0.3)
    # speed-up over the obvious NumPy step
    ref = {c: next((r.median_s for r in steps if r.case == c and r.impl == "obvious numpy" and r.median_s), None)
           for c in cases}
    for impl in (i for i in impls if i != "obvious numpy"):
        vals = [ref[c] / next((r.median_s for r in steps if r.case == c and r.impl == impl and r.median_s), np.nan)
                if ref[c] else np.nan for c in cases]
        ax2.plot(x, vals, "o-", label=impl, color=colors[(impls.index(impl)) % len(colors)])
    ax2.axhline(1.0, color="gray", linewidth=1)
    ax2.set_yscale("log")
    ax2.set_xticks(x)
    ax2.set_xticklabels([short(c) for c in cases], fontsize=6)
    ax2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax2.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x" if v in (0.2, 0.5, 2, 5) else ""))
    ax2.set_ylabel("speed-up over the obvious NumPy step (log scale)")
    ax2.set_title("Speed-up (higher is better)")
    ax2.legend(fontsize=8)
    ax2.grid(which="both", alpha=0.3)
    fig.suptitle(f"gpubp {__version__} on {report.machine.get('cpu')} ({report.machine.get('cores')} cores); "
                 f"GPU: {report.machine.get('gpu_peaks') or report.machine.get('cuda')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write(report: Report, out_dir) -> dict:
    """Write bench.json, bench.md and bench.png into ``out_dir``; returns their paths (and a note)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "bench.json"), "table": os.path.join(out_dir, "bench.md"),
             "plot": os.path.join(out_dir, "bench.png")}
    with open(paths["json"], "w") as f:
        json.dump(report.to_json(), f, indent=1, default=float)
    with open(paths["table"], "w") as f:
        f.write(format_table(report) + "\n")
    note = plot(report, paths["plot"])
    if note:
        paths.pop("plot")
        paths["note"] = note
    return paths


def failures(report: Report) -> list[Row]:
    return [r for r in report.rows if r.failed]


def summary(report: Report) -> list[str]:
    """The headline numbers: gpubp's ratio to its floor and its speed-up over the
    baselines per net; first, any case that failed."""
    lines = [f"FAILED: {r.case} / {r.impl}: {r.note.removeprefix('FAILED ')}" for r in failures(report)]
    steps = [r for r in report.rows if r.group == "step" and r.median_s]
    for case in dict.fromkeys(r.case for r in steps):
        by = {r.impl: r for r in steps if r.case == case}
        for backend in ("numpy", "cupy", "cupy graph"):
            g = by.get(f"gpubp {backend}")
            if not g:
                continue
            parts = [f"{case}: gpubp {backend} {_fmt_time(g.median_s)}"]
            if g.floor_ratio:
                parts.append(f"{g.floor_ratio:.2f}x its GEMM floor")
            for other in ("obvious numpy", "torch cpu", "torch cuda"):
                o = by.get(other)
                if o and (o.device == g.device or other == "obvious numpy"):
                    parts.append(f"{o.median_s / g.median_s:.2f}x the speed of {other}")
            lines.append(", ".join(parts))
    return lines


def pytest_case(benchmark, case: Case):
    """Run one case under pytest-benchmark (``benchmarks/``): skip with the
    reason if unavailable, check, then time.  pytest-benchmark's timer is the
    CPU's, so GPU calls are wrapped with a stream synchronisation."""
    import pytest
    if case.fn is None:
        pytest.skip(case.unavailable)
    if case.check is not None:
        case.check()
    fn = case.fn
    if case.device == "gpu":
        import cupy

        def fn(f=case.fn):
            f()
            cupy.cuda.get_current_stream().synchronize()
    benchmark.extra_info.update({"impl": case.impl, "device": case.device, "flops": case.flops,
                                 "bytes": case.bytes, "floor": list(case.floor) if case.floor else None})
    benchmark.group = case.case
    benchmark(fn)
