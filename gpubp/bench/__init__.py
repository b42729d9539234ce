"""The benchmark suite: CPU against GPU, fused kernels against unfused
expressions, every training step against its GEMM floor.

Every case is checked before it is timed (a mismatch raises), warmed up so
compilation and first-touch stay out of the numbers, then timed.  The same
case builders feed ``gpubp bench`` (no pytest needed) and the pytest-benchmark
files in ``benchmarks/``.  One module per job:

    cases     what is timed, its check against a float64 reference, its bytes and flops
    timing    CPU timing in interleaved rounds, GPU timing by CUDA events; run_cases
    stats     the spread of a ratio of two rows, the marks of ratios that are noise, rows not run
    report    the table, the JSON, the summary lines
    plot      bench.png
    suite     run(): the whole suite; parse_sizes; pytest_case for benchmarks/
"""
from .cases import (ETA, KERNEL_SHAPE, LOSSES, NETS, Case, batch, e2e_case, kernel_cases, kernel_napkin,
                    net_label, obvious_step, step_cases, step_flops, thread_cases)
from .report import Report, failures, format_table, machine_info, summary, terminal, unavailable, write
from .stats import mark, not_run, ratio_stats
from .suite import GROUPS, parse_sizes, pytest_case, run
from .timing import Row, gpu_peaks, run_cases, time_cpu_interleaved, time_gpu

__all__ = ["ETA", "KERNEL_SHAPE", "LOSSES", "NETS", "Case", "Row", "Report", "batch", "e2e_case", "kernel_cases",
           "kernel_napkin", "net_label", "obvious_step", "step_cases", "step_flops", "thread_cases", "mark",
           "not_run", "ratio_stats", "failures", "format_table", "machine_info", "summary", "terminal", "unavailable",
           "write", "GROUPS", "parse_sizes", "pytest_case", "run", "gpu_peaks", "run_cases", "time_cpu_interleaved",
           "time_gpu"]
