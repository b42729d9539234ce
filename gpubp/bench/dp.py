"""The ``dp`` group: one data-parallel training step at 1 and 2 ranks (MPI processes on this
machine), the all-reduce's share of it, and the bytes per step against the link's bandwidth as
measured here.

Each measurement is its own ``mpiexec -n N python -m gpubp.bench.dp SIZES B REPS`` run (or a plain
process for 1 rank): every rank times the same steps between barriers, and rank 0 prints one JSON
line.  On one machine the "link" is shared memory: the figures say what the gradient exchange costs
against the step here, not what a cluster's network would give (see the README).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

#: (sizes, batch) of the dp cases: the mid and the large net
NETS = [([784, 256, 256, 10], 128), ([784, 1024, 1024, 10], 512)]
RANKS = (1, 2)


def _short(case):
    return case.replace("cross_entropy", "ce").replace(" data-parallel", " dp")


def mpiexec() -> str | None:
    """mpiexec beside this Python (the mpich wheel's) or on PATH."""
    return shutil.which("mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))


def measure(sizes, B, reps) -> dict:
    """Run in every rank: time ``reps`` data-parallel steps and the all-reduce alone (rank 0's answer)."""
    from mpi4py import MPI

    from ..mlp import MLP, ParallelStepper
    from ..parallel import DataParallel

    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(0)
    X, y = rng.random((B, sizes[0])).astype(np.float32), rng.integers(0, sizes[-1], B)
    net = MLP(sizes, loss="cross_entropy", backend="numpy", seed=0)
    dp = DataParallel(net, comm)
    step = ParallelStepper(net, *net.to_device(X, y), *net._hyper(0.01, 0.0, 0.0), dp=dp)
    idx = np.arange(B)
    step(idx)                                           # warm: workspaces, scratch
    times, reduce_times = [], []
    for _ in range(reps):
        comm.Barrier()
        t0 = time.perf_counter()
        step(idx)
        times.append(time.perf_counter() - t0)
    for _ in range(reps):
        comm.Barrier()
        t0 = time.perf_counter()
        dp.allreduce()
        reduce_times.append(time.perf_counter() - t0)
    big = np.ones(8 * 2**20 // 4, np.float32)           # 8 MiB: the link's bandwidth, as an all-reduce sees it
    comm.Allreduce(MPI.IN_PLACE, big)
    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(5):
        comm.Allreduce(MPI.IN_PLACE, big)
    link = 5 * big.nbytes / (time.perf_counter() - t0)
    step_s = float(np.median(times))
    reduce_s = float(np.median(reduce_times)) if comm.Get_size() > 1 else 0.0
    return {"ranks": comm.Get_size(), "step_s": step_s, "iqr_s": float(np.subtract(*np.percentile(times, [75, 25]))),
            "allreduce_s": reduce_s, "bytes": dp.nbytes, "link_Bps": link if comm.Get_size() > 1 else None,
            "reason": dp.reason, "n": reps, "times": [float(t) for t in times]}


def placeholders(nets=None):
    """The dp group's rows before they are timed (their names: the suite sizes its columns by them)."""
    from .cases import net_label
    from .timing import Row
    return [Row("dp", f"{net_label(sizes, B, 'cross_entropy')} data-parallel",
                f"gpubp numpy {n} rank{'s' if n > 1 else ''}", "cpu") for sizes, B in nets or NETS for n in RANKS]


def rows(nets=None, quick=False, log=print, on_row=None):
    """The dp group's rows (gpubp.bench.timing.Row), timed in child processes; each finished row goes
    to ``on_row`` if given, else a short line of it (within 200 characters) to ``log``."""
    from .cases import net_label, step_flops
    from .timing import Row

    nets = nets or NETS
    try:
        import mpi4py  # noqa: F401
        why = None if mpiexec() else "mpiexec is not installed (pip install 'gpubp[mpi]' brings MPICH's)"
    except ImportError:
        why = "mpi4py is not installed (pip install 'gpubp[mpi]')"
    out = []
    for sizes, B in nets:
        case = f"{net_label(sizes, B, 'cross_entropy')} data-parallel"
        for n in RANKS:
            row = Row("dp", case, f"gpubp numpy {n} rank{'s' if n > 1 else ''}", "cpu",
                      flops=step_flops(sizes, B))
            if why:
                row.note = f"unavailable: {why}"
                out.append(row)
                continue
            reps = max(3, int((0.3 if quick else 1.5) / (1e-9 * step_flops(sizes, B) / 50)))  # ~50 GFLOP/s
            cmd = [sys.executable, "-m", "gpubp.bench.dp", ",".join(map(str, sizes)), str(B), str(min(reps, 300))]
            if n > 1:
                cmd = [mpiexec(), "-n", str(n)] + cmd
            # the machine's cores shared out: n ranks of BLAS threads each, not n × all of them (two
            # OpenBLAS pools spinning on the same cores slow each other tenfold)
            threads = str(max(1, (os.cpu_count() or 1) // n))
            env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                       PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                                                   os.environ.get("PYTHONPATH", "")]))
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
                m = json.loads(proc.stdout.strip().splitlines()[-1])
            except Exception as e:
                first = (str(e).strip().splitlines() or [""])[0]
                row.failed, row.note = True, f"FAILED while timed: {type(e).__name__}: {first}"
                out.append(row)
                if on_row is not None:
                    on_row(row)
                continue
            row.median_s, row.spread_s, row.n_calls = m["step_s"], m["iqr_s"], m["n"]
            row.samples, row.threads = m.get("times"), int(threads)
            row.bytes, row.tflops = m["bytes"], row.flops / m["step_s"] / 1e12
            share = m["allreduce_s"] / m["step_s"] if m["step_s"] else 0.0
            link = f", the link {m['link_Bps'] / 1e9:.1f} GB/s" if m["link_Bps"] else ""
            row.note = (f"all-reduce {100 * share:.0f}% of the step ({m['bytes'] / 1e6:.1f} MB a step{link}); "
                        f"{threads} BLAS thread(s) a rank; {m['reason']}")
            out.append(row)
            if on_row is not None:
                on_row(row)
            else:
                log(f"dp {_short(case)} {row.impl} {row.median_s * 1e3:.2f} ms  {row.note.split('; ')[0]}")
    base = {r.case: r.median_s for r in out if r.impl.endswith(" 1 rank") and r.median_s}
    for r in out:
        if r.median_s and r.case in base and not r.impl.endswith(" 1 rank"):     # the 1-rank row is the base
            r.floor, r.floor_ratio = (r.case, "gpubp numpy 1 rank"), r.median_s / base[r.case]
    return out


if __name__ == "__main__":
    sizes, B, reps = [int(s) for s in sys.argv[1].split(",")], int(sys.argv[2]), int(sys.argv[3])
    result = measure(sizes, B, reps)
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(json.dumps(result))
