"""Validation of what users pass in, at the public API.

Checks that must read values (finiteness, label range) synchronise with the
device when the data lives there, so they run only at the public boundary: the
training loop, the scoring and the benchmark check their data once and then call
the private methods, which never check.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np


def shape_of(a: Any) -> tuple:
    """The shape of an array or of a nested list, as a tuple."""
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


def isdtype(backend: Any, dtype: Any, kinds: Any) -> bool:
    """``xp.isdtype`` for NumPy/CuPy dtypes and for an array-API backend's own dtypes."""
    xp = np if isinstance(dtype, np.dtype) else backend.namespace
    return xp.isdtype(dtype, kinds)


def _readable(backend, a, name):
    """``(a, on_host)``: ``a`` itself if it lives on ``backend``, else as a NumPy array.

    An array of another library or device (a CuPy array given to a CPU model, a
    torch tensor) is an error, never a silent copy."""
    if isinstance(a, np.ma.MaskedArray):
        raise ValueError(f"{name} is a masked array; fill or drop the masked values first "
                         f"({name}.filled(...) or {name}.compressed())")
    if backend.owns(a):
        return a, False
    foreign = hasattr(type(a), "__cuda_array_interface__") or not isinstance(a, (np.ndarray, np.generic)) and any(
        hasattr(type(a), attr) for attr in ("__array_namespace__", "__dlpack__"))
    if foreign:
        raise ValueError(
            f"{name} is a {type(a).__module__}.{type(a).__name__}, an array of another library or "
            f"device than this model's ({backend.name}); convert it explicitly (gpumlp.to_numpy({name}) "
            "gives a NumPy array), or build the model on its device")
    try:
        return np.asarray(a), True
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name} could not be read as an array: {e}") from None


REAL = ("real floating", "integral", "bool")


def to_device(backend: Any, a: Any, name: str, dtype: Any, copy: bool = False) -> Any:
    """``a`` as an array of ``dtype`` on ``backend``'s device, after checking that it holds
    real numbers (not complex, object or strings) that are finite in ``dtype``.

    Host arrays are transferred; an array of another device is an error.  With
    ``copy=False`` an array already on the device in ``dtype`` is returned as it is.
    """
    a, on_host = _readable(backend, a, name)
    if not isdtype(backend, a.dtype, REAL):
        raise ValueError(f"{name} must hold real numbers (float, int or bool) to be cast to "
                         f"{dtype}; got dtype {a.dtype}, which cannot be cast safely")
    with np.errstate(over="ignore"):        # too large for dtype: caught as inf just below
        out = backend.asarray(a, backend.dtype(dtype) if isinstance(dtype, str) else dtype, copy=copy)
    xp = backend.xp
    finite = xp.isfinite(out)                # a byte per value; counted only when something is wrong
    if not bool(backend.to_numpy(xp.all(finite))):
        n_bad = int(backend.to_numpy(xp.sum(xp.astype(xp.logical_not(finite), backend.dtype("int64")))))
        raise ValueError(f"{name} contains NaN or inf ({n_bad} of {math.prod(out.shape)} values, counting "
                         f"values too large for {dtype}); remove or impute them first")
    return out


def to_labels(backend: Any, labels: Any, n: int, k: int) -> Any:
    """Integer class labels in [0, k) of shape (n,), as an int64 array on ``backend``."""
    labels, on_host = _readable(backend, labels, "labels")
    if not isdtype(backend, labels.dtype, "integral"):
        raise ValueError(f"labels must be an integer array of class indices; got dtype "
                         f"{labels.dtype} (if the values are whole numbers, use labels.astype(int))")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"labels must have shape ({n},), one label per column of Y; "
                         f"got shape {tuple(labels.shape)}")
    xp, read = (np, int) if on_host else (backend.xp, lambda v: int(backend.to_numpy(v)))
    lo, hi = read(xp.min(labels)), read(xp.max(labels))
    if lo < 0 or hi >= k:
        raise ValueError(f"labels must lie in [0, {k}) for {k} classes (the rows of Y); "
                         f"got values from {lo} to {hi}")
    return backend.contiguous(backend.asarray(labels, backend.dtype("int64"), copy=False))


def number(value: Any, name: str, ok: Callable[[float], bool] = lambda v: True,
           expected: str = "a finite number") -> float:
    """``value`` as a finite Python float for which ``ok`` holds; ValueError otherwise."""
    try:
        v = None if isinstance(value, (str, bytes)) else float(value)
    except (TypeError, ValueError):
        v = None
    if v is None or not math.isfinite(v) or not ok(v):
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return v


def positive_int(value: Any, name: str) -> int:
    """``value`` as a Python int >= 1 (bools and floats refused); ValueError otherwise."""
    try:
        if not isinstance(value, bool) and operator.index(value) >= 1:
            return operator.index(value)
    except TypeError:
        pass
    raise ValueError(f"{name} must be a positive integer; got {value!r}")
