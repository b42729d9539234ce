"""Fused sigmoid-derivative delta ``g*a*(1-a)`` against the unfused expression."""
import pytest

from gpubp import bench

CASES = [c for name in ("numpy", "cupy") for c in bench.kernel_cases(name) if c.case.startswith("sigmoid_delta")]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.case}-{c.impl}" for c in CASES])
def test_sigmoid_delta(benchmark, case):
    bench.pytest_case(benchmark, case)
