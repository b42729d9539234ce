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

    class One:                          # a communicator of one rank: the plain fit runs
        def Get_size(self):
            return 1
    hist = net.fit(np.zeros((4, 3)), [0, 1, 0, 1], epochs=1, progress=False, comm=One())
    assert len(hist.loss) == 1 and net.parallel_reason is None


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
