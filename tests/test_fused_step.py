"""The fused training step (kernels/fused_step.cu, issue 22): whole SGD steps in one launch.

Kernel level: the exact .cu source on the emulated device against gpubp.reference.fused_step (the
float64 composition of the per-kernel references) on awkward nets and batches, both costs, f32 and
f64, momentum and decay, weights in global or in shared memory, a short last batch, bad row numbers;
the launcher's refusals and its shared-memory arithmetic.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from gpubp import reference
from gpubp.cuda import launchers, sources
from gpubp.cuda.dryrun import recording_kernels
from gpubp.cuda.emulator import compiler_available
from gpubp.testing import assert_close

pytestmark = pytest.mark.skipif(not compiler_available(), reason="the emulator needs a C++ compiler (g++)")

KERNELS = ("fused_step_ce", "fused_step_mse")
#: (sizes, B, rows in the launch): widths 1 and 100, one to four layers, batch 1, a short last batch
CASES = [
    ([7, 5, 3], 4, 10),
    ([6, 1, 4, 2], 3, 3),
    ([13, 17, 9, 5], 5, 12),
    ([1, 1], 1, 3),
    ([9, 100, 7], 7, 7),
    ([3, 2, 4, 2, 3], 2, 5),
    ([33, 7], 16, 40),
]


def _net(rng, sizes, dtype, momentum, n=20):
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    Y = rng.uniform(size=(n, sizes[-1])).astype(dtype)
    W = [None] + [(rng.standard_normal((sizes[l - 1], sizes[l])) / np.sqrt(sizes[l - 1])).astype(dtype)
                  for l in range(1, len(sizes))]
    b = [None] + [rng.standard_normal(sizes[l]).astype(dtype) for l in range(1, len(sizes))]
    vW = [None] + [(0.1 * rng.standard_normal(w.shape)).astype(dtype) for w in W[1:]] if momentum else None
    vb = [None] + [(0.1 * rng.standard_normal(x.shape)).astype(dtype) for x in b[1:]] if momentum else None
    return X, Y, W, b, vW, vb


def _copy(layers):
    return None if layers is None else [None] + [x.copy() for x in layers[1:]]


@pytest.fixture(scope="module")
def ks():
    return sources.emulated_kernels()


@pytest.mark.parametrize("keep_weights", [False, True], ids=["weights-global", "weights-shared"])
@pytest.mark.parametrize("momentum", [False, True], ids=["plain", "momentum+decay"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("sizes, B, total", CASES, ids=[f"{s}-B{b}-{t}rows" for s, b, t in CASES])
def test_fused_steps_match_the_reference(ks, sizes, B, total, kernel, dtype, momentum, keep_weights):
    rng = np.random.default_rng(sum(sizes) + B + total)
    X, Y, W, b, vW, vb = _net(rng, sizes, dtype, momentum)
    idx = rng.integers(0, len(X), total).astype(np.int64)
    steps = -(-total // B)
    hyper = dict(eta=0.7, lmbda=0.01 if momentum else 0.0, mu=0.9 if momentum else 0.0)
    W0, b0, vW0, vb0 = _copy(W), _copy(b), _copy(vW), _copy(vb)
    loss = np.full(steps * B, 7.0, dtype)                      # entries past a short last batch stay 7
    want_loss = loss.copy()
    launchers.fused_step(ks, kernel, X, Y, idx, W, b, vW, vb, loss, B=B, keep_weights=keep_weights, **hyper)
    reference.fused_step(kernel, X, Y, idx, W0, b0, vW0, vb0, want_loss, B=B, **hyper)
    for l in range(1, len(sizes)):
        assert_close(W[l], W0[l], dtype, what=f"W{l} after {steps} fused steps")
        assert_close(b[l], b0[l], dtype, what=f"b{l} after {steps} fused steps")
        if momentum:
            assert_close(vW[l], vW0[l], dtype, what=f"vW{l}")
            assert_close(vb[l], vb0[l], dtype, what=f"vb{l}")
    assert_close(loss, want_loss, dtype, what="the per-sample costs")
    assert (loss[total:] == 7).all()


def test_k_steps_in_one_launch_equal_k_launches_of_one_step(ks):
    rng = np.random.default_rng(3)
    sizes, B = [11, 6, 4], 3
    X, Y, W, b, vW, vb = _net(rng, sizes, np.float64, momentum=True)
    idx = rng.permutation(len(X)).astype(np.int64)[:14]          # 5 steps, the last of 2 rows
    W1, b1, vW1, vb1 = _copy(W), _copy(b), _copy(vW), _copy(vb)
    loss_all, loss_one = np.zeros(15), np.zeros(15)
    launchers.fused_step(ks, "fused_step_ce", X, Y, idx, W, b, vW, vb, loss_all, B=B, eta=0.5, lmbda=1e-3, mu=0.8)
    for k in range(5):
        launchers.fused_step(ks, "fused_step_ce", X, Y, np.ascontiguousarray(idx[k * B:(k + 1) * B]), W1, b1, vW1,
                             vb1, loss_one[k * B:(k + 1) * B], B=B, eta=0.5, lmbda=1e-3, mu=0.8)
    for l in (1, 2):
        np.testing.assert_array_equal(W[l], W1[l])
        np.testing.assert_array_equal(vb[l], vb1[l])
    np.testing.assert_array_equal(loss_all, loss_one)


def test_a_row_number_outside_the_data_gives_a_nan_cost_and_reads_nothing(ks):
    rng = np.random.default_rng(4)
    X, Y, W, b, _, _ = _net(rng, [5, 4, 3], np.float32, momentum=False)
    idx = np.array([0, -1, 3, len(X)], np.int64)
    loss = np.zeros(4, np.float32)
    launchers.fused_step(ks, "fused_step_ce", X, Y, idx, W, b, None, None, loss, B=4, eta=0.1)
    assert np.isnan(loss[[1, 3]]).all() and np.isfinite(loss[[0, 2]]).all()


def test_more_than_48_kib_of_activations_raises_the_kernels_limit(ks):
    """A batch whose a_l and δ_l take 126 KiB: the launcher raises max_dynamic_shared_size_bytes (the
    emulator refuses the launch otherwise, as a GPU does)."""
    rng = np.random.default_rng(5)
    sizes, B = [4, 1000, 2], 8
    X, Y, W, b, _, _ = _net(rng, sizes, np.float64, momentum=False)
    need = launchers.fused_step_smem(sizes, B, 8)
    assert need == 2 * B * 1002 * 8 > 48 * 1024
    launch = launchers.prepare_fused_step(ks, "fused_step_mse", X, Y, np.arange(B, dtype=np.int64), W, b, None,
                                          None, None, B=B, eta=0.2, keep_weights=False)
    assert launch.shared_mem == need and launch.fn.max_dynamic_shared_size_bytes >= need
    W0, b0 = _copy(W), _copy(b)
    launch()
    reference.fused_step("fused_step_mse", X, Y, np.arange(B), W0, b0, None, None, None, B=B, eta=0.2)
    assert_close(W[1], W0[1], np.float64, what="W1 of a 1000-wide layer")


def test_keep_weights_is_chosen_by_the_per_block_ceiling():
    """[784, 30, 10] in f32, two steps a launch: W and b (95 KB) fit a block on sm_90 (227 KiB) and on sm_86
    (99 KiB) beside the activations, and with momentum (190 KB) only on sm_90; nothing fits sm_75 (64 KiB).
    A launch of one step reads the weights where they are (a copy in and out would not pay)."""
    log = []
    rng = np.random.default_rng(6)
    sizes, B = [784, 30, 10], 10
    X, Y, W, b, vW, vb = _net(rng, sizes, np.float32, momentum=True, n=2 * B)
    idx = np.arange(2 * B, dtype=np.int64)
    one = launchers.prepare_fused_step(recording_kernels(log), "fused_step_ce", X, Y, idx[:B], W, b, None, None,
                                       None, B=B, eta=0.1)
    assert one.args[-1] == 0 and one.shared_mem == launchers.fused_step_smem(sizes, B, 4)
    chosen = {}
    for arch in ("sm_90", "sm_86", "sm_75"):
        ks = recording_kernels(log, arch=arch)
        for mom in (False, True):
            launch = launchers.prepare_fused_step(ks, "fused_step_ce", X, Y, idx, W, b, vW if mom else None,
                                                  vb if mom else None, None, B=B, eta=0.1)
            chosen[arch, mom] = launch.args[-1] == 1
            assert launch.shared_mem == launchers.fused_step_smem(sizes, B, 4, bool(launch.args[-1]), mom)
    assert chosen == {("sm_90", False): True, ("sm_90", True): True, ("sm_86", False): True,
                      ("sm_86", True): False, ("sm_75", False): False, ("sm_75", True): False}


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(W=[None] + [np.zeros((2, 2))] * 5, b=[None] + [np.zeros(2)] * 5),
     "5 layers; the fused step takes 1 to 4"),
    (lambda a: a.update(B=0), "B (rows a step) must be a positive int"),
    (lambda a: a.update(idx=np.arange(3, dtype=np.int32)), "idx must be a non-empty C-contiguous 1-D int64"),
    (lambda a: a.update(idx=np.arange(0, dtype=np.int64)), "idx must be a non-empty"),
    (lambda a: a.update(loss=np.zeros(5)), "loss has 5 elements but 2 steps of 3 rows write 6"),
    (lambda a: a.update(mu=0.9), "mu = 0.9 needs momentum buffers"),
    (lambda a: a.update(Y=np.zeros((20, 4))), "Y has 4 columns but the output layer has 3 units"),
    (lambda a: a.update(loss=a["W"][1].reshape(-1)[:6]), "W1 overlaps loss in memory"),
    (lambda a: a.update(X=np.zeros((20, 7), np.float32)), "Y is float64 but X is float32"),
    (lambda a: a.update(kernel="fused_step_softmax"), "kernel must be 'fused_step_mse' or 'fused_step_ce'"),
])
def test_the_launcher_refuses_what_the_kernel_would_misread(ks, change, message):
    rng = np.random.default_rng(7)
    X, Y, W, b, _, _ = _net(rng, [7, 5, 3], np.float64, momentum=False)
    args = dict(kernel="fused_step_ce", X=X, Y=Y, idx=np.arange(5, dtype=np.int64), W=W, b=b, vW=None, vb=None,
                loss=np.zeros(6), B=3, eta=0.1, mu=0.0)
    change(args)
    kernel = args.pop("kernel")
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        launchers.prepare_fused_step(ks, kernel, **args)


def test_a_batch_too_large_for_shared_memory_is_refused_naming_the_sum():
    log = []
    ks = recording_kernels(log, arch="sm_75")                   # 64 KiB a block
    rng = np.random.default_rng(8)
    X, Y, W, b, _, _ = _net(rng, [10, 1000, 10], np.float32, momentum=False)
    with pytest.raises(ValueError, match=r"a batch of 10 rows of \[10, 1000, 10\] needs 80800 B of shared memory "
                                         r".* more than the 65024 B a block has on this device \(sm_75\)"):
        launchers.prepare_fused_step(ks, "fused_step_ce", X, Y, np.arange(10, dtype=np.int64), W, b, None, None,
                                     None, B=10, eta=0.1)
    with pytest.raises(ValueError, match=r"keeping the weights of \[10, 1000, 10\] in shared memory takes"):
        launchers.prepare_fused_step(ks, "fused_step_ce", X, Y, np.arange(2, dtype=np.int64), W, b, None, None,
                                     None, B=2, eta=0.1, keep_weights=True)
    assert not log                                              # nothing launched


# -- the model: fit, step() and the stepper on the fused step ---------------------------------------

from gpubp import MLP, InputError, SaturationWarning, TrainingDiverged      # noqa: E402
from gpubp import plan as gplan                                               # noqa: E402

#: (sizes, batch, rows): widths 1, 7, 30 and 100, three layers and more, batch 1, a batch that does not divide n
FIT_CASES = [
    ([12, 7, 4], 10, 53),
    ([12, 30, 1], 1, 104),
    ([20, 100, 7, 3], 9, 100),
    ([5, 1, 7, 30, 2], 4, 101),
]


def _data(sizes, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, sizes[0])), rng.integers(0, max(2, sizes[-1]), n) if sizes[-1] > 1 else \
        rng.integers(0, 2, n)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes, B, n", FIT_CASES, ids=[f"{s}-B{b}-n{n}" for s, b, n in FIT_CASES])
def test_fit_on_the_fused_step_equals_numpy_fit(sizes, B, n, dtype, loss):
    """At least 100 steps, momentum and weight decay, K steps a launch: the weights and the epoch losses
    of NumPy's fit, to float32's tolerance in f32 and 1e-12 in f64."""
    X, y = _data(sizes, n)
    epochs = -(-100 // -(-n // B))                                   # >= 100 steps
    hyper = dict(epochs=epochs, batch_size=B, lr=0.3, momentum=0.8, weight_decay=1e-3, progress=False)
    a = MLP(sizes, loss=loss, backend="numpy", dtype=dtype, seed=2)
    b = MLP(sizes, loss=loss, backend="emulated", dtype=dtype, seed=2, backend_options={"fused_step": True})
    ha, hb = a.fit(X, y, **hyper), b.fit(X, y, **hyper)
    assert "training step: the fused step" in b.backend_reason
    tol = dict(rtol=1e-12) if dtype == np.float64 else {}
    for l in range(1, len(sizes)):
        assert_close(b.W[l], a.W[l], dtype, what=f"W{l} after {epochs * -(-n // B)} steps", **tol)
        assert_close(b.b[l], a.b[l], dtype, what=f"b{l}", **tol)
    assert_close(np.array(hb.loss), np.array(ha.loss), dtype, what="the epoch losses", **tol)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_k_steps_a_launch_and_one_give_the_same_weights(momentum):
    X, y = _data([9, 6, 3], 47)
    nets = {}
    for K in (1, 5, 32):
        net = MLP([9, 6, 3], backend="emulated", dtype=np.float32, seed=4,
                  backend_options={"fused_step": True, "steps_per_launch": K})
        net.fit(X, y, epochs=3, batch_size=4, lr=0.5, momentum=momentum, weight_decay=1e-4, progress=False)
        nets[K] = net
    for K in (5, 32):                 # the same arithmetic in the same order: the same bits
        for l in (1, 2):
            np.testing.assert_array_equal(nets[K].W[l], nets[1].W[l])
            np.testing.assert_array_equal(nets[K].b[l], nets[1].b[l])


def test_fit_launches_once_per_k_steps(launched):
    net = MLP([9, 6, 3], backend="emulated", seed=4, backend_options={"steps_per_launch": 4})
    X, y = _data([9, 6, 3], 30)
    net.fit(X, y, epochs=2, batch_size=3, lr=0.5, progress=False)     # 10 steps an epoch: launches of 4, 4, 2
    fused = [name for name in launched if name.startswith("fused_step")]
    assert fused == ["fused_step_mse_f32"] * 6


def test_a_divergence_is_reported_at_its_step_inside_a_launch():
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 4)), rng.integers(0, 3, 40)
    said = []
    for backend in ("numpy", "emulated"):
        net = MLP([4, 5, 3], loss="cross_entropy", backend=backend, seed=0)
        with pytest.raises(TrainingDiverged) as err:
            net.fit(X, y, epochs=3, batch_size=5, lr=3e38, progress=False)
        said.append(str(err.value))
    assert "training step: the fused step" in net.backend_reason
    assert said[1] == said[0] and said[0].startswith("the training loss became nan at epoch 1, step ")


def test_the_saturation_warning_reads_the_last_batch_after_fused_steps():
    X, y = _data([5, 6, 3], 40)
    net = MLP([5, 6, 3], loss="cross_entropy", backend="emulated", seed=1)
    with pytest.warns(SaturationWarning, match=r"100\.0% of the sigmoids of the last batch saturated"):
        net.fit(X, y, epochs=3, batch_size=8, lr=1e30, progress=False)
    assert "training step: the fused step" in net.backend_reason


def test_step_runs_the_fused_kernel_and_equals_numpy():
    rng = np.random.default_rng(7)
    a = MLP([5, 4, 3], backend="numpy", dtype=np.float64, seed=8)
    b = MLP([5, 4, 3], backend="emulated", dtype=np.float64, seed=8)
    for _ in range(4):
        X, y = rng.random((6, 5)), rng.integers(0, 3, 6)
        assert b.step(X, y, 0.4, momentum=0.5) == pytest.approx(a.step(X, y, 0.4, momentum=0.5), rel=1e-12)
    assert "training step: the fused step" in b.backend_reason
    assert [op.name for op in next(iter(b._step_plans.values())).launches] == ["fused_step_mse_f64"]
    assert_close(b.W[2], a.W[2], np.float64, what="W2 after 4 fused step() calls", rtol=1e-12)


def test_where_the_fused_step_does_not_apply_the_per_kernel_step_runs_and_says_why():
    X, y = _data([6, 5, 4, 3, 3, 2], 20)
    net = MLP([6, 5, 4, 3, 3, 2], backend="emulated", seed=0)              # 5 layers: more than MAX_LAYERS
    net.fit(X, y, epochs=1, batch_size=5, lr=0.5, progress=False)
    assert net.backend_reason.endswith("training step: the per-kernel step (the fused step does not apply: "
                                       "5 layers, more than the 4 the fused step takes)")
    big = MLP([784, 100, 10], backend="emulated", seed=0)                  # 3.4 MFLOP a step at batch 10
    big.stepper(*big.to_device(*_data([784, 100, 10], 10)), lr=0.1)(np.arange(10))
    assert "above the 2 MFLOP one block does faster" in big.backend_reason
    own = MLP([6, 5, 2], backend="emulated", seed=0, backend_options={"gemm": "own"})
    own.fit(*_data([6, 5, 2], 10), epochs=1, batch_size=5, progress=False)
    assert own.backend_reason.endswith("(the fused step does not apply: gemm ask(s) for the per-kernel step)")
    p = gplan.plan([6, 5, 4, 3, 3, 2], 5, measure=False)
    assert "5 layers, more than the 4" in p.step and gplan.render(p).count("training step: the per-kernel step") == 1


def test_fused_step_true_insists_and_says_why_not():
    X, y = _data([6, 5, 4, 3, 3, 2], 20)
    net = MLP([6, 5, 4, 3, 3, 2], backend="emulated", seed=0, backend_options={"fused_step": True})
    with pytest.raises(InputError, match=r"fused_step=True: the fused step cannot run \[6, 5, 4, 3, 3, 2\] with "
                                         r"batches of 5: 5 layers, more than the 4"):
        net.fit(X, y, epochs=1, batch_size=5, progress=False)
    with pytest.raises(InputError, match=r"fused_step=True runs each step as one kernel; naive ask\(s\) for the "
                                         r"per-kernel step"):
        MLP([3, 2], backend="emulated", backend_options={"fused_step": True, "naive": True})
    with pytest.raises(InputError, match="backend option fused_step must be 'auto', True or False, got 'yes'"):
        MLP([3, 2], backend="emulated", backend_options={"fused_step": "yes"})
    with pytest.raises(InputError, match="backend option steps_per_launch must be a positive int"):
        MLP([3, 2], backend="emulated", backend_options={"steps_per_launch": 0})


def test_fused_step_false_keeps_the_per_kernel_step():
    net = MLP([6, 5, 2], backend="emulated", seed=0, backend_options={"fused_step": False})
    net.fit(*_data([6, 5, 2], 10), epochs=1, batch_size=5, progress=False)
    assert net.backend_reason.endswith("training step: the per-kernel step (fused_step=False)")


def test_plan_shows_one_launch_per_k_steps():
    p = gplan.plan([784, 30, 10], 10, device="h100", measure=False)
    assert [q.name for q in p.launches] == ["fused_step_ce_f32"] and p.steps_per_launch == 32
    (q,) = p.launches
    assert q.blocks == 1 and q.flops == launchers.fused_step_napkin((10, 320, 784, 30, 10), 4)[2]
    text = gplan.render(p)
    assert "per 32 steps (fit runs them in one launch: steps_per_launch): 1 launch (1 kernel" in text
    one = gplan.plan([784, 30, 10], 10, options={"steps_per_launch": 1}, measure=False)
    assert one.steps_per_launch == 1 and "per step: 1 launch (1 kernel" in gplan.render(one)
    l4 = gplan.plan([784, 30, 10], 10, device="l4", measure=False)         # sm_89: 99 KiB a block
    assert l4.launches[0].shared_mem > 48 * 1024                            # W1 and b1 kept: 95 KB + the batch


def test_a_batch_beyond_the_blocks_shared_memory_takes_the_per_kernel_step_and_says_so():
    """[4, 5000, 2] at batch 10 in float32: 1.2 MFLOP a step (small enough), but its activations and deltas
    take 400 KB, beyond the 227 KiB a block has on the emulated sm_90."""
    net = MLP([4, 5000, 2], backend="emulated", seed=0)
    net.fit(*_data([4, 5000, 2], 10), epochs=1, batch_size=10, progress=False)
    assert net.backend_reason.endswith("training step: the per-kernel step (the fused step does not apply: a batch "
                                       "of 10 needs 400,160 B of shared memory for its activations and deltas, more "
                                       "than the 231,936 B a block has (sm_90))")
