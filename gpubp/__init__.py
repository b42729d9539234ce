"""gpubp: backpropagation for sigmoid multilayer perceptrons, on NumPy, on an
emulated CUDA device, and on CUDA through CuPy, with the same code."""
from ._version import __version__  # noqa: E402

from .backend import get_backend  # noqa: E402
from .device import DeviceUnavailable, cuda_status  # noqa: E402
from .gradcheck import gradcheck  # noqa: E402
from .mlp import MLP, Gradients, History, SaturationWarning, TrainingDiverged  # noqa: E402
from . import parallel as _parallel  # noqa: E402
from .parallel import RankFailed  # noqa: E402
from .validation import InputError  # noqa: E402

if _parallel.launched_by_mpi():   # a rank of an MPI job: an uncaught exception aborts it, as python -m mpi4py does
    _parallel.abort_on_uncaught()

__all__ = ["MLP", "Gradients", "History", "TrainingDiverged", "SaturationWarning", "RankFailed", "InputError",
           "gradcheck", "get_backend", "cuda_status", "DeviceUnavailable", "__version__"]
