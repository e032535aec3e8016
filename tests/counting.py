"""A NumPy backend that counts what a GPU would launch, and every new buffer.

Its arrays are a subclass of ``numpy.ndarray`` that intercepts every ufunc (array
operators included: ``D *= m`` is ``multiply``), every other NumPy function, and
``a[...] = b`` copies.  Each one that does work is logged by name as a kernel;
``matmul`` is logged apart, as a GEMM (or GEMV).  Views (slicing, ``.T``,
``reshape`` of a contiguous array) launch nothing and are not logged.  An operation
that returns a buffer it had to allocate (no ``out=``) is also logged as an
allocation.

With ``fused=True`` the backend stands in for CuPy with the compiled kernels: a
fused kernel is logged once, by its name, and its NumPy twin runs unlogged (with
the scratch :meth:`gpumlp.kernels.Kernel.lend` makes once and lends, as the
compiled kernel needs none).  With ``fused=False``
each call inside the twins is logged, as it would launch on CuPy with the switch off.
"""
import contextlib
import functools

import numpy as np

from gpumlp.backend import Backend

VIEWS = {"reshape", "transpose", "ravel", "squeeze", "expand_dims", "shape", "ndim", "result_type",
         "may_share_memory", "shares_memory", "isfinite_view"}


class Tally:
    def __init__(self):
        self.gemm, self.other, self.allocs = [], [], []
        self.paused = 0

    def clear(self):
        self.gemm.clear(), self.other.clear(), self.allocs.clear()

    def log(self, name):
        if not self.paused:
            (self.gemm if name == "matmul" else self.other).append(name)

    def alloc(self, name, result):
        if not self.paused:
            self.allocs.append(f"{name} -> {getattr(result, 'shape', ())}")

    @contextlib.contextmanager
    def pause(self):
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
    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        name = ufunc.__name__ + ("" if method == "__call__" else "." + method)
        TALLY.log(name)
        with TALLY.pause():
            result = getattr(ufunc, method)(*_plain(inputs), out=_plain(out), **kwargs)
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

    def astype(self, dtype, *args, **kwargs):
        TALLY.log("astype")
        with TALLY.pause():
            result = self.view(np.ndarray).astype(dtype, *args, **kwargs)
        TALLY.alloc("astype", result)
        return _wrap(result)

    def copy(self, *args, **kwargs):
        TALLY.log("copy")
        with TALLY.pause():
            result = self.view(np.ndarray).copy(*args, **kwargs)
        TALLY.alloc("copy", result)
        return _wrap(result)


class CountingBackend(Backend):
    """NumPy, counted.  ``fused`` as explained at the top."""

    is_gpu = True         # what it stands in for: the optimizer makes one pass, as on CuPy

    def __init__(self, fused):
        super().__init__()
        self._twins = np      # the twins call NumPy's functions, as they call CuPy's on a GPU
        self.fused = fused
        self.name = f"counting({'fused' if fused else 'twins'})"

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype).view(CountingArray)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype).view(CountingArray)

    def arange(self, n):
        return np.arange(n).view(CountingArray)

    def asarray(self, a, dtype, copy=True):
        return np.array(_plain(a), dtype=dtype, copy=True if copy else None).view(CountingArray)

    def transposed(self, a):
        return np.ascontiguousarray(_plain(a).T).view(CountingArray)

    def to_numpy(self, a):
        return np.array(_plain(a), copy=True)

    def kernel(self, k):
        if not self.fused or k.cuda is None:
            return super().kernel(k)

        twin = k.lend(Backend(), functools.partial(k.twin, np))     # the compiled kernel needs no scratch

        def run(*args):                       # one compiled kernel: logged once, its twin run unlogged
            TALLY.log(k.name)
            with TALLY.pause():
                twin(*_plain(args))
        return run
