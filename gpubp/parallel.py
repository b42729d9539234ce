"""Synchronous data-parallel SGD across processes: MPI (mpi4py) between ranks,
NCCL between GPUs.  gpubp writes no transport of its own.

Every rank runs the same script on the same data.  Per step, each rank takes its
share of the global batch (B rows split as evenly as can be: shares differ by at
most one row, the short last batch too), computes the *sums* over its rows

    ∂C/∂W_l·B_r = a_{l−1}ᵀ δ_l,   ∂C/∂b_l·B_r = Σ_rows δ_l,   Σ_rows cost

with the unfused weight-gradient path, packs every layer into one flat buffer,
sums the buffer over the ranks with one all-reduce, divides by the global B and
applies the identical update on every rank.  Ranks start from rank 0's weights
(broadcast) and shuffle with rank 0's permutation (broadcast each epoch), so
they stay bit-identical, and a run on N ranks takes the steps a one-process run
with the same seed takes, up to the order of the sums.  The loss is the global
mean, so a divergence is seen by every rank at the same step.

How the buffer is summed (``net_reason`` of the fit's DataParallel says which):

    host        NumPy arrays (the numpy and emulated backends): MPI Allreduce on them
    pinned      CuPy arrays, the default: copied to pinned host memory, MPI
                Allreduce there, copied back (works with any MPI)
    nccl        CuPy arrays, NCCL's allReduce on the device (cupy.cuda.nccl), when NCCL
                is installed (nvidia-nccl-cu12/13) and every rank has a GPU of its own
    cuda-aware  CuPy arrays handed to MPI directly: only when the user says the MPI is
                CUDA-aware (allreduce="cuda-aware"): a guess would crash plain MPIs
"""
from __future__ import annotations

import os
import sys
import zlib

import numpy as np

from .validation import InputError

ALLREDUCE = ("auto", "host", "pinned", "nccl", "cuda-aware")
#: environment variables that MPI launchers set in every rank (MPICH/Hydra, Open MPI, PMIx, Slurm)
LAUNCHER_ENV = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    """True inside a rank that mpiexec/mpirun/srun started (no MPI is initialised to find out)."""
    return any(k in os.environ for k in LAUNCHER_ENV)


class RankFailed(RuntimeError):
    """A data-parallel fit stopped on every rank together: one rank failed (it raises its own error;
    the others raise this, naming it), or the ranks disagree on what they run.  ``rank`` is the rank
    that failed (or that differs), ``reporter`` the one rank that prints the full message."""

    def __init__(self, message: str, rank: int, reporter: int):
        super().__init__(message)
        self.rank, self.reporter = rank, reporter
        mark_collective(self, reporter)


def mark_collective(error: BaseException, reporter: int) -> BaseException:
    """Mark ``error`` as raised on every rank of the job alike, ``reporter`` being the rank that
    reports it: nobody waits, so nothing needs to be aborted (see :func:`abort_on_uncaught`)."""
    try:
        error.gpubp_reporter = reporter
    except AttributeError:           # an exception type with __slots__
        pass
    return error


def reporter_of(error: BaseException) -> int | None:
    """The rank that reports a collective error (:func:`mark_collective`), or None for a local one."""
    return getattr(error, "gpubp_reporter", None)


def communicator(comm):
    """``comm`` checked: None for None or a one-rank communicator (a plain fit runs), the communicator
    itself for more ranks; anything that is not an mpi4py intra-communicator is an InputError."""
    if comm is None:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise InputError(f"comm={type(comm).__name__} was given but mpi4py is not installed; data-parallel "
                         f"training needs it: pip install 'gpubp[mpi]', then pass comm=MPI.COMM_WORLD") from None
    if not isinstance(comm, MPI.Comm):
        raise InputError(f"comm must be an mpi4py communicator such as MPI.COMM_WORLD (from mpi4py import MPI), "
                         f"got {type(comm).__name__}")
    if comm == MPI.COMM_NULL:
        raise InputError("comm is MPI.COMM_NULL (this process is not in the communicator); pass MPI.COMM_WORLD or "
                         "a communicator this rank belongs to")
    if comm.Is_inter():
        raise InputError("comm is an inter-communicator; data-parallel fit needs an intra-communicator such as "
                         "MPI.COMM_WORLD")
    return comm if comm.Get_size() > 1 else None


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _gathered_failure(comm, statuses, error, where: str):
    """Raise on every rank if any rank's status carries an error: this rank's own error if it has one,
    else RankFailed naming the first failing rank.  ``statuses[r][1]`` is rank r's message or None."""
    failed = [(r, message) for r, (_, message) in enumerate(statuses) if message is not None]
    if not failed:
        return
    first, message = failed[0]
    if error is not None:
        raise mark_collective(error, first)
    others = f" (and rank(s) {', '.join(str(r) for r, _ in failed[1:])})" if len(failed) > 1 else ""
    raise RankFailed(f"rank {first}{others} failed {where}: {message}", first, first)


def agree(comm, plan: dict | None, error: BaseException | None, where: str = "before training") -> None:
    """One collective before the first step: every rank gives what it is about to run (``plan``: sizes,
    hyper-parameters, data length and checksums, …) or the error that stopped its checks.  Returns on
    every rank when all have a plan and the plans agree; else raises on every rank alike (each marked
    :func:`mark_collective`): a failing rank its own error, the others :class:`RankFailed` naming it;
    a disagreement as RankFailed naming the field, the rank and both values."""
    statuses = comm.allgather((plan, None if error is None else describe(error)))
    _gathered_failure(comm, statuses, error, where)
    ref = statuses[0][0]
    differ = []
    for r, (p, _) in enumerate(statuses[1:], start=1):
        for key in ref:
            if p.get(key) != ref[key]:
                differ.append((r, key, ref[key], p.get(key)))
    if differ:
        lines = "; ".join(f"{key}: rank 0 has {a!r}, rank {r} has {b!r}" for r, key, a, b in differ[:6])
        more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
        data = any(key in ("samples", "X checksum", "y checksum") for _, key, _, _ in differ)
        raise RankFailed(f"the ranks of a data-parallel fit must run the same fit"
                         f"{' on the same data' if data else ''}, but {lines}{more}; give every rank the same "
                         f"arguments{' and the same X, y (every rank takes its share of each batch itself)' if data else ''}",
                         differ[0][0], 0)


def epoch_end(comm, epoch: int, stop: bool, error: BaseException | None) -> bool:
    """The collective at the end of every epoch: True if the callback stopped training on every rank;
    raises on every rank alike if a rank failed in its epoch-end work (the test evaluation, the
    callback) or if the callback stopped training on some ranks only."""
    statuses = comm.allgather((bool(stop), None if error is None else describe(error)))
    _gathered_failure(comm, statuses, error, f"at the end of epoch {epoch}")
    stopped = [r for r, (s, _) in enumerate(statuses) if s]
    if stopped and len(stopped) < len(statuses):
        going = [r for r, (s, _) in enumerate(statuses) if not s]
        raise RankFailed(f"the callback stopped training after epoch {epoch} on rank(s) "
                         f"{', '.join(map(str, stopped))} but not on rank(s) {', '.join(map(str, going))}: in a "
                         f"data-parallel fit every rank must stop together (decide on one rank and share the "
                         f"decision with comm.bcast, or decide from the history, which every rank has alike)",
                         stopped[0], 0)
    return bool(stopped)


def checksum(arr) -> int:
    """A CRC-32 of an array's bytes (a host copy for a CuPy array): ranks compare their data by it."""
    host = arr if isinstance(arr, np.ndarray) else arr.get()
    return zlib.crc32(memoryview(np.ascontiguousarray(host)).cast("B"))


#: seconds a rank waits, after writing why it aborts, before MPI_Abort: the launcher (mpiexec) forwards a
#: rank's output through its own pipes and drops what it has not forwarded when the abort tears the job
#: down (seen with MPICH's hydra: a traceback cut after its first line, about one run in six)
ABORT_GRACE_S = 0.5


def _abort_job(comm, text: str) -> None:
    """Write ``text`` to stderr in one piece, give the launcher time to forward it, and abort the job."""
    import time
    sys.stdout.flush()
    sys.stderr.write(text)
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_S)
    comm.Abort(1)
    os._exit(1)                 # MPI_Abort may return before the launcher kills us: print nothing more


def abort(comm, error: BaseException, where: str) -> None:
    """End the whole job from a rank whose error the others cannot learn of: they wait in a collective
    (the step's all-reduce) that this rank will never join, so MPI_Abort is the only way out."""
    import traceback
    rank = comm.Get_rank()
    _abort_job(comm, "".join(traceback.format_exception(type(error), error, error.__traceback__))
               + f"gpubp: rank {rank} failed {where} (the {type(error).__name__} above) while the other ranks wait "
                 f"for it in the all-reduce: aborting the MPI job\n")


def this_rank() -> int:
    """This process's rank in MPI.COMM_WORLD if MPI is running, else 0 (nothing is initialised to find out)."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized():
        return 0
    return MPI.COMM_WORLD.Get_rank()


_HOOKED = False


def abort_on_uncaught() -> None:
    """What ``python -m mpi4py`` does, for any script that imports gpubp under mpiexec: an exception
    that no code catches, on one rank of a job of more than one, aborts the job (MPI_Abort) instead of
    leaving the other ranks waiting for ever in their next collective.  Errors that every rank raises
    alike (:func:`mark_collective`) are printed by the rank that reports them (one line elsewhere) and
    need no abort.  Set GPUBP_MPI_ABORT=0 to keep Python's own behaviour."""
    global _HOOKED
    if _HOOKED or os.environ.get("GPUBP_MPI_ABORT", "1") == "0":
        return
    _HOOKED = True
    previous = sys.excepthook

    def hook(kind, value, tb):
        MPI = sys.modules.get("mpi4py.MPI")
        live = MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized()
        rank, size = (MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()) if live else (0, 1)
        reporter = reporter_of(value) if value is not None else None
        if size > 1 and reporter is not None and reporter != rank:
            print(f"gpubp rank {rank}: stopped with every rank ({kind.__name__}; rank {reporter} prints why)",
                  file=sys.stderr, flush=True)
            return
        if size <= 1 or reporter is not None:      # one process, or an error raised alike on every rank
            return previous(kind, value, tb)
        why = (f"gpubp rank {rank}: uncaught {kind.__name__}: aborting the MPI job so that no rank waits for this "
               f"one (GPUBP_MPI_ABORT=0 to turn this off)\n")
        if previous is sys.__excepthook__:          # Python's traceback and the reason, written in one piece
            import traceback
            why = "".join(traceback.format_exception(kind, value, tb)) + why
        else:
            previous(kind, value, tb)
        _abort_job(MPI.COMM_WORLD, why)

    sys.excepthook = hook


def world():
    """mpi4py's COMM_WORLD, or InputError naming the install when mpi4py is missing."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise InputError("data-parallel training needs mpi4py and an MPI: pip install 'gpubp[mpi]' (mpi4py and "
                         "MPICH), then mpiexec -n N gpubp train ...") from None
    return MPI.COMM_WORLD


def mpi_library() -> str | None:
    """The MPI library and version when mpi4py imports (for ``gpubp info``), else None."""
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return f"mpi4py {__import__('mpi4py').__version__}, {MPI.Get_library_version().splitlines()[0].strip()}"


def use_own_gpu(comm, backend: str) -> None:
    """Before the model is built, point each rank of a node at its own GPU (local rank modulo the
    node's devices), if the cupy backend may be used; a no-op without CuPy or a device."""
    if backend not in ("auto", "cupy", "cuda"):
        return
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return
    from mpi4py import MPI
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    if count:
        cupy.cuda.Device(local % count).use()


def share(lo: int, hi: int, rank: int, size: int) -> tuple[int, int]:
    """Rank ``rank``'s rows of the global batch [lo, hi): contiguous, sizes differing by at most one."""
    n = hi - lo
    return lo + rank * n // size, lo + (rank + 1) * n // size


def check_allreduce(allreduce) -> None:
    if allreduce not in ALLREDUCE:
        raise InputError(f"allreduce must be one of {', '.join(ALLREDUCE)}, got {allreduce!r}")


class DataParallel:
    """One rank's part of a data-parallel fit: the flat gradient buffer and how it is summed."""

    def __init__(self, model, comm, allreduce="auto"):
        check_allreduce(allreduce)
        if not all(hasattr(comm, m) for m in ("Get_rank", "Get_size", "Allreduce", "Bcast")):
            raise InputError(f"comm must be an mpi4py communicator (MPI.COMM_WORLD), got {type(comm).__name__}")
        self.model, self.comm = model, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        bk = model.backend
        # the buffer: dW_1, db_1, …, dW_L, db_L, then the summed cost of the rank's rows
        self.slices, offset = [], 0
        for n_in, n_out in zip(model.sizes[:-1], model.sizes[1:]):
            self.slices.append(((offset, offset + n_in * n_out, (n_in, n_out)), (offset + n_in * n_out,
                                                                                  offset + n_in * n_out + n_out)))
            offset += n_in * n_out + n_out
        self.buf = bk.zeros(offset + 1, model.dtype)
        self.nbytes = self.buf.nbytes
        self.path, self.reason = self._choose(allreduce)

    # -- the views the step writes into ------------------------------------------------------------
    def grads(self, l):
        """(dW_l, db_l): views of the flat buffer (layer l = 1 … L)."""
        (w0, w1, shape), (b0, b1) = self.slices[l - 1]
        return self.buf[w0:w1].reshape(shape), self.buf[b0:b1]

    @property
    def loss_sum(self):
        return self.buf[-1:]

    # -- the transports ----------------------------------------------------------------------------
    def _choose(self, allreduce):
        on_gpu = self.model.backend.name == "cupy"
        if not on_gpu:
            if allreduce not in ("auto", "host"):
                raise InputError(f"allreduce={allreduce!r} is for the cupy backend; on {self.model.backend.name} "
                                 f"the buffers are NumPy arrays (allreduce='host')")
            return "host", "MPI Allreduce on host (NumPy) buffers"
        if allreduce == "host":
            raise InputError("allreduce='host' is for NumPy arrays; on the cupy backend use 'pinned' (the default), "
                             "'nccl' or 'cuda-aware'")
        if allreduce == "cuda-aware":
            return "cuda-aware", "MPI Allreduce on the CuPy buffer itself (the MPI is CUDA-aware, as told)"
        why_not = self._nccl_why_not()
        if why_not is None and allreduce in ("auto", "nccl"):
            self._nccl_setup()
            return "nccl", "NCCL allReduce on the device (cupy.cuda.nccl), one GPU per rank"
        if allreduce == "nccl":
            raise InputError(f"allreduce='nccl' cannot be used: {why_not}")
        import cupyx
        self._pinned = cupyx.empty_pinned(self.buf.shape, self.buf.dtype)
        return "pinned", f"MPI Allreduce through pinned host memory (NCCL not used: {why_not})"

    def _nccl_why_not(self) -> str | None:
        try:
            from cupy.cuda import nccl
        except Exception as e:
            return f"cupy.cuda.nccl does not import ({e})"
        if not getattr(nccl, "available", False):
            return "NCCL is not installed (pip install nvidia-nccl-cu12 or -cu13)"
        import cupy
        dev = cupy.cuda.Device()
        me = (os.uname().nodename, cupy.cuda.runtime.getDeviceProperties(dev.id).get("pciBusID", dev.id), dev.id)
        everyone = self.comm.allgather(me)
        if len(set(everyone)) < len(everyone):
            return ("two ranks share a GPU (NCCL refuses 'Duplicate GPU detected'); give each rank its own device, "
                    "e.g. CUDA_VISIBLE_DEVICES per rank")
        return None

    def _nccl_setup(self):
        from cupy.cuda import nccl
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._nccl_type = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}[
            np.dtype(self.buf.dtype)]

    def allreduce(self) -> None:
        """buf ← Σ over the ranks of buf (in place; every rank has the sum afterwards)."""
        from mpi4py import MPI
        if self.path in ("host", "cuda-aware"):
            if self.path == "cuda-aware":
                self.model.backend.synchronize()
            self.comm.Allreduce(MPI.IN_PLACE, self.buf, op=MPI.SUM)
        elif self.path == "pinned":
            self.buf.get(out=self._pinned)                     # waits for the step's kernels
            self.comm.Allreduce(MPI.IN_PLACE, self._pinned, op=MPI.SUM)
            self.buf.set(self._pinned)
        else:
            from cupy.cuda import nccl
            import cupy
            stream = cupy.cuda.get_current_stream()
            self._nccl.allReduce(self.buf.data.ptr, self.buf.data.ptr, self.buf.size, self._nccl_type,
                                 nccl.NCCL_SUM, stream.ptr)

    def broadcast(self, arrays) -> None:
        """Every array ← rank 0's (the initial weights and buffers): host copies for CuPy arrays."""
        bk = self.model.backend
        for arr in arrays:
            if arr is None:
                continue
            if bk.name == "cupy":
                host = bk.to_numpy(arr).copy()
                self.comm.Bcast(host, root=0)
                arr.set(host)
            else:
                self.comm.Bcast(arr, root=0)

    def bcast_order(self, order: np.ndarray) -> np.ndarray:
        """Rank 0's permutation of the rows, on every rank."""
        order = np.ascontiguousarray(order, dtype=np.int64)
        self.comm.Bcast(order, root=0)
        return order
