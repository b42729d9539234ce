"""Run under mpiexec -n N (or alone): fit a float64 net data-parallel and write rank 0's weights.

    python fit_ranks.py OUT.npz [momentum weight_decay [die_at_epoch]]
"""
import os
import sys

import numpy as np

from gpubp import MLP
from gpubp.parallel import use_own_gpu, world

out = sys.argv[1]
momentum, decay = (float(sys.argv[2]), float(sys.argv[3])) if len(sys.argv) > 3 else (0.0, 0.0)
die_at = int(sys.argv[4]) if len(sys.argv) > 4 else None
comm = world()
use_own_gpu(comm, os.environ.get("BACKEND", "numpy"))      # each rank its own GPU, for NCCL
rng = np.random.default_rng(5)
X, y = rng.random((53, 7)), rng.integers(0, 4, 53)          # 53 rows, batch 10: a short last batch of 3
net = MLP([7, 9, 4], loss="cross_entropy", backend=os.environ.get("BACKEND", "numpy"), dtype=np.float64, seed=11)


def callback(epoch, hist):
    if die_at is not None and epoch == die_at and comm.Get_rank() == 1:
        os._exit(3)                                          # a rank dies mid-fit


hist = net.fit(X, y, epochs=3, batch_size=10, lr=0.7, momentum=momentum, weight_decay=decay, progress=False,
               comm=comm, callback=callback)
if comm.Get_rank() == 0:
    np.savez(out, *net.weights, *net.biases, loss=np.array(hist.loss), reason=np.array(str(net.parallel_reason)))
