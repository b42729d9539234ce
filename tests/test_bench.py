"""The benchmark suite's machinery: its checks catch wrong answers, its napkin
math is right, its GPU columns say why they are empty.  (Timings themselves
are the suite's business, in benchmarks/, never asserted here.)"""
import json
import re

import numpy as np
import pytest

from gpubp import MLP, bench
from gpubp.bench.report import MAX_LINE, line_widths, row_line, terminal
from gpubp.device import cuda_status, for_command_line


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
        assert all(c.bytes and c.flops is not None for c in gpu)       # the gather moves bytes, no FLOPs


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
    flat, why = " ".join(out.split()), for_command_line(why)     # lines are wrapped at 200 characters
    assert (f"GPU: {why}" if ok else f"GPU rows are empty: {why}") in flat
    assert flat.count(why) == 1                                 # the reason once, not per row
    assert "backend='numpy'" not in out                         # the fix as a flag on the command line
    summary = next(line for line in out.splitlines() if line.startswith("12-6-3 b4 mse "))
    m = re.match(r"12-6-3 b4 mse +numpy +[\d.]+ [mun]?s(?: ±\d+%)? +([\d.]+)([~?]?) ", summary)
    assert m and (float(m.group(1)) > 1 or m.group(2)), summary    # x floor above 1, or marked as noise
    assert "| step | [12, 6, 3] b4 mse | gpubp numpy | cpu |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.json").exists()


def test_an_interrupted_bench_keeps_the_rows_it_timed_and_says_where_it_stopped(monkeypatch, tmp_path, capsys):
    """Ctrl-C, or SIGTERM (a time limit), mid-suite: the rows timed so far are written, marked incomplete,
    and the command exits 130 naming the files."""
    from gpubp.bench import suite
    from gpubp.cli import main
    run_cases, groups = suite.run_cases, []

    def cut_short(cases, *a, **k):
        groups.append(cases[0].case)
        if len(groups) == 2:
            raise KeyboardInterrupt("SIGTERM")          # what gpubp bench turns a SIGTERM into
        return run_cases(cases, *a, **k)
    monkeypatch.setattr(suite, "run_cases", cut_short)
    assert main(["bench", "--quick", "--sizes", "12,6,3:4", "--groups", "step", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    data = json.loads((tmp_path / "bench.json").read_text())
    timed = [r for r in data["rows"] if r["median_s"]]
    assert timed and {r["case"] for r in data["rows"]} == {groups[0]}     # the first comparison, whole
    assert data["machine"]["interrupted"] == (f"interrupted by SIGTERM after {len(data['rows'])} row(s); the "
                                              f"cases after them did not run")
    assert (tmp_path / "bench.md").read_text().startswith(f"**Incomplete:** {data['machine']['interrupted']}.")
    assert f"{data['machine']['interrupted']}: the rows timed are in {tmp_path / 'bench.json'}" in err


def test_the_check_records_an_interrupted_bench_part_and_keeps_its_rows(monkeypatch, tmp_path):
    from gpubp.check import run as check_run
    row = bench.Row("kernel", "k", "fused cupy", "gpu", median_s=1e-5)
    monkeypatch.setattr(bench, "run", lambda **kw: bench.Report(rows=[row], machine={
        "interrupted_by": "SIGTERM", "interrupted": "interrupted by SIGTERM after 1 row(s); the cases after them "
                                                    "did not run"}))
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        check_run.bench_part(tmp_path, log=lambda line: None)
    assert [r["impl"] for r in json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"]] == ["fused cupy"]


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
    """Every op fused, naive and unfused; the GEMM ops also on the main loop's earlier steps (the ladder)."""
    cases = bench.kernel_cases("emulated", shape=(9, 33, 17))
    by_op = {}
    for c in cases:
        by_op.setdefault(c.case.split(" ")[0], []).append(c.impl)
    for op in ("gather_rows", "sigmoid_delta", "output_delta", "bias_sigmoid"):
        assert sorted(by_op[op]) == ["fused emulated", "naive emulated", "unfused emulated"], op
    for op in ("gemm_bias_sigmoid", "gemm_sigmoid_delta", "weight_grad", "weight_grad_sgd"):
        assert by_op[op] == ["fused emulated", "1-stage emulated", "reg-staged emulated", "naive emulated",
                             "unfused emulated"], op
    assert {"GEMM a_prev@W B=9 I=33 O=17", "GEMM delta@W^T B=9 I=33 O=17"} <= {c.case for c in cases}
    for c in cases:
        c.check()                   # the fast and the naive kernels against the float64 expressions
        assert c.bytes and (c.flops or c.case.startswith("gather_rows"))    # a gather moves bytes, no FLOPs


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


# -- what the bench says about noise --------------------------------------------------------------------
def _row(impl, times, case="[784, 30, 10] b10 mse", group="step", timed_with=1, **kw):
    """A timed row from its per-round times (seconds), as run_cases leaves it."""
    q25, q75 = np.percentile(times, [25, 75])
    return bench.Row(group, case, impl, "cpu", median_s=float(np.median(times)), spread_s=float(q75 - q25),
                     samples=list(times), timed_with=timed_with, **kw)


def _step_report(gpubp, floor, obvious, public):
    rows = [_row("gpubp numpy", gpubp, floor=("[784, 30, 10] b10 mse", "GEMM floor numpy")),
            _row("GEMM floor numpy", floor),
            _row("obvious numpy", obvious, floor=("[784, 30, 10] b10 mse", "GEMM floor numpy")),
            _row("gpubp numpy step()", public, floor=("[784, 30, 10] b10 mse", "GEMM floor numpy"))]
    report = bench.Report(rows=rows, machine={"cores": 2, "load_avg_start": [1.9, 1.2, 0.8]})
    from gpubp.bench.report import fill_ratios
    fill_ratios(report.rows)
    return report, terminal(report)


def _summary_cells(text):
    line = next(l for l in text.splitlines() if l.startswith("784-30-10 b10 mse  "))
    return re.split(r"\s{2,}", line.strip())


def test_a_clean_row_shows_its_ratios_unmarked():
    rng = np.random.default_rng(0)
    base = 1e-4 * (1 + 0.02 * rng.standard_normal(40))
    report, text = _step_report(base, base / 2.5, base * 1.2, base * 1.1)
    net, backend, time, floor, vs, step = _summary_cells(text)
    assert re.fullmatch(r"\d+(\.\d)? us", time) and (floor, vs, step) == ("2.50", "1.20x", "1.10")
    assert "~  within the noise" not in text and "not a result" not in text and "noisy" not in text


def test_a_noisy_row_is_marked_and_named_not_read_as_a_difference():
    """The issue's '11.3 ms ±25.5 ms': a row whose spread is larger than its median, and a peer whose
    claimed difference (1.05x) lies inside the spread of the round-by-round ratios."""
    rng = np.random.default_rng(1)
    base = 1e-4 * (1 + 0.02 * rng.standard_normal(40))
    noisy = base * np.where(np.arange(40) % 2, 1.0, 4.0)             # every other round 4x slower: IQR 300%
    peer = noisy * 1.05 * np.where(np.arange(40) % 3, 0.9, 1.6)       # its ratio to gpubp: 0.95 or 1.7
    report, text = _step_report(noisy, base / 2.5, peer, noisy * 1.1)
    gpubp = report.rows[0]
    gpubp.noisy = report.rows[3].noisy = True
    text = terminal(report)
    net, backend, time, floor, vs, step = _summary_cells(text)
    assert re.fullmatch(r"\d+ us ±\d+%", time), time                  # the time carries its spread
    assert int(time.split("±")[1][:-1]) == round(100 * gpubp.spread_s / gpubp.median_s) > 100
    assert vs.endswith("x~")                                           # within the noise: no claim
    flat = " ".join(text.split())
    assert "~ within the noise: the middle half of the round-by-round ratios spans 1" in flat
    assert "2 row(s) stayed noisy after a rerun" in flat and "784-30-10 b10 mse / gpubp numpy ±" in flat
    assert "load average 1.9, 1.2, 0.8 on 2 cores" in flat


def test_x_floor_below_1_and_a_step_faster_than_the_fit_step_are_flagged_not_shown_as_results():
    rng = np.random.default_rng(2)
    base = 1e-4 * (1 + 0.01 * rng.standard_normal(40))
    report, text = _step_report(base, base / 0.99, base * 1.3, base * 0.67)     # x floor 0.99, step() 0.67
    net, backend, time, floor, vs, step = _summary_cells(text)
    assert floor == "0.99?" and step == "0.67?" and vs == "1.30x"
    flat = " ".join(text.split())
    assert "784-30-10 b10 mse numpy: step() 0.67: net.step(X, y) does the fit step's work and more" in flat
    assert "784-30-10 b10 mse / gpubp numpy: x floor 0.99: it timed faster than its own GEMMs alone" in flat
    lines = bench.summary(report)
    assert "0.99x its GEMM floor (not a result: below what the work allows)" in lines[0]


def test_a_noisy_group_is_timed_again_and_a_row_still_noisy_says_so(monkeypatch):
    calls = {"n": 0}

    def jittery():                   # every third call 20 ms instead of 0: rounds differ wildly
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            import time
            time.sleep(0.02)
    steady = lambda: sum(range(100))         # noqa: E731
    rows = bench.run_cases([bench.Case("kernel", "k", "jittery", "cpu", jittery),
                            bench.Case("kernel", "k", "steady", "cpu", steady)], quick=True)
    jit, st = rows
    assert jit.reruns == 1 and st.reruns == 1                   # the group, timed a second time
    assert jit.noisy and jit.spread_s / jit.median_s > bench.timing.NOISY
    assert jit.timed_with == st.timed_with and len(jit.samples) == len(st.samples)     # paired rounds
    line = row_line(jit)
    assert "noisy, after a rerun" in line


def test_progress_lines_keep_their_columns_with_long_case_names():
    rows = [bench.Row("dp", "[784, 1024, 1024, 10] b512 cross_entropy data-parallel", "gpubp numpy 2 ranks", "cpu",
                      median_s=0.0123, spread_s=0.0004),
            bench.Row("kernel", "weight_grad_sgd B=512 I=1024 O=1024", "fused numpy", "cpu", median_s=2e-3,
                      spread_s=1e-5),
            bench.Row("step", "[784, 30, 10] b10 mse", "gpubp numpy", "cpu", median_s=4e-5, spread_s=1e-6)]
    widths = line_widths(rows)
    lines = [row_line(r, widths) for r in rows]
    starts = {line.index(r.impl) for line, r in zip(lines, rows)}
    assert len(starts) == 1                                     # every implementation in one column
    times = {line.index(" ±") for line in lines}
    assert len(times) == 1                                      # and every time's spread too
    assert "784-1024-1024-10 b512 ce data-parallel" in lines[0] and max(map(len, lines)) <= MAX_LINE


def test_the_footnote_names_each_row_not_run_with_its_own_reason():
    rows = [bench.Row("step", c, impl, dev, note=f"unavailable: {why}") for c in ("[8, 4, 2] b4 mse", "[8, 4, 2] b4 "
            "cross_entropy") for impl, dev, why in (("gpubp cupy", "gpu", "CuPy is not installed; use backend='numpy'"),
                                                   ("torch cpu", "cpu", "PyTorch is not installed (pip install torch)"))]
    rows += [bench.Row("step", "[8, 4, 2] b4 mse", "gpubp numpy", "cpu", median_s=1e-5),
             bench.Row("kernel", "sigmoid_delta B=1", "fused cupy", "gpu", note="unavailable: CuPy is not installed; "
                                                                                  "use backend='numpy'"),
             bench.Row("kernel", "output_delta B=1", "fused cupy", "gpu", median_s=1e-6)]
    text = terminal(bench.Report(rows=rows), said=("CuPy is not installed; use backend='numpy'",))
    lines = [l for l in text.splitlines() if l.startswith("not run: ")]
    assert lines == ["not run: gpubp cupy [step], fused cupy [kernel] (1 of 2): the reason above",
                     "not run: torch cpu [step]: PyTorch is not installed (pip install torch)"]
    from gpubp.bench.stats import not_run
    assert not_run(rows)[1] == ("torch cpu [step]", "PyTorch is not installed (pip install torch)")


def test_the_plot_draws_error_bars_and_names_each_row_not_run(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes
    from gpubp.bench.plot import plot
    bars, texts = [], []
    real_bar = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", lambda self, *a, **k: bars.append(k.get("yerr")) or
                        real_bar(self, *a, **k))
    import matplotlib.figure
    real_text = matplotlib.figure.Figure.text
    monkeypatch.setattr(matplotlib.figure.Figure, "text", lambda self, x, y, s, *a, **k: texts.append(s) or
                        real_text(self, x, y, s, *a, **k))
    rng = np.random.default_rng(3)
    base = 1e-4 * (1 + 0.1 * rng.standard_normal(30))
    case = "[784, 30, 10] b10 mse"
    rows = [_row("gpubp numpy", base), _row("GEMM floor numpy", base / 2),
            _row("obvious numpy", base * 1.2 * (1 + 0.1 * rng.standard_normal(30))),
            bench.Row("step", case, "gpubp cupy", "gpu", note="unavailable: CuPy is not installed"),
            bench.Row("step", case, "torch cpu", "cpu", note="unavailable: PyTorch is not installed")]
    assert plot(bench.Report(rows=rows, machine={"cpu": "x86_64", "cores": 2}), tmp_path / "b.png") is None
    time_err = np.asarray(bars[0])                       # gpubp numpy's bar: below and above the median, in ms
    q25, q75 = np.percentile(base, [25, 75])
    np.testing.assert_allclose(time_err[:, 0], [(np.median(base) - q25) * 1e3, (q75 - np.median(base)) * 1e3])
    speed_err = np.asarray(bars[-1])                     # the speed-up panel's bar of gpubp numpy
    assert speed_err.shape == (2, 1) and (speed_err > 0).all()
    note = texts[-1]
    assert "error bars: the middle half" in note
    assert "not run: gpubp cupy [step]: CuPy is not installed" in note
    assert "not run: torch cpu [step]: PyTorch is not installed" in note


def test_every_line_of_gpubp_bench_stays_within_200_characters(monkeypatch, tmp_path, capsys):
    """Long reasons, long case names and the dp rows' notes (222 characters before) are wrapped."""
    from gpubp.cli import main
    long_why = "CuPy found no usable CUDA driver/device (" + "cudaErrorNoDevice: " * 8 + "); else use backend='numpy'"
    dp_row = bench.Row("dp", "[784, 1024, 1024, 10] b512 cross_entropy data-parallel", "gpubp numpy 2 ranks", "cpu",
                       median_s=0.05, spread_s=0.001, floor_ratio=0.6,
                       note="all-reduce 12% of the step (8.4 MB a step, the link 3.2 GB/s); 1 BLAS thread(s) a "
                            "rank; MPI over host buffers: " + "the numpy backend's arrays live on the host " * 3)
    rows = [dp_row, bench.Row("step", "[784, 30, 10] b10 mse", "gpubp cupy", "gpu", note=f"unavailable: {long_why}")]

    def fake_run(log=print, **kw):
        log(row_line(dp_row, line_widths(rows)))
        return bench.Report(rows=rows, machine={})
    monkeypatch.setattr(bench, "run", fake_run)
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 200
    assert "all-reduce 12% of the step" in out and "cudaErrorNoDevice" in out


def test_dp_progress_line_is_short():
    from gpubp.bench import dp
    lines = []
    row = dp.placeholders([([784, 1024, 1024, 10], 512)])[1]
    assert row.case == "[784, 1024, 1024, 10] b512 cross_entropy data-parallel"
    row.median_s, row.spread_s = 0.05, 0.001
    row.note = "all-reduce 12% of the step (8.4 MB a step, the link 3.2 GB/s); " + "x" * 150
    lines.append(row_line(row, line_widths(dp.placeholders())))
    assert len(lines[0]) <= 200


# -- where BLAS threads pay ------------------------------------------------------------------------------
def test_threads_group_times_one_thread_against_the_default_and_checks_both():
    from gpubp import blas
    cases = bench.thread_cases([20, 8, 3], 16)
    default = blas.default_threads()
    assert [c.impl for c in cases] == ["1 thread"] + ([f"{default} threads"] if default > 1 else [])
    for c in cases:
        assert c.pin_threads and c.threads in (1, default)
        c.check()                                    # the step on that many threads is the float64 step
    rows = bench.run_cases(cases, quick=True)
    assert all(r.median_s > 0 and r.threads == c.threads for r, c in zip(rows, cases))
    if default > 1:
        text = terminal(bench.Report(rows=rows))
        line = next(l for l in text.splitlines() if l.startswith("20-8-3 b16"))
        assert line.split()[-2] == "1"                       # gpubp uses 1 thread for this small step


def test_pinned_threads_hold_inside_gpubps_own_choice():
    from gpubp import blas
    if blas.default_threads() is None or blas.default_threads() < 2:
        pytest.skip("the BLAS has one thread here")
    get = blas._libs()[0][0]
    seen = []
    net = MLP([784, 1024, 1024, 10], backend="numpy", seed=0)        # big: gpubp's own choice is the default
    orig = net.backend.matmul

    def spy(*a, **k):
        seen.append(get())
        return orig(*a, **k)
    net.backend.matmul = spy
    X = np.random.default_rng(0).random((512, 784)).astype(np.float32)
    with blas.pinned(1):
        net.forward(X[:64])
    assert seen and set(seen) == {1}
