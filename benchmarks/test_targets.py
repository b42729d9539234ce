"""The performance targets, measured by the suite in one run, side by side.

    NumPy step <= 1.10x its GEMM floor for [784, 256, 256, 10]/128 and
    [784, 1024, 1024, 10]/512, <= 2.0x for [784, 30, 10]/10; faster than the
    obvious NumPy step and than PyTorch CPU autograd (when installed) at every
    size.

A quiet machine is assumed: OpenBLAS degrades badly when another process
takes one of its cores.
"""
import pytest

from gpubp import bench

TARGET = {(784, 30, 10): 2.0, (784, 256, 256, 10): 1.10, (784, 1024, 1024, 10): 1.10}


@pytest.fixture(scope="module")
def report():
    return bench.run(backends=["numpy"], groups=("step",), log=lambda line: None)


@pytest.mark.parametrize("net", bench.NETS, ids=[str(s) for s, _ in bench.NETS])
@pytest.mark.parametrize("loss", bench.LOSSES)
def test_numpy_step_targets(benchmark, report, net, loss):
    sizes, B = net
    rows = {r.impl: r for r in report.rows if r.case == bench._net_label(sizes, B, loss) and r.median_s}
    benchmark.pedantic(lambda: None, rounds=1)  # the timing is the suite's; this records the row
    g = rows["gpubp numpy"]
    benchmark.extra_info.update({k: (v.median_s if v else None) for k, v in rows.items()})
    assert g.floor_ratio <= TARGET[tuple(sizes)], f"{sizes}/{B} {loss}: {g.floor_ratio:.2f}x the GEMM floor"
    assert g.median_s < rows["obvious numpy"].median_s, "slower than the obvious NumPy step"
    if "torch cpu" in rows:
        assert g.median_s < rows["torch cpu"].median_s, "slower than PyTorch CPU autograd"
