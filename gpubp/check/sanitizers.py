"""compute-sanitizer over the kernel checks: each tool runs ``gpubp check
--gpu --part kernels`` in a child process and its summary line is read.

    memcheck    out-of-bounds and misaligned device memory accesses
    racecheck   shared-memory data races (hazards between threads of a block)
    synccheck   barriers (__syncthreads) used where not every thread reaches them
    initcheck   reads of device memory never written

A tool PASSES when its summary says 0 errors *and* the checks it watched passed
(a tool can report 0 errors for a child that crashed).  CUDA API errors are not
counted (``--report-api-errors no``): CuPy probes the driver with calls that are
allowed to fail; kernel faults are what this part is for.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
LOG_TAIL = 4000        # characters of each tool's output kept in the report

_ERRORS = re.compile(r"ERROR SUMMARY:\s*(\d+) errors?")
_RACES = re.compile(r"RACECHECK SUMMARY:\s*(\d+) hazards? displayed\s*\((\d+) errors?,\s*(\d+) warnings?\)")


def find() -> str | None:
    """The compute-sanitizer executable: on PATH, else under $CUDA_HOME/bin or /usr/local/cuda/bin."""
    hit = shutil.which("compute-sanitizer")
    if hit:
        return hit
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.access(os.path.join(root, "bin", "compute-sanitizer"), os.X_OK):
            return os.path.join(root, "bin", "compute-sanitizer")
    return None


def parse(tool: str, text: str) -> dict | None:
    """{"errors": N, "hazards": H, "warnings": W} from a tool's output (the last summary line),
    or None when it printed none (it did not run, or the child died before the summary)."""
    if tool == "racecheck":
        found = _RACES.findall(text)
        if not found:
            return None
        hazards, errors, warnings = map(int, found[-1])
        return {"errors": errors, "hazards": hazards, "warnings": warnings}
    found = _ERRORS.findall(text)
    return {"errors": int(found[-1])} if found else None


def run_tool(tool: str, sanitizer: str, child: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``child`` under ``sanitizer --tool tool``; a result with status PASS / FAIL and the counts."""
    cmd = [sanitizer, "--tool", tool, "--report-api-errors", "no", "--target-processes", "all", *child]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        text, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        text, code = text + f"\n(timed out after {timeout:.0f} s)", None
    except OSError as e:
        return {"tool": tool, "status": "NOT RUN", "why": f"{sanitizer} did not start: {e}"}
    counts = parse(tool, text)
    r = {"tool": tool, "seconds": round(time.perf_counter() - t0, 1), "exit_code": code, "counts": counts,
         "log_tail": text[-LOG_TAIL:]}
    if counts is None:
        refused = re.search(r"(not supported|unsupported|permission|no attachable|fatal)[^\n]*", text, re.IGNORECASE)
        r.update(status="NOT RUN" if refused and code not in (0, None) else "FAIL",
                 why=(f"{tool} refused: {refused.group(0).strip()}" if refused else
                      f"{tool} printed no summary (exit code {code}); see log_tail"))
    elif counts["errors"] or counts.get("warnings"):
        r.update(status="FAIL", why=f"{tool}: {counts}")
    elif code != 0:
        r.update(status="FAIL", why=f"{tool} reported 0 errors but the kernel checks under it failed "
                                    f"(exit code {code}); see log_tail")
    else:
        r.update(status="PASS", why=None)
    return r


def run_all(tools=TOOLS, timeout: float = 300.0, log=lambda line: None) -> dict:
    """Every tool over the kernel checks.  The part's result: status PASS (every tool ran and
    found nothing), FAIL, or NOT RUN with why (no compute-sanitizer here)."""
    sanitizer = find()
    if sanitizer is None:
        return {"status": "NOT RUN", "why": "compute-sanitizer is not on PATH (nor in $CUDA_HOME/bin or "
                                            "/usr/local/cuda/bin); it ships with the CUDA toolkit", "tools": []}
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    results = []
    with tempfile.TemporaryDirectory(prefix="gpubp-sanitize-") as tmp:
        for tool in tools:
            child = [sys.executable, "-m", "gpubp", "check", "--gpu", "--part", "kernels", "--quiet",
                     "--out", os.path.join(tmp, tool)]
            r = run_tool(tool, sanitizer, child, timeout, env)
            log(f"  {tool}: {r['status']}" + (f" ({r['why']})" if r.get("why") else f" in {r['seconds']} s"))
            results.append(r)
    statuses = {r["status"] for r in results}
    status = "FAIL" if "FAIL" in statuses else ("PASS" if statuses == {"PASS"} else "NOT RUN")
    why = None if status == "PASS" else "; ".join(r["why"] for r in results if r.get("why"))
    return {"status": status, "why": why, "sanitizer": sanitizer, "tools": results}
