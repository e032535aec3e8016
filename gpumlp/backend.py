"""The array-module abstraction: one code path for NumPy (CPU) and CuPy (GPU).

A :class:`Backend` is chosen once, when a model is built.  Everything the model
computes goes through ``backend.xp`` (``numpy``, ``cupy`` or an array-API
namespace); the few operations whose spelling differs between those modules
(creating arrays on the right device, moving data across the host boundary)
are methods of the backend, and so is the choice of how a fused kernel runs
(:meth:`Backend.kernel`: its NumPy twin on this array module, or its compiled
CUDA form on CuPy, checked against the twin at its first launch unless
``GPUMLP_FUSED`` says otherwise; see :func:`gpumlp.kernels.fused_mode`).

Data crosses between host and device only in :meth:`Backend.asarray` (data going
in) and :meth:`Backend.to_numpy` (numbers coming out).  Those are called by the
checks at the public API, by the per-epoch order and report of the training loop,
and by the scores; the private step path (forward, loss, backward, update) never
calls them.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import types
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from . import kernels
from .kernels import check

__all__ = ["Array", "Backend", "CupyBackend", "ArrayAPIBackend", "DeviceUnavailableError", "probe_cupy", "Probe",
           "get_backend", "backend_of", "to_numpy"]

DEVICES = ("auto", "cpu", "gpu")

# An array of some backend (a NumPy, CuPy or array-API array): the type the public API's
# array parameters and results carry.  It is Any, since no common stub covers them all.
Array = Any


class DeviceUnavailableError(RuntimeError):
    """``device="gpu"`` was asked for, but CuPy, the CUDA driver or a GPU is missing."""


# What the kernel twins call on the host: NumPy's functions, with the reductions taken
# straight from the ufuncs (np.sum and np.max cost a Python wrapper each, a few
# percent of a narrow step).  Same results: np.sum is np.add.reduce.
_HOST_TWINS = types.SimpleNamespace(
    **{name: getattr(np, name) for name in ("add", "subtract", "multiply", "divide", "maximum", "greater",
                                          "greater_equal", "equal", "exp", "log", "tanh", "reshape")},
    sum=np.add.reduce, max=np.maximum.reduce, argmax=lambda a, axis, out: a.argmax(axis=axis, out=out),
    take=lambda a, indices, out: a.take(indices, out=out))


class Backend:
    """NumPy on the host.  The base class: other backends override what differs."""

    name = "numpy"
    is_gpu = False
    fused = False           # True where kernel() returns compiled kernels (see gpumlp.kernels)
    mode = "off"            # how: "off" (the twins), "auto" (checked at first launch) or "on"
    _twins: Any = None      # the module the twins run on, when it is not xp

    def __init__(self) -> None:
        self.xp: Any = np
        self._twins = _HOST_TWINS

    def __repr__(self):
        return f"<gpumlp backend {self.name}>"

    # -- arrays on this backend's device -----------------------------------
    def empty(self, shape: int | tuple[int, ...], dtype: Any) -> Array:
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape: int | tuple[int, ...], dtype: Any) -> Array:
        return self.xp.zeros(shape, dtype=dtype)

    def arange(self, n: int) -> Array:
        return self.xp.arange(n)

    def kernel(self, k: kernels.Kernel) -> Callable[..., Any]:
        """A callable that runs the fused kernel ``k`` (a :class:`gpumlp.kernels.Kernel`)
        here: its twin on this array module, or its compiled form where ``fused``.
        Plain NumPy runs the kernel's ``host`` spelling where it has one."""
        if k.host is not None and self._twins is _HOST_TWINS:
            return k.host
        return functools.partial(k.twin, self._twins or self.xp)

    def dtype(self, name: str) -> Any:
        """The backend's dtype object for ``"float32"`` or ``"float64"``."""
        return getattr(self.xp, name)

    def dot(self, x: Array, y: Array, out: Array) -> None:
        """out = x · y for contiguous 1-D ``x`` and ``y`` of one float dtype, into the one-element
        device array ``out``: a 1 × 1 product (a squared norm, a sum against a ones vector, the
        db of a layer of width 1) with no temporary."""
        self.xp.matmul(self.xp.reshape(x, (1, -1)), self.xp.reshape(y, (-1, 1)), out=self.xp.reshape(out, (1, 1)))

    # -- the host boundary ---------------------------------------------------
    def owns(self, a: Any) -> bool:
        """True when ``a`` already lives on this backend (no transfer needed): a NumPy array,
        unless it says it lives on a CUDA device (``__cuda_array_interface__``)."""
        return isinstance(a, np.ndarray) and not hasattr(type(a), "__cuda_array_interface__")

    def asarray(self, a: Any, dtype: Any, copy: bool = True) -> Array:
        """``a`` as an array of ``dtype`` on this device.  With ``copy=True`` (the default)
        always a new array, never an alias of ``a``; otherwise copied only when needed."""
        return np.array(a, dtype=dtype, copy=True if copy else None)

    def transposed(self, a: Array) -> Array:
        """``a.T`` as a new C-contiguous array on this device."""
        return self.xp.ascontiguousarray(a.T)

    def contiguous(self, a: Array) -> Array:
        """``a`` itself if it is C-contiguous, else a C-contiguous copy (kernels index it flat)."""
        return self.xp.ascontiguousarray(a)

    def to_numpy(self, a: Any) -> np.ndarray:
        """A NumPy copy of ``a``: it never aliases the model's buffers."""
        return np.array(a, copy=True)

    def take_rows(self, a: Array, order: Array, out: Array) -> None:
        """out = a[order] (rows), into ``out``.  NumPy buffers the whole result first unless
        told the indices are safe (mode='clip'; ``order`` is a permutation): a hidden copy
        of the data every epoch."""
        np.take(a, order, axis=0, out=out, mode="clip")

    def synchronize(self) -> None:
        """Wait for queued device work; a no-op on the host."""


class CupyBackend(Backend):
    """CuPy on the current CUDA device.  ``fused`` is the compiled kernels' mode
    (:func:`gpumlp.kernels.fused_mode`): None reads ``$GPUMLP_FUSED`` (default ``auto``),
    True is ``on``, False ``off``."""

    name = "cupy"
    is_gpu = True

    def __init__(self, cupy: Any, fused: bool | None = None) -> None:
        self.xp = cupy
        self.mode = kernels.fused_mode(fused)
        self.fused = self.mode != "off"

    def kernel(self, k: kernels.Kernel) -> Callable[..., Any]:
        twin = functools.partial(k.twin, self.xp)
        if not k.cuda:
            return twin
        if self.mode == "off":                 # callers allocate the twins' scratch
            return twin
        compiled = cast(Callable[..., Any], k.launch)(self.xp, k)      # a kernel with a template has a launcher
        return compiled if self.mode == "on" else check.checked(self, k, compiled, twin)

    def dot(self, x: Array, y: Array, out: Array) -> None:
        # cuBLAS's dot into a device scalar: a 1 × 1 matmul takes CuPy's reduction path, and a
        # sum over the last axis its CUB path, each with temporaries at every call
        blas = getattr(self.xp, "cublas", None) or importlib.import_module(self.xp.__name__ + ".cublas")
        blas.dot(x, y, out=out)

    def owns(self, a: Any) -> bool:
        return isinstance(a, self.xp.ndarray)

    def asarray(self, a: Any, dtype: Any, copy: bool = True) -> Array:
        return self.xp.array(a, dtype=dtype, copy=True if copy else None)

    def to_numpy(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a) if isinstance(a, self.xp.ndarray) else np.array(a, copy=True)

    def take_rows(self, a: Array, order: Array, out: Array) -> None:
        self.xp.take(a, order, axis=0, out=out)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()


class _OutParam:
    """Wraps an array-API namespace so that ``fn(..., out=buf)`` works as it does
    in NumPy and CuPy: the result is computed, then written into ``buf``."""

    def __init__(self, namespace):
        self._ns = namespace

    def __getattr__(self, name):
        attr = getattr(self._ns, name)
        if not callable(attr) or isinstance(attr, type):
            return attr

        def call(*args, out=None, **kwargs):
            # NumPy promotes bool to the other operand's float type; the standard does not.
            floats = [a.dtype for a in args if hasattr(a, "dtype") and self._ns.isdtype(a.dtype, "real floating")]
            if floats:
                args = tuple(self._ns.astype(a, floats[0]) if hasattr(a, "dtype") and a.dtype == self._ns.bool
                             else a for a in args)
            result = attr(*args, **kwargs)
            if out is None:
                return result
            out[...] = result if result.dtype == out.dtype else self._ns.astype(result, out.dtype)
            return out

        call.__name__ = name
        setattr(self, name, call)
        return call


class ArrayAPIBackend(Backend):
    """Any namespace that follows the Python array API standard, on a given device.

    CI runs the core tests on ``array_api_strict`` with its fake non-CPU device:
    there, a stray ``numpy`` call on a device array raises, exactly as it would
    on CuPy, so NumPy-only code in the device path fails without a GPU.
    """

    def __init__(self, namespace: Any, device: Any = None) -> None:
        self.namespace = namespace
        self.xp = _OutParam(namespace)
        self.device = device
        self.name = f"{namespace.__name__}:{device}"

    def _on_device(self):
        return {} if self.device is None else {"device": self.device}

    def empty(self, shape: int | tuple[int, ...], dtype: Any) -> Array:
        return self.namespace.empty(shape, dtype=dtype, **self._on_device())

    def zeros(self, shape: int | tuple[int, ...], dtype: Any) -> Array:
        return self.namespace.zeros(shape, dtype=dtype, **self._on_device())

    def arange(self, n: int) -> Array:
        return self.namespace.arange(n, **self._on_device())

    def owns(self, a: Any) -> bool:
        return (hasattr(a, "__array_namespace__") and a.__array_namespace__() is self.namespace
                and (self.device is None or a.device == self.device))

    def asarray(self, a: Any, dtype: Any, copy: bool = True) -> Array:
        if self.owns(a):
            return self.namespace.astype(a, dtype, copy=copy)
        return self.namespace.asarray(np.asarray(a), dtype=dtype, copy=True, **self._on_device())

    def transposed(self, a: Array) -> Array:
        return self.namespace.asarray(a.T, copy=True)

    def contiguous(self, a: Array) -> Array:
        return a                   # the standard has no memory layout

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.array(np.from_dlpack(a), copy=True)

    def take_rows(self, a: Array, order: Array, out: Array) -> None:
        self.xp.take(a, order, axis=0, out=out)


_NUMPY = Backend()
_auto = None     # the backend "auto" resolved to, decided once per process


MIN_CUPY = 14             # cupy.astype and cupy.bool, which the device path uses


class Probe(tuple):
    """``(backend, why_not)`` from :func:`probe_cupy`, and ``absent``: True when there is simply
    no GPU here (no CuPy, no driver, no device), False when one is there but broken."""

    absent = True


def _probe(backend, why_not=None, absent=True):
    p = Probe((backend, why_not))
    p.absent = absent
    return p


def probe_cupy() -> Probe:
    """``(CupyBackend, None)``, or ``(None, why not)`` naming the missing piece (a :class:`Probe`)."""
    try:
        import cupy
    except ImportError as e:
        return _probe(None, f"the CuPy package is not installed ({e}); "
                            "pip install -e '.[gpu]' (in the gpumlp checkout)")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: no driver, driver too old, ...
        return _probe(None, f"CuPy is installed but the CUDA driver is not usable ({e})")
    if count == 0:
        return _probe(None, "CuPy and the CUDA driver are present but no CUDA device was found")
    version = str(getattr(cupy, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_CUPY:
        return _probe(None, f"CuPy {version} is too old: gpumlp needs CuPy {MIN_CUPY} or newer "
                            f"(pip install -U 'cupy-cuda12x>={MIN_CUPY}', or cupy-cuda13x)", absent=False)
    try:                     # a GEMM and a compiled kernel: cuBLAS and NVRTC must load
        a = cupy.ones((2, 2), dtype=cupy.float32)
        float(cupy.maximum(a @ a, 0).sum())
    except Exception as e:
        return _probe(None, f"a CUDA device is present but CuPy's CUDA libraries failed ({type(e).__name__}: {e}); "
                            "the [ctk] extra of your CuPy package brings them (cupy-cuda12x[ctk] or "
                            "cupy-cuda13x[ctk])", absent=False)
    return _probe(CupyBackend(cupy), None, absent=False)


def get_backend(device: str | Backend | None = None) -> Backend:
    """Resolve ``device`` to a backend.

    ``None`` reads ``$GPUMLP_DEVICE`` (default ``"auto"``).  ``"auto"`` takes the
    GPU when CuPy imports and a CUDA device is present, otherwise NumPy, with one
    notice on stderr saying why.  ``"cpu"`` is always NumPy; ``"gpu"`` raises
    :class:`DeviceUnavailableError` when it cannot be had.  A :class:`Backend`
    instance is returned as it is.
    """
    global _auto
    if isinstance(device, Backend):
        return device
    source = "device"
    if device is None:
        device, source = os.environ.get("GPUMLP_DEVICE", "auto"), "$GPUMLP_DEVICE"
    key = str(device).strip().lower()
    if key == "cpu":
        return _NUMPY
    if key == "gpu":
        backend, why_not = probe_cupy()
        if backend is None:
            raise DeviceUnavailableError(f"device='gpu' cannot be used: {why_not}")
        return backend
    if key != "auto":
        raise ValueError(f"{source} must be one of {', '.join(DEVICES)} or a Backend; got {device!r}")
    if _auto is None:
        _auto, why_not = probe_cupy()
        if _auto is None:
            # a plain CPU machine is told briefly, once per process; a broken GPU set-up in full
            brief = "CuPy is not installed" if why_not.startswith("the CuPy package is not installed") else why_not
            print(f"gpumlp: using the CPU ({brief})", file=sys.stderr)
            _auto = _NUMPY
    return _auto


def backend_of(a: Any) -> Backend:
    """The backend an existing array lives on (NumPy for host arrays and lists)."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(a, getattr(cupy, "ndarray", ())):
        return CupyBackend(cupy)
    if not isinstance(a, (np.ndarray, np.generic)) and hasattr(a, "__array_namespace__"):
        return ArrayAPIBackend(a.__array_namespace__(), getattr(a, "device", None))
    return _NUMPY


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy array with the values of ``a``, which may live on any device (always a copy)."""
    return backend_of(a).to_numpy(a)
