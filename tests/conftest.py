"""Shared fixtures: the CPU backends every core test runs on, and small helpers.

``backend`` runs a test twice: on NumPy, and on ``array_api_strict`` on its fake
non-CPU device ``device1``.  On the latter any NumPy-only call in the device path
(``np.exp(S)``, ``np.zeros(...)`` mixed with device arrays, implicit host
conversion) raises, just as it would on CuPy, so CPU CI catches it.
"""
import importlib.util
import os
import shutil
import sys

import numpy as np
import pytest

import gpumlp
from gpumlp import backend as B
from gpumlp.backend import ArrayAPIBackend

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin", "cupy", "__init__.py")


def strict_backend():
    if os.environ.get("CI"):
        import array_api_strict as xps      # CI installs it: never skip there
    else:
        xps = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    return ArrayAPIBackend(xps, xps.Device("device1"))


@pytest.fixture(params=["numpy", "strict"])
def backend(request):
    return gpumlp.get_backend("cpu") if request.param == "numpy" else strict_backend()


def host(a):
    return gpumlp.to_numpy(a)


def rel_err(a, b):
    """Normwise relative error ‖a − b‖_∞ / ‖b‖_∞ (0 when both are 0)."""
    a, b = np.asarray(host(a), np.float64), np.asarray(host(b), np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return 0.0 if scale == 0 else float(np.max(np.abs(a - b)) / scale)


def random_problem(sizes, n, seed, loss="mse"):
    """X (d0 × N), and targets for ``loss``: T (dL × N) for mse, labels (N,) otherwise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((sizes[0], n))
    if loss == "mse":
        return X, rng.standard_normal((sizes[-1], n))
    return X, rng.integers(0, sizes[-1], n)


def load_standin():
    """The stand-in CuPy of ``tests/standin`` (loaded once, under a name of its own)."""
    module = sys.modules.get("gpumlp_standin_cupy")
    if module is None:
        spec = importlib.util.spec_from_file_location("gpumlp_standin_cupy", STANDIN)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["gpumlp_standin_cupy"] = module
    return module


@pytest.fixture
def standin(monkeypatch):
    """The stand-in device as ``cupy`` for one test: gpumlp's CuPy backend runs on it, with the
    CUDA source built as host C++.  Skips where no C++ compiler exists, but fails under CI=true."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        why = "no C++ compiler (g++) for the stand-in device's host-built kernels"
        if os.environ.get("CI") == "true":
            pytest.fail(why + ": CI must have one (.ci/run installs it)")
        pytest.skip(why)
    module = load_standin()
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setattr(B, "_auto", None)
    return module
