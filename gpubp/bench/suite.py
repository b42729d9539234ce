"""The suite: build the cases, run them group by group, fill in the ratios."""
from __future__ import annotations

from ..device import cuda_status
from .cases import (LOSSES, NETS, THREAD_BATCHES, THREAD_NETS, Case, e2e_case, kernel_cases, net_label, step_cases,
                    step_flops, thread_cases)
from .report import Report, _load, fill_ratios, line_widths, machine_info, row_line
from .timing import gpu_peaks, run_cases


GROUPS = ("step", "kernel", "e2e", "threads", "dp", "host")


def parse_sizes(text):
    """'784,30,10:10;784,256,256,10:128' → [([784, 30, 10], 10), ...]; ValueError naming the bad part."""
    form = "takes nets as 'w0,w1,...:batch' separated by ';', e.g. '784,30,10:10;784,256,256,10:128'"
    nets = []
    for part in text.split(";"):
        if not part.strip():
            continue
        pieces = part.split(":")
        try:
            if len(pieces) != 2:
                raise ValueError
            sizes, B = [int(s) for s in pieces[0].split(",")], int(pieces[1])
        except ValueError:
            raise ValueError(f"--sizes {form}; {part!r} is not one") from None
        if len(sizes) < 2 or min(sizes) < 1 or B < 1:
            raise ValueError(f"--sizes {form}; in {part!r} every width and the batch must be positive integers "
                             f"and there must be at least 2 widths")
        nets.append((sizes, B))
    if not nets:
        raise ValueError(f"--sizes {form}; got {text!r}, which names no net")
    return nets


def run(backends=None, nets=None, quick=False, groups=GROUPS, log=print) -> Report:
    """Run the suite and return its rows; ``log`` receives one line per case."""
    ok, why = cuda_status()
    if backends is None:
        backends = ["numpy"] + (["cupy"] if ok else [])
    gpu_note = None if ok else why
    report = Report(machine=machine_info())
    peaks = gpu_peaks() if ok else (None, None, None)
    report.machine["gpu_peaks"] = peaks[2] if ok else None
    nets = nets or NETS
    cases = []
    torch_devices = ["cpu"] + (["cuda"] if ok else [])
    if "step" in groups:
        for sizes, B in nets:
            for loss in LOSSES:
                cases += step_cases(sizes, B, loss, backends=backends, torch_devices=torch_devices)
                if "cupy" not in backends and gpu_note:
                    label = net_label(sizes, B, loss)
                    cases.append(Case("step", label, "gpubp cupy", "gpu", None, unavailable=gpu_note,
                                      flops=step_flops(sizes, B)))
    if "kernel" in groups:
        for name in dict.fromkeys(list(backends) + ["cupy"]):
            cases += kernel_cases(name)
    if "e2e" in groups:
        cases += [e2e_case(name, epochs=2 if quick else 5) for name in backends]
    if "threads" in groups and "numpy" in backends:
        grid = [(sizes, B) for sizes in THREAD_NETS for B in THREAD_BATCHES] if nets is NETS else nets
        for sizes, B in grid:
            cases += thread_cases(sizes, B)
    dp_nets = None
    if "dp" in groups:
        from . import dp
        dp_nets = [n for n in nets if n in dp.NETS] or (None if nets is NETS else nets[:1])
    # the progress lines' columns, wide enough for every case of the run (the dp rows' too)
    widths = line_widths(cases + (dp.placeholders(dp_nets) if "dp" in groups else []))
    by_case = {}
    for case in cases:                     # the cases of one comparison run together
        by_case.setdefault((case.group, case.case), []).append(case)
    try:
        for group in by_case.values():
            for row in run_cases(group, quick, peaks[:2]):
                report.rows.append(row)
                line = row_line(row, widths)
                if line:
                    log(line)
        if "host" in groups:
            from . import host
            report.rows += host.rows(nets=nets, quick=quick, log=log)
        if "dp" in groups:
            from . import dp
            report.rows += dp.rows(nets=dp_nets, quick=quick,
                                   on_row=lambda row: log(row_line(row, widths)) if row_line(row, widths) else None)
    except KeyboardInterrupt as e:         # Ctrl-C (or SIGTERM, as gpubp bench takes it): keep the rows timed
        report.machine["interrupted_by"] = str(e) or "Ctrl-C"
        report.machine["interrupted"] = (f"interrupted by {report.machine['interrupted_by']} after "
                                         f"{len(report.rows)} row(s); the cases after them did not run")
        log(report.machine["interrupted"])
    report.machine["load_avg_end"] = _load()
    fill_ratios(report.rows)
    return report



def pytest_case(benchmark, case: Case):
    """Run one case under pytest-benchmark (``benchmarks/``): skip with the
    reason if unavailable, check, then time.  pytest-benchmark's timer is the
    CPU's, so GPU calls are wrapped with a stream synchronisation."""
    import pytest
    if case.fn is None:
        pytest.skip(case.unavailable)
    if case.check is not None:
        case.check()
    fn = case.fn
    if case.device == "gpu":
        import cupy

        def fn(f=case.fn):
            f()
            cupy.cuda.get_current_stream().synchronize()
    benchmark.extra_info.update({"impl": case.impl, "device": case.device, "flops": case.flops,
                                 "bytes": case.bytes, "floor": list(case.floor) if case.floor else None})
    benchmark.group = case.case
    benchmark(fn)
