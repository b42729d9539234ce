"""Whole SGD steps: gpubp on each backend, its GEMM floor, the obvious NumPy
step and PyTorch autograd, for the nets of ``gpubp.bench.NETS``."""
import pytest

from gpubp import bench

CASES = [c for sizes, B in bench.NETS for loss in bench.LOSSES
         for c in bench.step_cases(sizes, B, loss, backends=("numpy", "cupy"), torch_devices=("cpu", "cuda"))]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.case}-{c.impl}" for c in CASES])
def test_step(benchmark, case):
    bench.pytest_case(benchmark, case)
