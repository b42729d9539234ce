"""Data-parallel SGD over MPI: N ranks take the steps one process takes (float64, to 1e-10),
with momentum and decay too, on NumPy and on the emulated device; a rank that dies stops the
others instead of hanging; the CLI under mpiexec speaks and saves on rank 0 only.  The runs
are real: mpiexec from the mpich wheel (pip install 'gpubp[mpi]')."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpubp import MLP, InputError
from gpubp.parallel import DataParallel, share

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "mpi" / "fit_ranks.py"
MPIEXEC = shutil.which("mpiexec", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
needs_mpi = pytest.mark.skipif(not (HAVE_MPI4PY and MPIEXEC),
                               reason="mpi4py or mpiexec is not installed (pip install 'gpubp[mpi]')")


def run(n, *args, backend="numpy", timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT), BACKEND=backend)
    cmd = [MPIEXEC, "-n", str(n), sys.executable, *map(str, args)] if n else [sys.executable, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_share_splits_every_batch_fairly():
    for B in (1, 2, 3, 10, 53):
        for size in (1, 2, 3, 4):
            parts = [share(0, B, r, size) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == B
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            lengths = [hi - lo for lo, hi in parts]
            assert max(lengths) - min(lengths) <= 1


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("backend", ["numpy", "emulated"])
@pytest.mark.parametrize("hyper", [(), (0.9, 1e-3)], ids=["plain", "momentum+decay"])
def test_ranks_take_the_steps_one_process_takes(tmp_path, ranks, backend, hyper):
    one, many = tmp_path / "one.npz", tmp_path / "many.npz"
    for n, out in ((0, one), (ranks, many)):
        proc = run(n, SCRIPT, out, *hyper, backend=backend)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = np.load(one), np.load(many)
    for key in (k for k in a.files if k.startswith("arr_")):
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-10, err_msg=f"{key} after 18 steps")
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-12)
    assert str(b["reason"]) == f"{ranks} ranks: MPI Allreduce on host (NumPy) buffers"


@needs_mpi
def test_a_rank_that_dies_stops_the_others_instead_of_hanging(tmp_path):
    proc = run(2, SCRIPT, tmp_path / "x.npz", 0.0, 0.0, 2, timeout=60)    # rank 1 exits at epoch 2
    assert proc.returncode != 0
    assert not (tmp_path / "x.npz").exists()


FAILING = ROOT / "tests" / "mpi" / "failing_ranks.py"


@needs_mpi
@pytest.mark.parametrize("scenario, message", [
    ("before", "ValueError: rank 1 failed before fit"),                       # the user's script, before fit
    ("uncaught", "KeyError: 'rank 1 failed between two fits'"),              # ... between two fits
    ("labels", "InputError: labels must be integers in [0, 3)"),              # fit's checks, on rank 1 only
    ("callback", "RuntimeError: rank 1's callback failed at epoch 2"),
    ("midstep", "MemoryError: rank 1 ran out of memory in step 7"),           # inside a step: the job aborts
    ("lengths", "samples: rank 0 has 40, rank 1 has 30"),
    ("data", "X checksum: rank 0 has "),
    ("epochs", "epochs: rank 0 has 3, rank 1 has 4"),
    ("sizes", "sizes: rank 0 has [5, 6, 3], rank 1 has [5, 7, 3]"),
    ("dtype", "dtype: rank 0 has 'float32', rank 1 has 'float64'"),
    ("stop", "the callback stopped training after epoch 2 on rank(s) 0 but not on rank(s) 1"),
    ("diverge", "the training loss became nan at epoch 1, step"),             # every rank at the same step
])
def test_a_failing_rank_ends_every_rank_with_its_message_once(scenario, message):
    """Each of these hung until killed: now every rank ends (within the 30 s timeout), the exit is
    non-zero, and the message is printed once, by one rank."""
    proc = run(2, FAILING, scenario, timeout=30)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert out.count(message) == 1, out
    assert "finished" not in proc.stdout, out


@needs_mpi
@pytest.mark.parametrize("rank1, message", [
    (["--epochs", "3"], "error: the ranks of a data-parallel fit must run the same fit, but epochs: rank 0 has 2, "
                        "rank 1 has 3"),
    (["--dataset", "no-such-file.npz"], "error: data file no-such-file.npz does not exist"),
])
def test_train_ranks_that_disagree_or_fail_in_setup_stop_together(rank1, message):
    common = [sys.executable, "-m", "gpubp", "train", "--dataset", "digits", "--epochs", "2", "--quiet",
              "--backend", "numpy"]
    cmd = [MPIEXEC, "-n", "1", *common, ":", "-n", "1", *common, *rank1]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count(message) == 1, proc.stderr
    assert "test accuracy" not in proc.stdout


@needs_mpi
def test_train_under_mpiexec_speaks_and_saves_on_rank_0(tmp_path):
    model = tmp_path / "m.npz"
    proc = run(2, "-m", "gpubp", "train", "--dataset", "digits", "--epochs", "3", "--quiet", "--backend", "numpy",
               "--save", model)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("test accuracy") == 1 and out.count("model saved to") == 1
    assert "data-parallel: 2 ranks: MPI Allreduce on host (NumPy) buffers" in out
    assert float(out.split("test accuracy ")[1].split("%")[0]) > 85
    assert MLP.load(model, backend="numpy").sizes == [64, 64, 10]


def test_data_parallel_arguments_are_checked():
    net = MLP([3, 2], backend="numpy", seed=0)
    with pytest.raises(InputError, match="comm must be an mpi4py communicator"):
        DataParallel(net, object())
    for comm in (object(), "world", 1):            # gpubp's message, not an AttributeError from Get_size
        with pytest.raises(InputError, match="comm must be an mpi4py communicator such as MPI.COMM_WORLD"
                           if HAVE_MPI4PY else "mpi4py is not installed"):
            net.fit(np.zeros((4, 3)), [0, 1, 0, 1], epochs=1, progress=False, comm=comm)


@needs_mpi
def test_a_communicator_of_one_rank_runs_the_plain_fit():
    from mpi4py import MPI
    net = MLP([3, 2], backend="numpy", seed=0)
    hist = net.fit(np.zeros((4, 3)), [0, 1, 0, 1], epochs=1, progress=False, comm=MPI.COMM_SELF)
    assert len(hist.loss) == 1 and net.parallel_reason is None
    with pytest.raises(InputError, match="MPI.COMM_NULL"):
        net.fit(np.zeros((4, 3)), [0, 1, 0, 1], epochs=1, progress=False, comm=MPI.COMM_NULL)


@needs_mpi
def test_allreduce_paths_are_named_and_refused_where_they_cannot_work():
    from mpi4py import MPI
    net = MLP([3, 2], backend="numpy", seed=0)
    with pytest.raises(InputError, match="allreduce='nccl' is for the cupy backend"):
        DataParallel(net, MPI.COMM_WORLD, "nccl")
    with pytest.raises(InputError, match="allreduce must be one of auto, host, pinned, nccl, cuda-aware"):
        DataParallel(net, MPI.COMM_WORLD, "gloo")
    assert DataParallel(net, MPI.COMM_WORLD).reason == "MPI Allreduce on host (NumPy) buffers"


@pytest.mark.gpu
def test_nccl_between_two_gpus(tmp_path):
    """NCCL needs a GPU per rank (it refuses two ranks on one: NVIDIA/nccl#418)."""
    from gpubp.device import cuda_status
    ok, why = cuda_status()
    if not ok:
        pytest.skip(f"no CUDA device: {why}")
    import cupy
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("NCCL needs 2 GPUs, one per rank; this machine has 1")
    if not (HAVE_MPI4PY and MPIEXEC):
        pytest.skip("mpi4py or mpiexec is not installed")
    one, many = tmp_path / "one.npz", tmp_path / "many.npz"
    assert run(0, SCRIPT, one, backend="cupy").returncode == 0
    proc = run(2, SCRIPT, many, backend="cupy")
    assert proc.returncode == 0, proc.stderr
    a, b = np.load(one), np.load(many)
    assert "NCCL allReduce" in str(b["reason"])
    for key in (k for k in a.files if k.startswith("arr_")):
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-10, err_msg=key)


def test_info_names_the_mpi_library(capsys):
    from gpubp.cli import main
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("MPI: "))
    if HAVE_MPI4PY:
        assert line.startswith("MPI: mpi4py ") and ("MPICH" in line or "Open MPI" in line or "MPI" in line[12:])
    else:
        assert "pip install 'gpubp[mpi]'" in line
