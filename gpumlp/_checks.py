"""Validation of what users pass in, at the host/device boundary.

Checks on host arrays run on the host, before the transfer.  Checks on device
arrays that must read values (finiteness, label range) synchronise with the
device; callers that have already validated their data (the training loop)
pass ``check=False`` to skip them.
"""
import math

import numpy as np


def _describe(a):
    return f"{type(a).__module__}.{type(a).__name__}"


def _is_foreign(backend, a):
    """An array of another device or library (a CuPy array given to a CPU model, ...)."""
    return (not isinstance(a, (np.ndarray, np.generic)) and not backend.owns(a)
            and any(hasattr(type(a), attr) for attr in
                    ("__array_namespace__", "__cuda_array_interface__", "__dlpack__")))


def _isdtype(backend, dtype, kinds):
    """``xp.isdtype`` for NumPy/CuPy dtypes and for an array-API backend's own dtypes."""
    xp = np if isinstance(dtype, np.dtype) else backend.namespace
    return xp.isdtype(dtype, kinds)


REAL = ("real floating", "integral", "bool")


def to_device(backend, a, name, dtype, check=True):
    """``a`` as a new array of ``dtype`` on ``backend``'s device, after checking that it
    is a real-valued array (not complex, object or strings) with only finite values.
    Host arrays are transferred; an array of another device is an error."""
    if _is_foreign(backend, a):
        raise ValueError(
            f"{name} is a {_describe(a)}, which lives on another device than this "
            f"model ({backend.name}); convert it explicitly, e.g. with gpumlp.to_numpy({name}), "
            "or build the model on that device")
    on_host = not backend.owns(a)
    if on_host:
        try:
            a = np.asarray(a)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{name} could not be read as an array: {e}") from None
    if not _isdtype(backend, a.dtype, REAL):
        raise ValueError(f"{name} must hold real numbers (float, int or bool) to be cast to "
                         f"{dtype}; got dtype {a.dtype}, which cannot be cast safely")
    if check:
        xp = np if on_host else backend.xp
        bad = xp.logical_not(xp.isfinite(a))
        if bool(xp.any(bad)):
            raise ValueError(f"{name} contains NaN or inf ({int(xp.sum(bad))} of "
                             f"{a.size} values); remove or impute them first")
    return backend.asarray(a, backend.dtype(dtype) if isinstance(dtype, str) else dtype)


def to_labels(backend, labels, n, k, check=True):
    """Integer class labels in [0, k) of shape (n,), as an int64 array on ``backend``."""
    if _is_foreign(backend, labels):
        to_device(backend, labels, "labels", "int64")     # raises the same clear error
    on_host = not backend.owns(labels)
    if on_host:
        labels = np.asarray(labels)
    if not _isdtype(backend, labels.dtype, "integral"):
        raise ValueError(f"labels must be an integer array of class indices; got dtype "
                         f"{labels.dtype} (if the values are whole numbers, use labels.astype(int))")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"labels must have shape ({n},), one label per column of Y; "
                         f"got shape {tuple(labels.shape)}")
    if check:
        xp = np if on_host else backend.xp
        lo, hi = int(xp.min(labels)), int(xp.max(labels))
        if lo < 0 or hi >= k:
            raise ValueError(f"labels must lie in [0, {k}) for {k} classes (the rows of Y); "
                             f"got values from {lo} to {hi}")
    return backend.asarray(labels, backend.dtype("int64"))


def number(value, name, ok=lambda v: True, expected="a finite number"):
    """``value`` as a finite Python float for which ``ok`` holds; ValueError otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = None
    if v is None or not math.isfinite(v) or not ok(v):
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return v
