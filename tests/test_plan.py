"""Prepared steps and ``gpubp plan`` (issue 19): a step's launches are validated once and replayed; the
plan lists exactly what a step launches on the emulated device (whose launch path is the cupy
backend's); the model's figures (SM fill, FLOPs, bytes) are those of the launches."""
import json

import numpy as np
import pytest

from gpubp import MLP, InputError
from gpubp import plan as gplan
from gpubp.cli import main
from gpubp.cuda import sources
from gpubp.cuda.dryrun import dry_run_backend, entries
from gpubp.testing import assert_close

OPTIONS = [{}, {"gemm": "own"}, {"fused_update": False}, {"gemm": "own", "naive": True}, {"cublas_weight_grad": True}]


def _emulated_step_launches(sizes, B, options, launched, loss="cross_entropy"):
    """(kernel names, array-module calls) of one fit step on the emulated device, after the first."""
    from gpubp.cuda.backend import _Recorder
    net = MLP(sizes, loss=loss, backend="emulated", seed=0, backend_options=options)
    rng = np.random.default_rng(0)
    step = net.stepper(*net.to_device(rng.random((2 * B, sizes[0])), rng.integers(0, sizes[-1], 2 * B)), lr=0.1)
    order = step.order(np.arange(2 * B))
    losses = np.zeros((2, B), net.dtype)
    step(order[:B], loss_row=losses[0])                # recorded
    launched.clear()
    recorder = _Recorder(net.backend.xp)
    net.backend.xp = recorder
    try:
        step(order[B:], loss_row=losses[1])             # replayed
    finally:
        net.backend.xp = recorder.module
    launched.stop()
    return list(launched), recorder.calls


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("sizes, B", [([784, 30, 10], 10), ([13, 17, 9, 5], 7)])
def test_plan_lists_exactly_what_a_step_launches_on_the_emulated_device(sizes, B, options, launched):
    kernels, calls = _emulated_step_launches(sizes, B, options, launched)
    planned = gplan.plan(sizes, B, options=options, measure=False)
    assert [q.name for q in planned.launches if q.kind == "kernel"] == kernels
    if not options.get("fused_update", True) or options.get("cublas_weight_grad"):
        # the unfused update and cuBLAS's dW are array expressions: the plan lists their array-module calls
        assert set(calls) <= {q.name for q in planned.launches if q.kind == "array"} | {"sum", "multiply"}
    else:
        assert [q.name for q in planned.launches if q.kind == "array"] == calls


def test_the_first_layer_forward_of_the_seed_network_is_split_over_13_blocks_of_132_sms():
    """One output tile (10 × 30) with a reduction of 784: it was one block walking all of it (issue 19's
    plan showed it); split-K gives 13 blocks of 64 k each (gpubp.cuda.launchers.gemm_splits)."""
    p = gplan.plan([784, 30, 10], 10, options={"gemm": "own"}, device="h100", measure=False)
    first = next(q for q in p.launches if q.name == "gemm_bias_sigmoid_f32")
    assert first.grid == (1, 1, 13) and first.blocks == 13 and first.sm_fill == pytest.approx(13 / 132)
    assert first.flops == 2 * 10 * 784 * 30 + 4 * 10 * 30                  # launchers.SPECS' napkin at (10, 784, 30)
    assert first.bytes == (10 * 784 + 784 * 30 + 30 + 10 * 30) * 4
    names = [q.name for q in p.launches]
    assert names == ["gather_rows_f32", "gemm_bias_sigmoid_f32", "gemm_bias_sigmoid_f32", "output_delta_ce_f32",
                     "gemm_sigmoid_delta_f32", "weight_grad_sgd_f32", "weight_grad_sgd_f32"]
    assert p.device_us == pytest.approx(sum(q.modeled_us for q in p.launches))
    assert all(q.modeled_us >= gplan.FLOOR_US["eager"] for q in p.launches)


def test_plan_measures_the_host_cost_and_names_the_bound():
    p = gplan.plan([784, 30, 10], 10, options={"gemm": "own"}, device="h200")
    assert p.host_us > 0 and p.host_units == pytest.approx(p.host_us * 1e3 / p.int32_ns, rel=1e-9)
    assert p.bound == ("host" if p.host_us > p.device_us else "device")
    text = gplan.render(p)
    assert "host (measured here, every launch a no-op)" in text and "device (modeled)" in text
    assert "NVIDIA H200 SXM, sm_90, 132 SMs" in text


def test_a_dry_run_computes_nothing_and_logs_every_launch():
    dry = gplan.dry_step([6, 5, 3], 4, options={"gemm": "own"})
    before = dry.model.weights
    with dry.model.backend.no_op_arrays():
        dry(0)
    log = entries(dry.log)
    assert [e.name for e in log][-7:] == ["gather_rows_f32", "gemm_bias_sigmoid_f32", "gemm_bias_sigmoid_f32",
                                          "output_delta_ce_f32", "gemm_sigmoid_delta_f32", "weight_grad_sgd_f32",
                                          "weight_grad_sgd_f32"]
    for w, w0 in zip(dry.model.weights, before):
        np.testing.assert_array_equal(w, w0)
    assert log[1].shapes[:2] == [(4, 6), (6, 5)]      # the first forward GEMM's a_prev and W


# -- prepared steps -------------------------------------------------------------------------------------

def test_a_prepared_step_is_recorded_once_and_replayed(monkeypatch):
    net = MLP([7, 6, 4], backend="emulated", seed=2, backend_options={"gemm": "own"})
    asked = []
    raw = sources.KernelSet.raw_function           # every KernelSet's (the narrow GEMMs run on a variant)
    monkeypatch.setattr(sources.KernelSet, "raw_function", lambda ks, name: asked.append(name) or raw(ks, name))
    rng = np.random.default_rng(1)
    X, y = rng.random((30, 7)), rng.integers(0, 4, 30)
    step = net.stepper(*net.to_device(X, y), lr=0.3)
    for k in range(3):
        step(np.arange(k * 10, k * 10 + 10, dtype=np.int64))
    assert len(asked) == 7 and len(step.prepared) == 1          # the launches of one step, prepared once
    (prepared,) = step.prepared
    assert prepared.slots == ("idx",) and len(prepared.launches) == 7


@pytest.mark.parametrize("backend_options", [{}, {"gemm": "own"}, {"fused_update": False}])
def test_prepared_steps_give_the_weights_numpy_gives(backend_options):
    """Replays with new row indices, a short last batch (its own prepared step), per-sample cost rows."""
    rng = np.random.default_rng(3)
    X, y = rng.random((23, 9)), rng.integers(0, 3, 23)
    a = MLP([9, 8, 3], backend="numpy", dtype=np.float64, seed=4)
    b = MLP([9, 8, 3], backend="emulated", dtype=np.float64, seed=4, backend_options=backend_options)
    ha = a.fit(X, y, epochs=4, batch_size=5, lr=0.7, momentum=0.5, weight_decay=1e-3, progress=False)
    hb = b.fit(X, y, epochs=4, batch_size=5, lr=0.7, momentum=0.5, weight_decay=1e-3, progress=False)
    for wa, wb in zip(a.weights + a.biases, b.weights + b.biases):
        assert_close(wb, wa, np.float64, what="W, b after 20 prepared steps")
    np.testing.assert_allclose(hb.loss, ha.loss, rtol=1e-12)


def test_a_model_given_new_arrays_records_its_step_again():
    rng = np.random.default_rng(5)
    X, y = rng.random((10, 4)), rng.integers(0, 2, 10)
    a = MLP([4, 3, 2], backend="numpy", dtype=np.float64, seed=6)
    b = MLP([4, 3, 2], backend="emulated", dtype=np.float64, seed=6)
    sa, sb = a.stepper(*a.to_device(X, y), lr=0.5), b.stepper(*b.to_device(X, y), lr=0.5)
    idx = np.arange(10, dtype=np.int64)
    sa(idx), sb(idx)
    fresh = rng.standard_normal((4, 3))
    a.W[1], b.W[1] = fresh.copy(), fresh.copy()       # new arrays: the prepared step is bound to the old ones
    sa(idx), sb(idx)
    assert_close(b.W[1], a.W[1], np.float64, what="W1 after a step on the new array")
    assert len(sb.prepared) == 1 and sb.prepared[0].bound_to(b._params())


def test_step_replays_with_the_callers_x_in_place():
    """step()'s fast path reads the caller's X where it is: the prepared step's X is a slot."""
    rng = np.random.default_rng(7)
    a = MLP([5, 4, 3], backend="numpy", dtype=np.float64, seed=8)
    b = MLP([5, 4, 3], backend="emulated", dtype=np.float64, seed=8)
    for k in range(4):
        X, y = rng.random((6, 5)), rng.integers(0, 3, 6)
        assert b.step(X, y, 0.4) == pytest.approx(a.step(X, y, 0.4), rel=1e-12)
    assert len(b._step_plans) == 1
    assert_close(b.W[2], a.W[2], np.float64, what="W2 after 4 step() calls on 4 arrays")


def test_the_cost_row_of_fit_is_written_by_the_output_kernel():
    """fit collects per-sample costs, no mean launch a step: 6 kernels and the gather, nothing else."""
    rng = np.random.default_rng(9)
    net = MLP([6, 5, 2], backend=dry_run_backend([], gemm="own"), seed=0)
    X, Y = net.to_device(rng.random((8, 6)), rng.integers(0, 2, 8))
    step = net.stepper(X, Y, lr=0.1)
    order = step.order(np.arange(8))
    row = np.zeros(8, np.float32)
    step(order, loss_row=row)
    (prepared,) = step.prepared
    assert prepared.slots == ("idx", "loss")
    with pytest.raises(InputError, match="loss_row must be a C-contiguous float32 array of one cost per row"):
        step(order, loss_row=np.zeros(3, np.float32))


# -- the command --------------------------------------------------------------------------------------

def test_plan_command_prints_the_table_and_json(capsys):
    assert main(["plan", "--sizes", "784,30,10", "--batch", "10", "--backend-options", "gemm=own"]) == 0
    out = capsys.readouterr().out
    assert "gemm_bias_sigmoid_f32" in out and "1x1" in out and "0.8%" in out
    assert "per step: 7 launches (7 kernels, 0 array calls)" in out
    assert main(["plan", "--batch", "10", "--json", "--device", "a100", "--backend-options", "fused_step=false"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gpu"]["sms"] == 108 and data["sizes"] == [784, 30, 10]
    assert [q["name"] for q in data["launches"]][:3] == ["gather_rows_f32", "matmul", "bias_sigmoid_f32"]
    assert data["step"] == "the per-kernel step (fused_step=False)" and data["steps_per_launch"] == 1


@pytest.mark.parametrize("argv, message", [
    (["plan", "--backend-options", "gemm=bad"], "backend option gemm must be 'cublas', 'own' or 'auto'"),
    (["plan", "--backend-options", "{nope"], "not valid JSON"),
    (["plan", "--backend-options", "gemm"], "expected key=value pairs"),
    (["plan", "--device", "tpu"], "invalid choice: 'tpu'"),
])
def test_plan_command_refuses_bad_options(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2 and message in capsys.readouterr().err


def test_plan_on_the_current_device_without_one_says_why(capsys):
    from gpubp.device import cuda_status
    if cuda_status()[0]:
        pytest.skip("this machine has a CUDA device")
    assert main(["plan", "--device", "current"]) == 2
    assert "error: " in capsys.readouterr().err


def test_the_gpu_table_has_its_sources():
    for key, gpu in gplan.GPUS.items():
        assert gpu.sms > 0 and gpu.fp32_tflops > 0 and gpu.bandwidth_gbs > 0 and gpu.source
        assert gpu.arch in __import__("gpubp.cuda.nvrtc", fromlist=["SMS"]).SMS
    assert sources.kernel_names("gather")


@pytest.mark.parametrize("options", [{"gemm": "own", "fused_step": False}, {"fused_step": False}],
                         ids=["own GEMMs", "cuBLAS GEMMs"])
@pytest.mark.parametrize("sizes, B", [([784, 30, 10], 10), ([784, 256, 256, 10], 128), ([784, 1024, 1024, 10], 512)],
                         ids=["small", "mid", "large"])
def test_every_gemm_launch_of_the_bench_nets_has_enough_blocks_for_132_sms(sizes, B, options):
    """Issue 21's target, as gpubp plan shows it for a 132-SM GPU: each of gpubp's GEMM launches has at
    least min(132, FLOPs / 2 MFLOP) blocks (split-K where its output tiles alone are fewer: the mid net's
    first layer, 8 tiles for 51 MFLOP, runs 32 blocks)."""
    p = gplan.plan(sizes, B, options=options, device="h100", measure=False)
    gemms = [q for q in p.launches if q.name.startswith(("gemm_bias_sigmoid", "gemm_sigmoid_delta", "weight_grad"))]
    assert gemms
    for q in gemms:
        assert q.blocks >= min(132, q.flops / 2e6), f"{q.name} {q.grid}: {q.blocks} blocks for {q.flops / 1e6:.1f} MFLOP"


def test_a_narrow_f32_output_gets_the_narrow_tiles():
    """Where nothing was tuned, a GEMM launch whose output is at most 32 wide runs the 32×32 tile (4×4 a
    thread): the large net's 1024→10 layer is 16 tiles of 32 rows, each computing 10 of 32 columns, not 8
    of 64 rows computing 10 of 64; f64, wide outputs and tiles a user chose keep theirs."""
    from gpubp.cuda import launchers
    ks = sources.emulated_kernels()
    assert launchers.gemm_tiles(ks, "forward_gemm", np.float32, 512, 10) == {"TILE": 32, "MICRO": 4}
    assert launchers.gemm_tiles(ks, "weight_grad", np.float32, 1024, 10) == {"TILE": 32, "MICRO": 4}
    assert launchers.gemm_tiles(ks, "forward_gemm", np.float32, 512, 33) == {}
    assert launchers.gemm_tiles(ks, "forward_gemm", np.float64, 512, 10) == {}
    assert launchers.gemm_tiles(sources.emulated_kernels({"TILE": 128, "MICRO": 8}), "forward_gemm", np.float32,
                                512, 10) == {"TILE": 128, "MICRO": 8}
    p = gplan.plan([784, 1024, 1024, 10], 512, options={"gemm": "own", "fused_step": False}, device="h100",
                   measure=False)
    last = [q for q in p.launches if q.name == "gemm_bias_sigmoid_f32"][-1]
    assert last.grid[:2] == (1, 16) and last.block == (launchers.gemm_threads(launchers.NARROW_TILES, 4),)
    wide = [q for q in p.launches if q.name == "gemm_bias_sigmoid_f32"][0]
    assert wide.block == (launchers.gemm_threads({"TILE": 64, "MICRO": 8}, 4),)
