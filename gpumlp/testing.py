"""Helpers for gpumlp's tests and scripts: small numerical helpers, the strict backend, and a
NumPy backend that counts what a GPU would launch.

Nothing here is needed to train; it is importable (``from gpumlp.testing import ...``) so
that the scripts in ``scripts/`` and the tests share one copy.  It imports nothing beyond
NumPy and gpumlp at import time (``array_api_strict`` only inside :func:`strict_backend`).

The counting backend
--------------------
:class:`CountingBackend` is NumPy, counted.  Its arrays are a subclass of ``numpy.ndarray``
that intercepts every ufunc (array operators included: ``D *= m`` is ``multiply``), every
other NumPy function, and ``a[...] = b`` copies.  Each one that does work is logged in
:data:`TALLY` by name as a kernel; ``matmul`` is logged apart, as a GEMM (or GEMV).  Views
(slicing, ``.T``, ``reshape`` of a contiguous array) launch nothing and are not logged.  An
operation that returns a buffer it had to allocate (no ``out=``) is also logged as an
allocation.

With ``fused=True`` the backend stands in for CuPy with the compiled kernels: a fused kernel
is logged once, by its name, and its NumPy twin runs unlogged (with the scratch
:meth:`gpumlp.kernels.Kernel.lend` makes once and lends, as the compiled kernel needs none).
With ``fused=False`` each call inside the twins is logged, as it would launch on CuPy with
the switch off.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .backend import ArrayAPIBackend, Backend, to_numpy

__all__ = ["host", "rel_err", "random_problem", "labelled_problem", "random_biases", "exact", "ref_softmax",
           "ref_ce", "ref_hinge", "ref_mse", "strict_backend", "Tally", "TALLY", "CountingArray",
           "CountingBackend", "VIEWS"]


# -- small helpers ------------------------------------------------------------------------

def host(a: Any) -> np.ndarray:
    """``a`` as a NumPy array on the host, whatever backend made it."""
    return to_numpy(a)


def rel_err(a: Any, b: Any) -> float:
    """Normwise relative error ‖a − b‖_∞ / ‖b‖_∞ (0 when both are 0)."""
    a, b = np.asarray(host(a), np.float64), np.asarray(host(b), np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return 0.0 if scale == 0 else float(np.max(np.abs(a - b)) / scale)


def random_problem(sizes: Sequence[int], n: int, seed: int, loss: str = "mse") -> tuple[np.ndarray, np.ndarray]:
    """X (d0 × N), and targets for ``loss``: T (dL × N) for mse, labels (N,) otherwise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((sizes[0], n))
    if loss == "mse":
        return X, rng.standard_normal((sizes[-1], n))
    return X, rng.integers(0, sizes[-1], n)


def labelled_problem(d0: int = 3, n: int = 10, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (d0 × n), standard normal, and labels (n,) in [0, k): ``random_problem([d0, k], n, seed, "ce")``."""
    return random_problem([d0, k], n, seed, loss="ce")


def random_biases(net: Any, rng: np.random.Generator, scale: float = 1.0) -> list[np.ndarray]:
    """Give ``net`` random non-zero biases (d_k × 1, standard normal times ``scale``); the
    weights stay as they are.  Returns the biases set."""
    W, _ = net.get_params()
    b = [rng.standard_normal((d, 1)) * scale for d in net.sizes[1:]]
    net.set_params(W, b)
    return b


def exact(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for exactly ``message``."""
    return "^" + re.escape(message) + "$"


# -- the losses written plainly, in float64 (Y is K × N, one column per sample) -------------

def ref_softmax(Y: np.ndarray) -> np.ndarray:
    """Column-wise softmax."""
    E = np.exp(Y - Y.max(axis=0, keepdims=True))
    return E / E.sum(axis=0, keepdims=True)


def ref_ce(Y: np.ndarray, labels: np.ndarray, norm: float) -> tuple[float, np.ndarray]:
    """(softmax cross-entropy summed over the columns / norm, its ∂L/∂Y)."""
    P, onehot = ref_softmax(Y), np.eye(Y.shape[0])[:, labels]
    return -np.log(P[labels, np.arange(Y.shape[1])]).sum() / norm, (P - onehot) / norm


def ref_hinge(Y: np.ndarray, labels: np.ndarray, C: float, norm: float) -> tuple[float, np.ndarray]:
    """(the multi-class hinge on softmax outputs with margin C, summed / norm, its ∂L/∂Y)."""
    P, onehot = ref_softmax(Y), np.eye(Y.shape[0])[:, labels]
    M = P - (P * onehot).sum(axis=0, keepdims=True) + C
    active = (M >= 0) * (1 - onehot)
    G = active - onehot * active.sum(axis=0, keepdims=True)
    return (M * active).sum() / norm, P * (G - (P * G).sum(axis=0, keepdims=True)) / norm


def ref_mse(Y: np.ndarray, T: np.ndarray, norm: float) -> tuple[float, np.ndarray]:
    """(½‖Y − T‖² / norm, its ∂L/∂Y)."""
    return 0.5 * ((Y - T) ** 2).sum() / norm, (Y - T) / norm


def strict_backend() -> ArrayAPIBackend:
    """``array_api_strict`` on its fake non-CPU device ``device1``: any NumPy-only call in the
    device path raises there, as it would on CuPy.  Without the package: a skip inside pytest
    (a failure under ``CI``, which installs it), an ImportError elsewhere."""
    try:
        import array_api_strict as xps
    except ImportError:
        if os.environ.get("CI") or "pytest" not in sys.modules:
            raise
        import pytest
        pytest.skip("array-api-strict is not installed")
    return ArrayAPIBackend(xps, xps.Device("device1"))


# -- the counting backend -------------------------------------------------------------------

VIEWS = {"reshape", "transpose", "ravel", "squeeze", "expand_dims", "shape", "ndim", "result_type",
         "may_share_memory", "shares_memory", "isfinite_view"}


class Tally:
    """What the counting arrays did: ``gemm`` (matmul calls), ``other`` (every other kernel,
    by name) and ``allocs`` (the new buffers, as "name -> shape")."""

    def __init__(self) -> None:
        self.gemm: list[str] = []
        self.other: list[str] = []
        self.allocs: list[str] = []
        self.paused = 0

    def clear(self) -> None:
        self.gemm.clear()
        self.other.clear()
        self.allocs.clear()

    def log(self, name: str) -> None:
        if not self.paused:
            (self.gemm if name == "matmul" else self.other).append(name)

    def alloc(self, name: str, result: Any) -> None:
        if not self.paused:
            self.allocs.append(f"{name} -> {getattr(result, 'shape', ())}")

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """Log nothing inside (the work a counted call does with plain NumPy)."""
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1


TALLY = Tally()


def _plain(x):
    if isinstance(x, CountingArray):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x


def _wrap(x):
    if isinstance(x, np.ndarray) and not isinstance(x, CountingArray):
        return x.view(CountingArray)
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    return x


def _owns_new_memory(result, operands):
    """True when ``result`` is a buffer the operation allocated (not a view of an operand)."""
    if isinstance(result, tuple):
        return any(_owns_new_memory(r, operands) for r in result)
    if isinstance(result, np.generic):
        return True                      # a 0-d result: a new device array on a GPU
    if not isinstance(result, np.ndarray):
        return False
    return not any(isinstance(o, np.ndarray) and np.shares_memory(result, o) for o in operands)


class CountingArray(np.ndarray):
    """A NumPy array whose every operation is logged in :data:`TALLY`."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        name = ufunc.__name__ + ("" if method == "__call__" else "." + method)
        TALLY.log(name)
        if out is not None:                  # NumPy refuses out=None where a ufunc has two outputs
            kwargs["out"] = _plain(out)
        with TALLY.pause():
            result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        if out is None:
            TALLY.alloc(name, result)
            return _wrap(result)
        return out[0] if len(out) == 1 else out

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        operands = [a for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]
        if name not in VIEWS:
            TALLY.log(name)
        with TALLY.pause():
            result = func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()})
        if name not in VIEWS and kwargs.get("out") is None and _owns_new_memory(result, _plain(operands)):
            TALLY.alloc(name, result)
        return _wrap(result)

    def __setitem__(self, key, value):
        TALLY.log("copy")
        with TALLY.pause():
            self.view(np.ndarray)[key] = _plain(value)

    def astype(self, dtype: Any, *args: Any, **kwargs: Any) -> Any:
        TALLY.log("astype")
        with TALLY.pause():
            result = self.view(np.ndarray).astype(dtype, *args, **kwargs)
        TALLY.alloc("astype", result)
        return _wrap(result)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        TALLY.log("copy")
        with TALLY.pause():
            result = self.view(np.ndarray).copy(*args, **kwargs)
        TALLY.alloc("copy", result)
        return _wrap(result)


class CountingBackend(Backend):
    """NumPy, counted.  ``fused`` as explained at the top of the module."""

    is_gpu = True         # what it stands in for: the optimizer makes one pass, as on CuPy

    def __init__(self, fused: bool) -> None:
        super().__init__()
        self._twins = np      # the twins call NumPy's functions, as they call CuPy's on a GPU
        self.fused = fused
        self.name = f"counting({'fused' if fused else 'twins'})"

    def empty(self, shape: int | tuple[int, ...], dtype: Any) -> Any:
        return np.empty(shape, dtype=dtype).view(CountingArray)

    def zeros(self, shape: int | tuple[int, ...], dtype: Any) -> Any:
        return np.zeros(shape, dtype=dtype).view(CountingArray)

    def arange(self, n: int) -> Any:
        return np.arange(n).view(CountingArray)

    def asarray(self, a: Any, dtype: Any, copy: bool = True) -> Any:
        return np.array(_plain(a), dtype=dtype, copy=True if copy else None).view(CountingArray)

    def transposed(self, a: Any) -> Any:
        return np.ascontiguousarray(_plain(a).T).view(CountingArray)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.array(_plain(a), copy=True)

    def kernel(self, k: Any) -> Callable[..., Any]:
        if not self.fused or k.cuda is None:
            return super().kernel(k)

        twin = k.lend(Backend(), functools.partial(k.twin, np))     # the compiled kernel needs no scratch

        def run(*args):                       # one compiled kernel: logged once, its twin run unlogged
            TALLY.log(k.name)
            with TALLY.pause():
                twin(*_plain(args))
        return run


def mpiexec() -> str:
    """The path of the ``mpiexec`` beside this Python (the venv's MPICH) or on PATH; inside
    pytest, a skip without mpi4py or without an mpiexec."""
    import shutil

    import pytest
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install -e '.[mpi]')")
    exe = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if exe is None:
        pytest.skip("no mpiexec on the PATH")
    return exe
