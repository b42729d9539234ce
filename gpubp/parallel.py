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

import numpy as np

from .validation import InputError

ALLREDUCE = ("auto", "host", "pinned", "nccl", "cuda-aware")
#: environment variables that MPI launchers set in every rank (MPICH/Hydra, Open MPI, PMIx, Slurm)
LAUNCHER_ENV = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    """True inside a rank that mpiexec/mpirun/srun started (no MPI is initialised to find out)."""
    return any(k in os.environ for k in LAUNCHER_ENV)


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


class DataParallel:
    """One rank's part of a data-parallel fit: the flat gradient buffer and how it is summed."""

    def __init__(self, model, comm, allreduce="auto"):
        if allreduce not in ALLREDUCE:
            raise InputError(f"allreduce must be one of {', '.join(ALLREDUCE)}, got {allreduce!r}")
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
