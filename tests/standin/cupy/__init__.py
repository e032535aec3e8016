"""A stand-in for CuPy on the CPU: the device that CPU CI rehearses the GPU tests on.

``PYTHONPATH=tests/standin`` makes ``import cupy`` this module (``scripts/gpu_check.sh``'s
rehearsal does that); in-process tests put it in ``sys.modules["cupy"]`` for the duration of
a test (``tests/test_gpu.py``'s ``cupy`` fixture).  gpumlp then sees a CUDA device and runs its
CuPy backend on it, unchanged:

* **arrays** are :class:`ndarray`, a NumPy subclass with CuPy's rules: an operation that mixes
  them with host (NumPy) arrays raises TypeError, as CuPy does, so a stray host array in the
  device path fails here; ``backend_of`` and the backend's ownership checks know them as device
  arrays, so the public losses run the compiled kernels on them, not the NumPy path.
  (Unlike CuPy, ``numpy.asarray`` of one is not refused: NumPy passes its subclasses through.)
* **compiled kernels**: :class:`RawModule` builds the CUDA source as host C++ (``tests/hostcuda``)
  and runs every (block, thread) pair, with the launch checks of that build (argument types,
  declared layouts, guard elements, thread orders).
* **the memory pool** (:func:`get_default_memory_pool`) counts the bytes of every array this
  module hands out, as CuPy's pool does: freed blocks stay cached (``total_bytes``) and are
  reused without looking at ``set_limit``, which is checked only when the pool must grow;
  ``free_all_blocks`` drops the cache.  A 1 × 1 ``matmul`` is modelled as CuPy runs it, through
  its reduction path with a temporary the size of the operands, and so is a reduction over the
  whole array or the last axis of a C-contiguous one, which CuPy hands to CUB with temporaries;
  ``cublas.dot`` into a device scalar takes none.
* ``GPUMLP_STANDIN_BROKEN=nvrtc`` makes :class:`RawModule` fail, as a broken NVRTC would.

What it cannot stand in for: NVRTC itself, cuBLAS's and the GPU's roundings, TF32, timings.
"""
import os
import sys
import types
import weakref

import numpy as _np

__version__ = "14.0.0-standin"

_HERE = os.path.dirname(os.path.abspath(__file__))
_TESTS = os.path.dirname(os.path.dirname(_HERE))           # tests/, where hostcuda lives


class OutOfMemoryError(MemoryError):
    """As cupy.cuda.memory.OutOfMemoryError (gpumlp recognises it by its name)."""


# -- the memory pool ----------------------------------------------------------------------
class _Pool:
    def __init__(self):
        self.used = self.total = self.limit = 0
        self.hooks = []

    def used_bytes(self):
        return self.used

    def total_bytes(self):
        return self.total

    def free_bytes(self):
        return self.total - self.used

    def free_all_blocks(self):
        self.total = self.used

    def set_limit(self, size=None, fraction=None):
        self.limit = int(size or 0)

    def get_limit(self):
        return self.limit

    def malloc(self, nbytes):
        nbytes = -(-int(nbytes) // 512) * 512                # CuPy rounds blocks up to 512 bytes
        if self.used + nbytes > self.total:                  # no cached block: ask "CUDA" for more
            if self.limit and self.used + nbytes > self.limit:
                raise OutOfMemoryError(f"Out of memory allocating {nbytes:,} bytes (allocated so far: "
                                       f"{self.used:,} bytes, limit set to: {self.limit:,} bytes).")
            self.total = self.used + nbytes
        self.used += nbytes
        for hook in self.hooks:
            hook.malloc_postprocess(device_id=0, size=nbytes, mem_size=nbytes, mem_ptr=0, pmem_id=0)
        return nbytes

    def free(self, nbytes):
        self.used -= nbytes
        for hook in self.hooks:
            hook.free_postprocess(device_id=0, mem_size=nbytes, mem_ptr=0, pmem_id=0)


_POOL = _Pool()


def get_default_memory_pool():
    return _POOL


def _owned(host):
    """A device array over the new host buffer ``host``, counted in the pool until it is freed."""
    nbytes = _POOL.malloc(host.nbytes)
    a = host.view(ndarray)
    weakref.finalize(host, _POOL.free, nbytes)
    return a


# -- arrays -------------------------------------------------------------------------------
def _host(x, what):
    """The NumPy view of a device array; a host array is refused, as CuPy refuses it."""
    if isinstance(x, ndarray):
        return x.view(_np.ndarray)
    if isinstance(x, _np.ndarray):
        raise TypeError(f"Unsupported type {type(x)} in {what}: a host (NumPy) array mixed with device "
                        "arrays; move it with cupy.asarray first")
    if isinstance(x, (list, tuple)):
        return type(x)(_host(v, what) for v in x)
    return x


def _result(x, operands):
    """A result as a device array: a new buffer is counted, a view of an operand is not."""
    if isinstance(x, tuple):
        return tuple(_result(v, operands) for v in x)
    if isinstance(x, _np.generic):
        return _owned(_np.asarray(x).copy())                # a 0-d device array, as CuPy returns
    if not isinstance(x, _np.ndarray):
        return x
    if any(isinstance(o, _np.ndarray) and _np.shares_memory(x, o) for o in operands):
        return x.view(ndarray)
    return _owned(x)


class ndarray(_np.ndarray):
    """A device array of the stand-in: NumPy's memory, CuPy's rules."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        what = f"{ufunc.__name__}{'' if method == '__call__' else '.' + method}"
        args = _host(inputs, what)
        if ufunc is _np.matmul and method == "__call__":
            _model_matmul(args)
        if method == "reduce":
            _model_cub(args[0], kwargs.get("axis", 0))
        result = getattr(ufunc, method)(*args, out=None if out is None else _host(out, what), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _result(result, [a for a in args if isinstance(a, _np.ndarray)])

    def __array_function__(self, func, types_, args, kwargs):
        what = func.__name__
        hargs, hkwargs = _host(args, what), {k: _host(v, what) for k, v in kwargs.items()}
        if what in _REDUCTIONS and hargs:
            _model_cub(hargs[0], hkwargs.get("axis", hargs[1] if len(hargs) > 1 else None))
        result = func(*hargs, **hkwargs)
        if kwargs.get("out") is not None:
            return kwargs["out"]
        operands = [a for a in list(hargs) + list(hkwargs.values()) if isinstance(a, _np.ndarray)]
        return _result(result, operands)

    def __setitem__(self, key, value):
        _np.ndarray.__setitem__(self.view(_np.ndarray), key, _host(value, "setitem"))

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        host = self.view(_np.ndarray)
        out = host.astype(dtype, order=order, casting=casting, copy=copy)
        return self if out is host else _owned(out)

    def copy(self, order="C"):
        return _owned(self.view(_np.ndarray).copy(order=order))

    @property
    def __cuda_array_interface__(self):
        """What marks an array as living on a CUDA device (a host backend refuses it)."""
        host = self.view(_np.ndarray)
        return {"shape": host.shape, "typestr": host.dtype.str, "strides": host.strides,
                "data": (host.__array_interface__["data"][0], False), "version": 3}

    def get(self):
        """A host copy, as cupy.ndarray.get()."""
        return _np.array(self.view(_np.ndarray), copy=True)

    def __repr__(self):
        return f"standin.{_np.ndarray.__repr__(self.view(_np.ndarray))}"


def _model_matmul(args):
    """CuPy's matmul runs a product with a 1 × 1 result through its reduction path, with a
    temporary the size of the operands: taken from the pool and given back at once."""
    a, b = args[0], args[1]
    if getattr(a, "ndim", 0) == 2 and getattr(b, "ndim", 0) == 2 and a.shape[0] == 1 and b.shape[1] == 1 \
            and a.shape[1] > 1:
        _POOL.free(_POOL.malloc(a.shape[1] * a.dtype.itemsize))


_REDUCTIONS = {"sum", "max", "min", "amax", "amin", "argmax", "argmin", "prod", "mean", "all", "any"}


def _model_cub(a, axis):
    """CuPy (CUPY_ACCELERATORS=cub, its default) runs a reduction over the whole array, or over
    the last axis of a C-contiguous one, through CUB, which takes its result, segment offsets
    and a workspace from the pool at every call: taken and given back at once here."""
    if not isinstance(a, _np.ndarray) or a.size < 2:
        return
    last = axis is None or (a.ndim >= 2 and a.flags.c_contiguous and axis in (-1, a.ndim - 1, (a.ndim - 1,), (-1,)))
    if last:
        rows = 1 if axis is None else a.size // a.shape[-1]
        _POOL.free(_POOL.malloc(rows * a.dtype.itemsize + (rows + 1) * 4 + 512))


# -- creating and moving arrays -----------------------------------------------------------
def empty(shape, dtype=float, order="C"):
    return _owned(_np.empty(shape, dtype=dtype, order=order))


def zeros(shape, dtype=float, order="C"):
    return _owned(_np.zeros(shape, dtype=dtype, order=order))


def ones(shape, dtype=float, order="C"):
    return _owned(_np.ones(shape, dtype=dtype, order=order))


def full(shape, fill_value, dtype=None, order="C"):
    return _owned(_np.full(shape, fill_value, dtype=dtype, order=order))


def arange(*args, dtype=None):
    return _owned(_np.arange(*args, dtype=dtype))


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    """Host data goes to the device (always a new buffer); a device array is copied unless
    ``copy`` is False or None and nothing needs to change."""
    host = obj.view(_np.ndarray) if isinstance(obj, ndarray) else obj
    if isinstance(obj, ndarray) and not copy:
        out = _np.asarray(host, dtype=dtype, order=None if order == "K" else order)
        return obj if out is host else _owned(out)
    return _owned(_np.array(host, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asarray(obj, dtype=None, order=None):
    return array(obj, dtype=dtype, copy=None, order=order or "K")


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)} in ascontiguousarray")
    host = a.view(_np.ndarray)
    out = _np.ascontiguousarray(host, dtype=dtype)
    return a if out is host else _owned(out)


def asnumpy(a):
    """A host copy of a device array; anything else as numpy.asarray gives it (no copy), as CuPy."""
    return a.get() if isinstance(a, ndarray) else _np.asarray(a)


def __getattr__(name):
    """NumPy's functions, ufuncs, dtypes and constants: called on device arrays they dispatch
    to :class:`ndarray` and return device arrays."""
    try:
        return getattr(_np, name)
    except AttributeError:
        raise AttributeError(f"the CuPy stand-in has no attribute {name!r}") from None


# -- cuBLAS, CUDA and NVRTC ---------------------------------------------------------------
def _dot(x, y, out=None):
    """cupy.cublas.dot: x · y for 1-D device vectors of one float dtype, written into ``out``'s
    first element (a device scalar: no temporary) or returned as a new 0-d device array."""
    for v in (x, y):
        if not isinstance(v, ndarray) or v.ndim != 1:
            raise ValueError(f"cublas.dot takes 1-D device vectors; got {type(v).__name__} "
                             f"of shape {getattr(v, 'shape', None)}")
    if x.size != y.size or x.dtype != y.dtype or x.dtype.char not in "fd":
        raise ValueError(f"cublas.dot: mismatched vectors {x.dtype}[{x.size}] and {y.dtype}[{y.size}]")
    value = _np.dot(x.view(_np.ndarray), y.view(_np.ndarray))
    if out is None:
        return _owned(_np.asarray(value))
    if not isinstance(out, ndarray) or out.dtype != x.dtype:
        raise ValueError(f"cublas.dot: out must be a device array of {x.dtype}")
    out.view(_np.ndarray)[(0,) * out.ndim] = value
    return out


cublas = types.SimpleNamespace(dot=_dot)


class _Stream:
    def synchronize(self):
        pass


class _Device:
    def __init__(self, device=0):
        self.id = int(device)

    def use(self):
        if self.id != 0:
            raise ValueError(f"the stand-in has one device (0); got {self.id}")

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class MemoryHook:
    """cupy.cuda.MemoryHook: its postprocess methods follow the pool's allocations while it is entered."""

    name = "standin-hook"

    def malloc_postprocess(self, **kwargs):
        pass

    def free_postprocess(self, **kwargs):
        pass

    def __enter__(self):
        _POOL.hooks.append(self)
        return self

    def __exit__(self, *exc):
        _POOL.hooks.remove(self)
        return False


def _properties(device=0):
    return {"name": b"gpumlp CPU stand-in (host-compiled kernels)", "totalGlobalMem": 8 * 2**30,
            "major": 9, "minor": 0}


runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDeviceProperties=_properties,
                                runtimeGetVersion=lambda: 13000, driverGetVersion=lambda: 13000)
cuda = types.SimpleNamespace(runtime=runtime, Device=_Device, MemoryHook=MemoryHook,
                             get_current_stream=lambda: _Stream(), Stream=_Stream,
                             memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
                             Event=None)


class CompileException(RuntimeError):
    """As cupy.cuda.compiler.CompileException."""


def RawModule(code, options=(), name_expressions=()):
    """cupy.RawModule: the source built as host C++ (tests/hostcuda), launches checked."""
    if os.environ.get("GPUMLP_STANDIN_BROKEN") == "nvrtc":
        raise CompileException("nvrtc: error: failed to load builtins (GPUMLP_STANDIN_BROKEN=nvrtc)")
    if _TESTS not in sys.path:
        sys.path.insert(0, _TESTS)
    from hostcuda import HostModule
    return HostModule(code, options=options, name_expressions=name_expressions)


def is_available():
    return True
