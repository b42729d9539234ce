"""The cases of the benchmark suite: what is timed, with the check that its
answer is right (a float64 reference) and its napkin math (bytes, flops).

    step     one SGD step (batch gathered, feedforward, backprop, update) for
             the nets in ``NETS``, both losses: gpubp on each backend; the GEMM
             floor (only the matrix products a step must do, on the same
             backend); the obvious NumPy step; PyTorch autograd when installed
    kernel   each fused op against the unfused array expression it replaces,
             with the napkin math: bytes moved and flops per call
    e2e      training throughput on the digits data (samples per second)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..backend import get_backend
from ..mlp import MLP
from ..testing import assert_close
from ..validation import check_targets

#: (sizes, batch) of the whole-step cases
NETS = [([784, 30, 10], 10), ([784, 256, 256, 10], 128), ([784, 1024, 1024, 10], 512)]
LOSSES = ("mse", "cross_entropy")
#: (B, I, O) of the kernel cases: the hidden layer of the largest net
KERNEL_SHAPE = (512, 1024, 1024)
ETA = 0.01


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
    X, Y, idx = batch(sizes, B, seed)
    label = net_label(sizes, B, loss)
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
                            flops=2 * B * I * O + n, math="dW = a_prev^T delta, db = sum_B delta",
                            unfused_expr="a_prev.T @ delta; delta.sum(0)"),
        "weight_grad_sgd": dict(fused=(B * I + B * O + 2 * I * O + 2 * O) * s,
                                unfused=(B * I + 2 * B * O + 6 * I * O + 6 * O) * s,
                                flops=2 * B * I * O + n + 2 * I * O + 2 * O,
                                math="W -= eta a_prev^T delta, b -= eta sum_B delta",
                                unfused_expr="dW = a_prev.T @ delta; W -= eta * dW; b -= eta * delta.sum(0)"),
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
    a_prev, delta = dev(rng.random((B, I))), dev(rng.standard_normal((B, O)) * 1e-2)
    W0, delta_out, dW, db = rng.standard_normal((I, O)), bk.empty((B, O), f32), bk.empty((I, O), f32), bk.empty(O, f32)
    W, bb = dev(W0), dev(np.zeros(O))
    z0 = bk.to_numpy(z).astype(np.float64)
    g64, a64 = bk.to_numpy(g).astype(np.float64), bk.to_numpy(a).astype(np.float64)
    a_prev64, delta64 = bk.to_numpy(a_prev).astype(np.float64), bk.to_numpy(delta).astype(np.float64)
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
    add("sigmoid_delta", "fused", lambda: bk.sigmoid_delta(g, a, delta_out),
        lambda: (bk.sigmoid_delta(g, a, delta_out), checked("sigmoid_delta", delta_out, g64 * a64 * (1 - a64))))
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
    add("weight_grad", "fused", lambda: bk.weight_grad(a_prev, delta, dW, db),
        lambda: (bk.weight_grad(a_prev, delta, dW, db), checked("dW", dW, a_prev64.T @ delta64), checked("db", db, delta64.sum(0))),
        floor=gemm)
    add("weight_grad", "unfused", lambda: (a_prev.T @ delta, delta.sum(axis=0)),
        lambda: checked("a_prev.T @ delta", a_prev.T @ delta, a_prev64.T @ delta64), floor=gemm)
    # weight gradient + SGD update (W drifts during timing; the check uses fresh copies)
    W_ref = W0 - ETA * (a_prev64.T @ delta64)

    def fused_sgd_check():
        W1, b1 = dev(W0), dev(np.zeros(O))
        bk.weight_grad_sgd(a_prev, delta, W1, b1, eta=ETA)
        checked("W after fused update", W1, W_ref)
        checked("b after fused update", b1, -ETA * delta64.sum(0))

    def unfused_sgd(W1=W, b1=bb):
        W1 -= ETA * (a_prev.T @ delta)
        b1 -= ETA * delta.sum(axis=0)

    def unfused_sgd_check():
        W1, b1 = dev(W0), dev(np.zeros(O))
        unfused_sgd(W1, b1)
        checked("W after unfused update", W1, W_ref)

    add("weight_grad_sgd", "fused", lambda: bk.weight_grad_sgd(a_prev, delta, W, bb, eta=ETA), fused_sgd_check, floor=gemm)
    add("weight_grad_sgd", "unfused", unfused_sgd, unfused_sgd_check, floor=gemm)
    # the floor of both: the one GEMM
    cases.append(Case("kernel", gemm[0], gemm[1], device,
                      lambda: bk.matmul(a_prev.T, delta, out=dW),
                      lambda: (bk.matmul(a_prev.T, delta, out=dW), checked("GEMM", dW, a_prev64.T @ delta64)),
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
