"""Run under mpiexec -n 2: one way a data-parallel run can go wrong on one rank (or between ranks).

    python failing_ranks.py SCENARIO

Every scenario must end on every rank (non-zero exit, the failing rank's message printed once) instead
of leaving the other rank waiting in a collective.  The script does nothing to help: no try/except, no
``python -m mpi4py``; what ends the job is gpubp's own.
"""
import sys

import numpy as np
from mpi4py import MPI

import gpubp

scenario = sys.argv[1]
comm = MPI.COMM_WORLD
rank = comm.Get_rank()
rng = np.random.default_rng(5)
X, y = rng.random((40, 5)), rng.integers(0, 3, 40)
args = dict(epochs=3, batch_size=8, lr=0.5, progress=False, comm=comm)
sizes, dtype = [5, 6, 3], np.float32

if rank == 1:
    if scenario == "before":
        raise ValueError("rank 1 failed before fit")
    if scenario == "labels":
        y = y + 2                                    # labels out of range on this rank only
    if scenario == "lengths":
        X, y = X[:30], y[:30]
    if scenario == "data":
        X = X[::-1].copy()
    if scenario == "epochs":
        args["epochs"] = 4
    if scenario == "sizes":
        sizes = [5, 7, 3]
    if scenario == "dtype":
        dtype = np.float64
    if scenario == "callback":
        def callback(epoch, hist):
            if epoch == 2:
                raise RuntimeError("rank 1's callback failed at epoch 2")
        args["callback"] = callback
if scenario == "stop" and rank == 0:
    args["callback"] = lambda epoch, hist: epoch < 2        # stops after epoch 2 on rank 0 only
if scenario == "diverge":                            # NaN at epoch 1, step 4, on every rank alike
    X, args["lr"] = X * 1e3, 1e38
if scenario == "midstep" and rank == 1:
    steps = []
    net_step = gpubp.mlp.ParallelStepper.__call__

    def failing_step(self, idx, **kwargs):
        steps.append(1)
        if len(steps) == 7:
            raise MemoryError("rank 1 ran out of memory in step 7")
        return net_step(self, idx, **kwargs)
    gpubp.mlp.ParallelStepper.__call__ = failing_step

net = gpubp.MLP(sizes, loss="cross_entropy", backend="numpy", dtype=dtype, seed=1)
net.fit(X, y, **args)
if scenario == "uncaught" and rank == 1:
    raise KeyError("rank 1 failed between two fits")
net.fit(X, y, **args)                                # rank 0 would wait here for ever
print(f"rank {rank} finished", flush=True)
