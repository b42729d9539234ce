"""Weight gradient (+ bias gradient, + fused SGD update) against ``A.T @ D``
plus a separate bias sum and update, beside the bare GEMM."""
import pytest

from gpubp import bench

CASES = [c for name in ("numpy", "cupy") for c in bench.kernel_cases(name)
         if c.case.startswith(("weight_grad", "GEMM"))]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.case}-{c.impl}" for c in CASES])
def test_weight_grad(benchmark, case):
    bench.pytest_case(benchmark, case)
