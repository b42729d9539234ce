"""Forward epilogue ``z = sigmoid(z + b)`` in place against ``1/(1+exp(-(z+b)))``."""
import pytest

from gpubp import bench

CASES = [c for name in ("numpy", "cupy") for c in bench.kernel_cases(name) if c.case.startswith("bias_sigmoid")]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.case}-{c.impl}" for c in CASES])
def test_bias_sigmoid(benchmark, case):
    bench.pytest_case(benchmark, case)
