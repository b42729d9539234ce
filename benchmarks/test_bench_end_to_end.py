"""Training throughput on the digits data (samples per second)."""
import pytest

from gpubp import bench

CASES = [bench.e2e_case(name) for name in ("numpy", "cupy")]


@pytest.mark.parametrize("case", CASES, ids=[c.impl for c in CASES])
def test_fit_digits(benchmark, case):
    benchmark.extra_info["samples_per_call"] = case.items
    bench.pytest_case(benchmark, case)
