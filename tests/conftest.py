"""Fixtures and hooks only; the tests' helpers live in :mod:`gpumlp.testing`.

``backend`` runs a test twice: on NumPy, and on ``array_api_strict`` on its fake
non-CPU device ``device1``.  On the latter any NumPy-only call in the device path
(``np.exp(S)``, ``np.zeros(...)`` mixed with device arrays, implicit host
conversion) raises, just as it would on CuPy, so CPU CI catches it.
"""
import importlib.util
import os
import shutil
import signal
import sys

import pytest

import gpumlp
from gpumlp import backend as B
from gpumlp.testing import strict_backend

# The pipe tests run the CLI in subprocesses, which inherit this environment: an inherited
# PYTHONUNBUFFERED would hide a missing flush, so no test runs with it.
os.environ.pop("PYTHONUNBUFFERED", None)
# The Ctrl-C tests send SIGINT to CLI subprocesses. A runner started in the background of a
# shell (or by a tool's fork server) ignores SIGINT, and an ignored signal stays ignored
# across exec: the CLI would never see its Ctrl-C. A handler does not survive exec, so
# installing Python's own makes the children start with the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin", "cupy", "__init__.py")


@pytest.fixture(params=["numpy", "strict"])
def backend(request):
    return gpumlp.get_backend("cpu") if request.param == "numpy" else strict_backend()


def _load_standin():
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
    module = _load_standin()
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setattr(B, "_auto", None)
    return module
