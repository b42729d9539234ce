"""``gpubp check``: the CPU run passes and reports every part; --gpu without a
device says so and fails; the report stays small; the sanitizer and pytest
parts read their tools' output right (tools stood in by scripts of ours: what
is tested is gpubp's reading of them, not a GPU)."""
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gpubp.check import kernels as check_kernels
from gpubp.check import run as check_run
from gpubp.check import sanitizers
from gpubp.cli import main
from gpubp.device import cuda_status

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_check_passes_and_reports_every_part(tmp_path, capsys):
    assert main(["check", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gpubp check: PASS" in out
    data = json.loads((tmp_path / "check.json").read_text())
    status = {p["name"]: p["status"] for p in data["parts"]}
    assert list(status) == list(check_run.PARTS)
    assert status["environment"] == status["kernels"] == status["fit"] == "PASS"
    assert status["nvrtc"] in ("PASS", "NOT RUN")
    assert status["pytest"] == status["sanitizers"] == status["bench"] == status["tune"] == "NOT RUN"
    kernels = next(p for p in data["parts"] if p["name"] == "kernels")
    # every check naive and fast, f32 and f64; then the 9 GEMM checks' fast kernels on the 3 other builds
    assert len(check_kernels.GEMM_CHECKS) == 9 and len(check_kernels.VARIANTS) == 3
    assert len(kernels["rows"]) == 4 * len(check_kernels.CHECKS) + 3 * 9 * 2 == 118
    assert all(r["passed"] and r["shapes"] >= 20 for r in kernels["rows"])
    assert {r["version"] for r in kernels["rows"]} == {"naive", "fast", "fast PIPELINE=2", "fast PIPELINE=1",
                                                       "fast TILE=32 MICRO=4"}
    files = list(tmp_path.iterdir())
    assert sorted(f.name for f in files) == ["check.json", "check.md"]
    assert all(f.stat().st_size < 16 * 2**20 for f in files)
    assert (tmp_path / "check.md").read_text().startswith("# gpubp check: PASS")


def test_gpu_check_without_a_device_says_so_and_fails(tmp_path, capsys):
    ok, why = cuda_status()
    if ok:
        pytest.skip("a CUDA device is present")
    assert main(["check", "--gpu", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"error: no CUDA device: {why.split(';')[0]}" in err             # the probe's reason, and check's fix:
    assert "run gpubp check without --gpu for the CPU and emulated-device checks" in err and "backend" not in err
    data = json.loads((tmp_path / "check.json").read_text())
    assert data["passed"] is False and data["parts"][0]["status"] == "FAIL"
    assert all(p["status"] == "NOT RUN" for p in data["parts"][1:])
    assert "| environment | FAIL | no CUDA device:" in (md := (tmp_path / "check.md").read_text())
    assert "run gpubp check without --gpu" in md


def test_unknown_part_is_refused(capsys):
    assert main(["check", "--part", "kernels,speed"]) == 2
    assert "unknown --part speed; the parts are environment, kernels, fit" in capsys.readouterr().err


def test_runs_from_a_plain_checkout_with_pythonpath(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "gpubp", "check", "--part", "environment,kernels", "--quiet",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "r" / "check.json").read_text())["passed"] is True


# -- a check cut short keeps what it did --------------------------------------------------------

def test_the_report_is_written_before_each_part_so_a_killed_check_keeps_the_parts_before_it(tmp_path, monkeypatch):
    seen = {}

    def kernels(gpu, log):                 # what a kill in this part would leave behind: the report as it stands
        seen["md"] = (tmp_path / "check.md").read_text()
        seen["json"] = json.loads((tmp_path / "check.json").read_text())
        return check_run._part("kernels", "PASS", summary="stand-in")
    monkeypatch.setattr(check_run, "kernels", kernels)
    assert main(["check", "--part", "environment,kernels", "--quiet", "--out", str(tmp_path)]) == 0
    assert seen["md"].startswith("# gpubp check: INCOMPLETE (PASS so far; 1 part(s) did not finish: kernels)")
    assert "| environment | PASS |" in seen["md"]
    assert "| kernels | PENDING | not finished when this report was written: still running, or the check was " \
           "killed (rerun it alone: --part kernels) |" in seen["md"]
    assert [p["name"] for p in seen["json"]["parts"]] == ["environment"] and seen["json"]["pending"] == ["kernels"]
    final = json.loads((tmp_path / "check.json").read_text())      # and the last report is whole, nothing pending
    assert "pending" not in final and [p["status"] for p in final["parts"]] == ["PASS", "PASS"]
    assert (tmp_path / "check.md").read_text().startswith("# gpubp check: PASS")
    assert sorted(os.listdir(tmp_path)) == ["check.json", "check.md"]      # no .tmp left behind


def test_parts_run_in_the_order_given_after_the_environment(tmp_path, monkeypatch):
    ran = []
    for name in ("kernels", "fit", "nvrtc_part"):
        monkeypatch.setattr(check_run, name, lambda *a, name=name: ran.append(name) or
                            check_run._part(name.removesuffix("_part"), "PASS", summary="stand-in"))
    assert main(["check", "--part", "nvrtc,fit,environment,kernels,fit", "--quiet", "--out", str(tmp_path)]) == 0
    assert ran == ["nvrtc_part", "fit", "kernels"]
    assert [p["name"] for p in json.loads((tmp_path / "check.json").read_text())["parts"]] == \
        ["environment", "nvrtc", "fit", "kernels"]


_SLOW_KERNELS = """
import sys, time
from gpubp.check import run
def kernels(gpu, log):
    print("kernels part started", flush=True)
    time.sleep(60)
run.kernels = kernels
from gpubp.cli import main
sys.exit(main(["check", "--part", "environment,kernels,fit", "--quiet", "--out", sys.argv[1]]))
"""


def test_sigterm_in_a_part_names_it_in_the_report_and_the_parts_after_it_did_not_run(tmp_path):
    """What a time limit does (timeout sends SIGTERM): the part it hit is FAIL with the signal and the time
    it had run, the parts after it are named as not run, and the exit status is 130."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_KERNELS, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    assert proc.stdout.readline().strip() == "kernels part started"
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert f"interrupted; the report of the parts so far: {tmp_path / 'check.md'}" in err
    data = json.loads((tmp_path / "check.json").read_text())
    assert [(p["name"], p["status"]) for p in data["parts"]] == [("environment", "PASS"), ("kernels", "FAIL")]
    assert re.match(r"interrupted by SIGTERM after \d+ s in this part \(a time limit\?\)$", data["parts"][1]["why"])
    assert data["pending"] == ["fit"] and data["interrupted"] is True
    md = (tmp_path / "check.md").read_text()
    assert md.startswith("# gpubp check: INCOMPLETE (FAIL so far; 1 part(s) did not finish: fit)")
    assert "| fit | PENDING | did not run: the check was interrupted before it (rerun it alone: --part fit) |" in md


# -- the sanitizer part ---------------------------------------------------------------------------

def test_sanitizer_summaries_are_read():
    assert sanitizers.parse("memcheck", "x\n========= ERROR SUMMARY: 0 errors\n") == {"errors": 0}
    assert sanitizers.parse("initcheck", "========= ERROR SUMMARY: 1 error\n") == {"errors": 1}
    assert sanitizers.parse("racecheck", "========= RACECHECK SUMMARY: 3 hazards displayed (2 errors, 1 warning)") \
        == {"errors": 2, "hazards": 3, "warnings": 1}
    assert sanitizers.parse("synccheck", "Segmentation fault") is None


def _fake_sanitizer(folder, summary):
    """A stand-in for compute-sanitizer: drops its options, runs the child, prints ``summary``."""
    path = folder / "compute-sanitizer"
    path.write_text("#!/bin/sh\nwhile [ \"${1#--}\" != \"$1\" ]; do shift 2; done\n\"$@\"\ncode=$?\n"
                    f"echo '{summary}'\nexit $code\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_a_sanitizer_reporting_0_errors_over_a_failed_child_fails(tmp_path):
    fake = _fake_sanitizer(tmp_path, "========= ERROR SUMMARY: 0 errors")
    r = sanitizers.run_tool("memcheck", fake, [sys.executable, "-c", "raise SystemExit(3)"], timeout=60)
    assert r["status"] == "FAIL" and "reported 0 errors but the kernel checks under it failed (exit code 3)" in r["why"]
    r = sanitizers.run_tool("memcheck", fake, [sys.executable, "-c", "pass"], timeout=60)
    assert r["status"] == "PASS" and r["counts"] == {"errors": 0}


def test_a_sanitizer_finding_errors_fails_with_the_counts(tmp_path):
    fake = _fake_sanitizer(tmp_path, "========= RACECHECK SUMMARY: 4 hazards displayed (4 errors, 0 warnings)")
    r = sanitizers.run_tool("racecheck", fake, [sys.executable, "-c", "pass"], timeout=60)
    assert r["status"] == "FAIL" and r["counts"] == {"errors": 4, "hazards": 4, "warnings": 0}


def test_no_sanitizer_is_not_run_with_the_reason(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(sanitizers.os, "access", lambda *a: False)
    r = sanitizers.run_all()
    assert r["status"] == "NOT RUN" and "compute-sanitizer is not on PATH" in r["why"]


# -- the pytest part --------------------------------------------------------------------------------

@pytest.mark.parametrize("body, status, summary", [
    ("assert True", "PASS", "1 passed"),
    ("assert 1 == 2", "FAIL", "1 failed"),
])
def test_pytest_part_reads_the_run(tmp_path, body, status, summary):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_kernels.py").write_text(
        f"import pytest\n\n\n@pytest.mark.gpu\ndef test_on_gpu():\n    {body}\n\n\ndef test_cpu_only():\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    part = check_run.pytest_part(timeout=120, root=tmp_path)
    assert part["status"] == status and summary in part["summary"], part
    assert "1 deselected" in part["summary"]


def test_pytest_part_logs_each_test_as_it_runs_so_a_cut_short_run_leaves_them(tmp_path):
    """A run past its time: FAIL naming the log, which holds the tests finished before it was stopped; a run
    that ends removes its log (its tail is in the report)."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_kernels.py").write_text(
        "import time\nimport pytest\n\n\n@pytest.mark.gpu\ndef test_a_quick_one():\n    pass\n\n\n"
        "@pytest.mark.gpu\ndef test_a_slow_one():\n    time.sleep(60)\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    log = tmp_path / "out" / "pytest.log"
    log.parent.mkdir()
    part = check_run.pytest_part(timeout=10, root=tmp_path, log_path=log)
    assert part["status"] == "FAIL" and part["why"] == f"pytest -m gpu did not finish in 10 s (its output so far: {log})"
    assert "test_kernels.py::test_a_quick_one PASSED" in log.read_text()
    (tmp_path / "tests" / "test_kernels.py").write_text("import pytest\n\n\n@pytest.mark.gpu\ndef test_on_gpu():\n"
                                                        "    pass\n")
    part = check_run.pytest_part(timeout=120, root=tmp_path, log_path=log)
    assert part["status"] == "PASS" and not log.exists()
    assert "test_kernels.py::test_on_gpu PASSED" in part["details"]["output_tail"]


def test_pytest_part_without_tests_is_not_run(tmp_path):
    part = check_run.pytest_part(root=tmp_path)
    assert part["status"] == "NOT RUN" and "an installed gpubp" in part["why"]


def test_the_tune_part_reports_every_shape_of_the_bench_nets_against_cublas():
    """The --gpu tune part's logic on a dry run with a fake timer: a row per GEMM shape of the bench nets,
    own against cuBLAS where cuBLAS has a twin; nothing saved."""
    import numpy as np

    from gpubp import tune
    from gpubp.bench.cases import NETS
    from gpubp.cuda.dryrun import dry_run_backend

    def timer(fn, what):                     # own: 2 us, cuBLAS 4 us on the forward GEMMs, 1 us on BP2
        return {"own": 2e-6, "cublas": 4e-6 if what["family"] == "forward_gemm" else 1e-6}[what["impl"]]
    lines = []
    part = check_run.tune_part(lines.append, bk=dry_run_backend([]), timer=timer, device="Fake", cuda=1)
    shapes = {(f, M, N, K) for sizes, B in NETS for f, M, N, K in tune.gemm_shapes(sizes, B)}
    assert part["status"] == "PASS" and len(part["rows"]) == len(shapes) == 21
    by = {r["shape"]: r for r in part["rows"]}
    assert by["forward_gemm f32 10 30 784"]["own / cuBLAS"] == 0.5
    assert by["backward_gemm f32 128 256 256"]["own / cuBLAS"] == 2.0
    assert by["weight_grad f32 784 30 10"]["cuBLAS us"] is None
    fwd = sum(f == "forward_gemm" for f, *_ in shapes)
    bp2 = sum(f == "backward_gemm" for f, *_ in shapes)
    assert f"on {fwd} of the {fwd + bp2}" in part["summary"]
    assert np.isclose(float(part["summary"].split("own / cuBLAS ")[1].split(" ")[0]),
                      np.exp((fwd * np.log(0.5) + bp2 * np.log(2.0)) / (fwd + bp2)), atol=0.005)
    assert len(lines) == 21
    from gpubp.check import report
    md = report.to_markdown({"gpu": True, "passed": True, "gpubp": "0", "started": "now", "seconds": 1.0,
                             "python": "3", "numpy": "2", "parts": [part]})
    assert "| weight_grad f32 784 30 10 | TILE=64 MICRO=8 | 1 | 2.0 | - | - |" in md     # no cuBLAS twin: "-"
