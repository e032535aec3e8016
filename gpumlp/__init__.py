"""gpumlp: multilayer perceptrons with hand-written, batched column-major backprop
on NumPy (CPU) or CuPy (GPU)."""
from . import losses, noise
from .backend import DeviceUnavailableError, get_backend, to_numpy
from .model import MLP
from .optim import SGD

__version__ = "0.3.0"
__all__ = ["MLP", "SGD", "losses", "noise", "to_numpy", "get_backend", "DeviceUnavailableError", "__version__"]
