"""gpumlp: multilayer perceptrons with hand-written, batched column-major backprop
on NumPy (CPU) or CuPy (GPU)."""
from . import losses, noise
from .backend import DeviceUnavailableError, get_backend, to_numpy
from .classifier import Classifier
from .data import Standardizer
from .engine import Hook, Trainer
from .io import load, save
from .model import MLP
from .optim import SGD
from .train import TrainingDiverged, TrainState, evaluate, fit

__version__ = "0.4.0"
__all__ = ["MLP", "SGD", "Trainer", "Hook", "fit", "evaluate", "TrainState", "TrainingDiverged", "Classifier",
           "Standardizer",
           "save", "load", "losses", "noise", "to_numpy", "get_backend", "DeviceUnavailableError", "__version__"]
