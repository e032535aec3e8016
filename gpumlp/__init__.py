"""gpumlp: multilayer perceptrons with hand-written, batched column-major backprop
on NumPy (CPU) or CuPy (GPU)."""
from . import losses
from .backend import DeviceUnavailableError, get_backend, to_numpy
from .model import MLP
from .optim import SGD

__version__ = "0.2.0"
__all__ = ["MLP", "SGD", "losses", "to_numpy", "get_backend", "DeviceUnavailableError", "__version__"]
