"""``gpubp check``: the parts in order, each PASS, FAIL or NOT RUN (with why).

    gpubp check --gpu --out DIR     on a CUDA machine: the cupy backend (no install step needed:
                                    ``PYTHONPATH=. python -m gpubp check --gpu --out DIR``)
    gpubp check --out DIR           here: the emulated device, and NVRTC if installed

part          with --gpu                                   without
environment   GPU, compute capability, driver/runtime/     the same facts; no device is not a failure
              CuPy/NVRTC versions, working backends;
              no usable device fails here, and the rest
              is not run
kernels       every kernel on the GPU                      every kernel on the emulated device
fit           cupy against NumPy, per backend option       emulated against NumPy
nvrtc         compile for every arch in ARCHS, budgets     the same (NOT RUN without the NVRTC wheel)
pytest        ``pytest -m gpu`` on the checkout's tests    NOT RUN (the CPU tests are ``pytest``)
sanitizers    compute-sanitizer's 4 tools over kernels     NOT RUN
bench         ``gpubp bench --quick`` into DIR/bench       NOT RUN (``gpubp bench --quick``)
tune          ``gpubp tune`` on the bench nets' GEMM       NOT RUN (times on the emulated device say
              shapes: the fastest tiles and split of each, nothing of a GPU's)
              its time against cuBLAS's (reported only:
              the device's tuning table is left as it is)

The report is DIR/check.json and DIR/check.md (and DIR/bench/ with --gpu): at
most 5 files.  The exit status is 0 when every part that ran passed.
"""
from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .._version import __version__
from ..device import cuda_environment, for_command_line
from . import report

#: what to do without a device, said where the device probe's message says "use backend='numpy'"
NO_GPU_FIX = "run gpubp check without --gpu for the CPU and emulated-device checks"

PARTS = ("environment", "kernels", "fit", "nvrtc", "pytest", "sanitizers", "bench", "tune")
ROOT = Path(__file__).resolve().parents[2]          # the checkout (gpubp/check/run.py)


def _part(name, status, why=None, summary=None, **extra) -> dict:
    return {"name": name, "status": status, "why": why, "summary": summary, **extra}


def environment(gpu: bool) -> dict:
    from ..cuda.emulator import compiler_available

    env = cuda_environment()
    env["backends"] = {"numpy": "available",
                       "emulated": "available" if compiler_available() else
                       "unavailable: no C++ compiler ($CXX, g++ or c++)",
                       "cupy": "available" if env["usable"] else f"unavailable: {env['status']}"}
    env["python"], env["numpy"], env["machine"] = platform.python_version(), np.__version__, platform.machine()
    dev = env.get("devices") or []
    if env["usable"]:
        d = dev[0]
        summary = (f"{d.get('name')} (compute capability {d.get('compute_capability')}, {d.get('sms')} SMs, "
                   f"{d.get('memory_gib')} GiB); CUDA runtime {env.get('runtime')}, driver {env.get('driver')}, "
                   f"CuPy {env.get('cupy')}, NVRTC {env.get('nvrtc')}")
        return _part("environment", "PASS", summary=summary, details=env)
    if gpu:
        return _part("environment", "FAIL", why=f"no CUDA device: {for_command_line(env['status'], NO_GPU_FIX)}",
                     details=env)
    return _part("environment", "PASS", summary=f"CPU check; the cupy backend is unavailable: {env['status']}",
                 details=env)


def kernels(gpu: bool, log) -> dict:
    from . import kernels as checks
    try:
        dev = checks.cupy_device() if gpu else checks.emulated_device()
    except Exception as e:
        return _part("kernels", "FAIL", why=f"{type(e).__name__}: {e}")
    rows = checks.run_all(dev, log=log)
    bad = [r for r in rows if not r["passed"]]
    n = sum(r["shapes"] for r in rows)
    return _part("kernels", "FAIL" if bad else "PASS", why=f"{len(bad)} of {len(rows)} failed" if bad else None,
                 summary=f"{len(rows) - len(bad)} of {len(rows)} kernel runs on the {dev.name} device agree with "
                         f"the float64 reference ({n} shapes in all, outputs NaN-poisoned)", rows=rows)


def fit(gpu: bool, log) -> dict:
    from . import fit as parity
    device = "cupy" if gpu else "emulated"
    rows = parity.run_all(device, log=log)
    bad = [r for r in rows if not r["passed"]]
    worst = max((r["max_abs_dW"] for r in rows if r["max_abs_dW"] is not None), default=0.0)
    return _part("fit", "FAIL" if bad else "PASS", why=f"{len(bad)} of {len(rows)} failed" if bad else None,
                 summary=f"{len(rows) - len(bad)} of {len(rows)} fits on {device} match NumPy after 20 steps "
                         f"(max |ΔW| {worst:.1e}), cuda_graph and gemm='own' included", rows=rows)


def nvrtc_part(log) -> dict:
    from ..cuda import nvrtc
    ok, why = nvrtc.available()
    if not ok:
        return _part("nvrtc", "NOT RUN", why=why)
    rows = []
    for arch in nvrtc.ARCHS:
        try:
            over = nvrtc.budget_violations(arch)
            rows.append({"arch": arch, "passed": not over, "problems": "; ".join(over)})
        except Exception as e:
            rows.append({"arch": arch, "passed": False, "problems": f"{type(e).__name__}: {e}"})
        log(f"  {arch}: {'PASS' if rows[-1]['passed'] else 'FAIL: ' + rows[-1]['problems']}")
    bad = [r for r in rows if not r["passed"]]
    return _part("nvrtc", "FAIL" if bad else "PASS", why=f"{len(bad)} arch(s) over budget" if bad else None,
                 summary=f"{why}: every kernel compiles for {', '.join(nvrtc.ARCHS)} within its budget"
                 if not bad else None, rows=rows)


_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def pytest_part(timeout: float = 600.0, root: Path = ROOT, log_path=None) -> dict:
    """``pytest -m gpu -v`` on ``root``'s tests/, in a child process; PASS when it exits 0 having passed some.
    Its output goes to ``log_path`` as it runs (a line a test), so a check killed in this part leaves which
    tests had passed or failed; once the run ends the log's tail is in the report and the file is removed."""
    tests = Path(root) / "tests"
    if not (tests / "test_kernels.py").is_file():
        return _part("pytest", "NOT RUN", why=f"no tests/ beside the package ({tests}): an installed gpubp; "
                                              f"run from a source checkout")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-rs", "-v", "-p", "no:cacheprovider", str(tests)]
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix="gpubp-pytest-", suffix=".log")
        os.close(fd)
    log_path = Path(log_path)
    with open(log_path, "w") as out_file:
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=subprocess.STDOUT, text=True, cwd=root, env=env)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return _part("pytest", "FAIL", why=f"pytest -m gpu did not finish in {timeout:.0f} s (its output so far: "
                                               f"{log_path})")
        except BaseException:                # interrupted: the child stops too, its log stays for the reader
            proc.kill()
            proc.wait()
            raise
    out = log_path.read_text(errors="replace")
    log_path.unlink()
    counts = {}
    for n, what in _COUNTS.findall(out.strip().splitlines()[-1] if out.strip() else ""):
        counts[what.rstrip("s") if what.startswith("error") else what] = int(n)
    ok = proc.returncode == 0 and counts.get("passed", 0) > 0
    summary = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no summary line"
    return _part("pytest", "PASS" if ok else "FAIL", why=None if ok else f"exit code {proc.returncode}: {summary}",
                 summary=f"pytest -m gpu: {summary}", details={"counts": counts, "output_tail": out[-8000:]})


def bench_part(out_dir, log) -> dict:
    from ..bench import failures, run, summary, write
    t0 = time.perf_counter()
    rep = run(quick=True, log=lambda line: log("  " + line))
    paths = write(rep, os.path.join(out_dir, "bench"))
    if rep.machine.get("interrupted"):       # the rows timed are written; the check records where it stopped
        raise KeyboardInterrupt(rep.machine["interrupted_by"])
    bad = failures(rep)
    lines = summary(rep)
    return _part("bench", "FAIL" if bad else "PASS", why=f"{len(bad)} case(s) FAILED" if bad else None,
                 summary=f"{len(rep.rows)} rows in {time.perf_counter() - t0:.0f} s, written to "
                         f"{', '.join(v for k, v in paths.items() if k != 'note')}",
                 details={"summary": lines, "gpu_peaks": rep.machine.get("gpu_peaks")})


def tune_part(log, bk=None, **tune_args) -> dict:
    """gpubp tune over every GEMM shape of the bench nets' steps (f32) on the cupy backend (``bk`` and
    ``tune_args``, a timer, device and CUDA version: the tests' dry run): a row per shape, own against
    cuBLAS.  The table is reported, not saved."""
    from .. import tune
    from ..backend import get_backend
    from ..bench.cases import NETS
    bk = bk if bk is not None else get_backend("cupy")[0]
    table = None
    for sizes, B in NETS:
        table = tune.tune(bk, sizes, B, table=table, log=lambda line: log("  " + line), **tune_args)
    from ..cuda.tuning import tiles_text
    rows = [{"shape": key, "tiles": tiles_text(e.tiles), "splits": e.splits, "own us": round(e.us, 2),
             "cuBLAS us": None if e.cublas_us is None else round(e.cublas_us, 2),
             "own / cuBLAS": round(e.us / e.cublas_us, 2) if e.cublas_us else None}
            for key, e in table.entries.items()]
    timed = [e for e in table.entries.values() if e.cublas_us]        # the shapes with a cuBLAS twin
    wins = sum(e.own_wins for e in timed)
    ratios = [e.us / e.cublas_us for e in timed]
    gmean = float(np.exp(np.mean(np.log(ratios)))) if ratios else float("nan")
    return _part("tune", "PASS", rows=rows,
                 summary=f"{len(rows)} GEMM shapes of the bench nets on {table.device}; gpubp's kernel at least as "
                         f"fast as cuBLAS (with its epilogue) on {wins} of the {len(ratios)} it was timed against, "
                         f"own / cuBLAS {gmean:.2f} (geometric mean); the weight gradients have no cuBLAS twin",
                 details={"device": table.device, "cuda": table.cuda, "gpubp": table.gpubp,
                          "entries": {k: vars(e) for k, e in table.entries.items()}})


def run(gpu: bool, out_dir, parts=PARTS, log=print) -> dict:
    """Run the parts (environment first, the others in the order ``parts`` gives them: with a time limit,
    what matters most first), write the report into ``out_dir`` before each and at the end, and return it."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)}; the parts are {', '.join(PARTS)}")
    t0 = time.perf_counter()
    result = {"gpubp": __version__, "gpu": gpu, "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "python": platform.python_version(), "numpy": np.__version__, "out": os.fspath(out_dir), "parts": []}
    no_device = None
    todo = sorted(dict.fromkeys(parts), key=lambda name: name != "environment")
    for i, name in enumerate(todo):
        result["pending"] = todo[i:]
        _write_so_far(result, out_dir, t0)     # a check killed in this part keeps the parts before it
        log(f"gpubp check: {name}")
        tp = time.perf_counter()
        try:
            part, no_device = _run_part(name, gpu, out_dir, no_device, log)
        except KeyboardInterrupt as e:         # Ctrl-C, or SIGTERM (gpubp check raises it as this): say where
            took = time.perf_counter() - tp
            result["parts"].append(_part(name, "FAIL", why=f"interrupted by {e or 'Ctrl-C'} after {took:.0f} s in "
                                                           f"this part (a time limit?)", seconds=round(took, 1)))
            result["pending"], result["interrupted"] = todo[i + 1:], True
            _write_so_far(result, out_dir, t0)
            raise
        part["seconds"] = round(time.perf_counter() - tp, 1)
        log(f"gpubp check: {name}: {part['status']}" + (f" ({part['why']})" if part.get("why") else
                                                         f": {part['summary']}" if part.get("summary") else ""))
        result["parts"].append(part)
    del result["pending"]
    result["paths"] = _write_so_far(result, out_dir, t0)
    return result


def _write_so_far(result, out_dir, t0) -> dict:
    """The report as it stands (check.md says INCOMPLETE while ``pending`` names parts not yet run)."""
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["passed"] = all(p["status"] != "FAIL" for p in result["parts"])
    return report.write(result, out_dir)


def _run_part(name, gpu, out_dir, no_device, log):
    """One part's result, and the reason later parts cannot run (no device), if this part found one."""
    if no_device and name != "environment":
        part = _part(name, "NOT RUN", why=no_device)
    elif name == "environment":
        part = environment(gpu)
        if gpu and part["status"] == "FAIL":
            no_device = "no CUDA device (the environment part says why)"
    elif name == "kernels":
        part = kernels(gpu, log)
    elif name == "fit":
        part = fit(gpu, log)
    elif name == "nvrtc":
        part = nvrtc_part(log)
    elif not gpu:
        part = _part(name, "NOT RUN", why={"pytest": "only with --gpu (the CPU tests: python -m pytest)",
                                           "sanitizers": "only with --gpu (compute-sanitizer needs a device)",
                                           "bench": "only with --gpu (the CPU figures: gpubp bench --quick)",
                                           "tune": "only with --gpu (times on the emulated device say "
                                                   "nothing of a GPU's)"}[name])
    elif name == "pytest":
        part = pytest_part(log_path=os.path.join(out_dir, "pytest.log"))
    elif name == "sanitizers":
        from . import sanitizers
        s = sanitizers.run_all(log=log)
        part = _part("sanitizers", s["status"], why=s.get("why"),
                     summary="; ".join(f"{t['tool']}: {t['status']}"
                                       + (f" ({t['counts']})" if t.get("counts") else "") for t in s["tools"])
                     or None, rows=[{k: v for k, v in t.items() if k != "log_tail"} for t in s["tools"]],
                     details={"log_tails": {t["tool"]: t.get("log_tail", "") for t in s["tools"]}})
    elif name == "bench":
        part = bench_part(out_dir, log)
    else:
        part = tune_part(log)
    return part, no_device
