"""The benchmark suite's machinery: its checks catch wrong answers, its napkin
math is right, its GPU columns say why they are empty.  (Timings themselves
are the suite's business, in benchmarks/, never asserted here.)"""
import json

import numpy as np
import pytest

from gpubp import MLP, bench
from gpubp.device import cuda_status


def test_obvious_step_is_one_sgd_step():
    sizes, B = [6, 5, 3], 4
    X, Y, idx = bench.batch(sizes, B)
    net = MLP(sizes, loss="mse", backend="numpy", dtype=np.float64, seed=0)
    Ws, bs = net.weights, net.biases
    bench.obvious_step(Ws, bs, X, Y, idx, bench.ETA, "mse")
    net.step(X[idx], Y[idx], lr=bench.ETA)
    for a, b in zip(Ws + bs, net.weights + net.biases):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_step_flops_count_every_product():
    # [784, 30, 10], B = 10: forward 784·30 + 30·10, dW the same, BP2 30·10; 2 flops each
    assert bench.step_flops([784, 30, 10], 10) == 2 * 10 * (2 * (784 * 30 + 30 * 10) + 30 * 10)


def test_napkin_math_of_fused_against_unfused():
    n = bench.kernel_napkin(512, 1024, 1024)
    assert n["sigmoid_delta"]["fused"] == 3 * 512 * 1024 * 4          # read g, a; write delta
    assert n["sigmoid_delta"]["unfused"] == 8 * 512 * 1024 * 4        # three temporaries written and read back
    assert n["weight_grad_sgd"]["fused"] < n["weight_grad_sgd"]["unfused"]
    assert n["weight_grad"]["flops"] == 2 * 512 * 1024 * 1024 + 512 * 1024


def test_checks_catch_a_wrong_step(monkeypatch):
    cases = bench.step_cases([8, 6, 3], 5, "cross_entropy", backends=("numpy",), torch_devices=())
    by = {c.impl: c for c in cases}
    for c in cases:
        c.check()                                  # all right as they are
    monkeypatch.setattr(bench.cases, "ETA", bench.ETA * 1.01)   # now every implementation steps 1% too far
    with pytest.raises(AssertionError, match="after one step"):
        by["obvious numpy"].check()


def test_kernel_cases_check_on_cpu_and_report_gpu_napkin_math():
    cases = bench.kernel_cases("numpy", shape=(33, 65, 17))
    assert {c.impl for c in cases} == {"fused numpy", "unfused numpy", "GEMM numpy"}
    for c in cases:
        c.check()
    ok, why = cuda_status()
    gpu = bench.kernel_cases("cupy", shape=(33, 65, 17))
    if not ok:
        assert all(c.fn is None and why.split(" (")[0] in c.unavailable for c in gpu)
        assert all(c.bytes and c.flops for c in gpu)


def test_quick_run_writes_table_json_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    report = bench.run(backends=["numpy"], nets=[([20, 8, 3], 4)], quick=True, groups=("step",),
                       log=lambda line: None)
    impls = {r.impl for r in report.rows}
    assert {"gpubp numpy", "GEMM floor numpy", "obvious numpy", "gpubp cupy"} <= impls
    g = next(r for r in report.rows if r.impl == "gpubp numpy")
    floor = next(r for r in report.rows if r.impl == "GEMM floor numpy" and r.case == g.case)
    assert g.median_s > 0 and g.floor_ratio == pytest.approx(g.median_s / floor.median_s)
    ok, why = cuda_status()
    if not ok:
        gpu_row = next(r for r in report.rows if r.impl == "gpubp cupy")
        assert gpu_row.median_s is None and gpu_row.note == f"unavailable: {why}"
    paths = bench.write(report, tmp_path)
    data = json.loads(open(paths["json"]).read())
    assert len(data["rows"]) == len(report.rows) and data["machine"]["numpy"] == np.__version__
    assert open(paths["table"]).read().startswith("| group | case | implementation")
    from gpubp.bench.plot import DPI, FIGSIZE
    assert _png_size(paths["plot"]) == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


def test_parse_sizes():
    assert bench.parse_sizes("784,30,10:10;5,3:2") == [([784, 30, 10], 10), ([5, 3], 2)]
    with pytest.raises(ValueError, match="784,30,10:10"):
        bench.parse_sizes("784,30,10")


def test_bench_command_quick(tmp_path, capsys):
    from gpubp.cli import main
    assert main(["bench", "--quick", "--sizes", "12,6,3:4", "--groups", "step", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    ok, why = cuda_status()
    assert (f"GPU: {why}" if ok else f"GPU rows are empty: {why}") in out
    assert out.count(why) == 1                                  # the reason once, not per row
    summary = next(line for line in out.splitlines() if line.startswith("12-6-3 b4 mse "))
    assert summary.split()[3] == "numpy" and float(summary.split()[6]) > 1     # x floor
    assert "| step | [12, 6, 3] b4 mse | gpubp numpy | cpu |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.json").exists()


def test_bench_refuses_the_emulated_backend(capsys):
    from gpubp.cli import main
    assert main(["bench", "--backend", "emulated"]) == 2
    assert "the emulated device is for correctness" in capsys.readouterr().err


def test_a_failing_case_is_reported_not_timed_and_the_rest_still_run():
    def wrong():
        raise AssertionError("W1 update after one step: 3 of 18 elements differ\n(details)")
    calls = []
    good = bench.Case("kernel", "k", "good", "cpu", lambda: calls.append(1), lambda: None)
    bad = bench.Case("kernel", "k", "bad", "cpu", lambda: pytest.fail("a case that failed its check was timed"), wrong)
    boom = bench.Case("kernel", "k2", "boom", "cpu", lambda: 1 / 0, None)
    rows = bench.run_cases([good, bad, boom], quick=True)
    assert rows[0].median_s > 0 and not rows[0].failed and calls
    assert rows[1].failed and rows[1].median_s is None
    assert rows[1].note == "FAILED its check: AssertionError: W1 update after one step: 3 of 18 elements differ"
    assert rows[2].failed and rows[2].note.startswith("FAILED while timed: ZeroDivisionError")
    lines = bench.summary(bench.Report(rows=rows))
    assert lines[:2] == ["FAILED: k / bad: its check: AssertionError: W1 update after one step: 3 of 18 elements "
                         "differ", "FAILED: k2 / boom: while timed: ZeroDivisionError: division by zero"]


def test_bench_command_exits_1_when_a_case_fails(monkeypatch, tmp_path, capsys):
    from gpubp.cli import main
    row = bench.Row("kernel", "k", "fused cupy", "gpu", failed=True, note="FAILED its check: AssertionError: x")
    monkeypatch.setattr(bench, "run", lambda **kw: bench.Report(rows=[row], machine={}))
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "FAILED: k / fused cupy: its check: AssertionError: x" in captured.out
    assert "1 case(s) FAILED" in captured.err


def test_e2e_case_builds_and_checks_on_numpy():
    pytest.importorskip("sklearn")
    case = bench.e2e_case("numpy", epochs=1)
    assert case.fn is not None, case.unavailable
    assert case.items == len(__import__("gpubp").datasets.digits().X_train)


def test_kernel_cases_time_the_naive_twins_and_all_check_on_the_emulated_device():
    cases = bench.kernel_cases("emulated", shape=(9, 33, 17))
    by_op = {}
    for c in cases:
        by_op.setdefault(c.case.split(" ")[0], []).append(c.impl)
    for op in ("sigmoid_delta", "output_delta", "bias_sigmoid", "gemm_bias_sigmoid", "gemm_sigmoid_delta",
               "weight_grad", "weight_grad_sgd"):
        assert sorted(by_op[op]) == ["fused emulated", "naive emulated", "unfused emulated"], op
    assert {"GEMM a_prev@W B=9 I=33 O=17", "GEMM delta@W^T B=9 I=33 O=17"} <= {c.case for c in cases}
    for c in cases:
        c.check()                   # the fast and the naive kernels against the float64 expressions
        assert c.bytes and c.flops


def test_napkin_math_comes_from_the_launchers_records():
    from gpubp.cuda import launchers
    n = bench.kernel_napkin(7, 5, 3, itemsize=8)
    assert set(n) == set(launchers.SPECS)
    assert n["output_delta"]["fused"] == (3 * 7 * 3 + 7) * 8        # read a, y; write delta; a loss per row


def _png_size(path):
    import struct
    head = open(path, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("with_gpu", [False, True], ids=["cpu-only", "with-gpu-rows"])
def test_plot_draws_at_its_size_with_and_without_gpu_rows(tmp_path, with_gpu):
    pytest.importorskip("matplotlib")
    from gpubp.bench.plot import DPI, FIGSIZE, plot
    rows = []
    for case, base in (("[784, 30, 10] b10 mse", 4e-5), ("[784, 256, 256, 10] b128 ce", 1e-3)):
        rows += [bench.Row("step", case, "gpubp numpy", "cpu", median_s=base),
                 bench.Row("step", case, "GEMM floor numpy", "cpu", median_s=base / 2),
                 bench.Row("step", case, "obvious numpy", "cpu", median_s=base * 1.1)]
        if with_gpu:
            rows += [bench.Row("step", case, "gpubp cupy", "gpu", median_s=base / 5),
                     bench.Row("step", case, "gpubp cupy graph", "gpu", median_s=base / 20),
                     bench.Row("step", case, "GEMM floor cupy", "gpu", median_s=base / 30)]
        else:
            rows.append(bench.Row("step", case, "gpubp cupy", "gpu", note="unavailable: CuPy is not installed"))
    path = tmp_path / "bench.png"
    assert plot(bench.Report(rows=rows, machine={"cpu": "x86_64", "cores": 2}), path) is None
    assert _png_size(path) == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    assert path.stat().st_size > 20_000


def test_dp_group_times_one_and_two_ranks():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'gpubp[mpi]')")
    from gpubp.bench import dp
    if not dp.mpiexec():
        pytest.skip("mpiexec is not installed")
    rows = dp.rows(nets=[([20, 8, 3], 16)], quick=True, log=lambda line: None)
    assert [r.impl for r in rows] == ["gpubp numpy 1 rank", "gpubp numpy 2 ranks"]
    assert all(r.median_s > 0 and not r.failed for r in rows)
    two = rows[1]
    assert two.note.startswith("all-reduce ") and "the link" in two.note and two.bytes == (20 * 8 + 8 + 8 * 3 + 3 + 1) * 4
    assert two.floor_ratio == pytest.approx(two.median_s / rows[0].median_s)
