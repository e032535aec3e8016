"""Launching the compiled kernels of ``fused.cu`` through CuPy.

One ``cupy.RawModule`` per CuPy module and process, built by NVRTC on first use with every
instance of :func:`gpumlp.kernels.source.instantiations`; after that a launch is one
dictionary look-up and the call.  Each launcher passes its arguments as the kernel's C
signature declares them: arrays, ``np.int32`` for ``int``, ``np.int64`` for ``long long`` and
the array's own scalar type for ``T`` (never a Python float, which CuPy would pass as a double).

:data:`LAYOUTS` declares, for each kernel, the memory layout each of its array parameters
must have, in order: ``"C"`` (C-contiguous, indexed flat) or ``"strided"`` (any layout; the
launcher passes the element strides).  CI's host build of the source checks every launch
against it (``tests/hostcuda``).
"""
from collections.abc import Callable
from typing import Any

import numpy as np

from . import source

__all__ = ["THREADS", "MAX_BLOCKS", "OPTIONS", "LAYOUTS", "build"]

THREADS = 256                    # threads per block
MAX_BLOCKS = 65535               # grid-stride loops cover the rest
OPTIONS = ("--std=c++14", "--fmad=false")          # no fused multiply-add: the twins' roundings
_SCALARS = {"float32": np.float32, "float64": np.float64}

LAYOUTS = {
    "bias_act": ("C", "C", "C"),                       # S, b, Z
    "act_grad": ("C", "C", "C"),                       # S, Z, D
    "ce_loss": ("C", "C", "C", "C", "C"),              # Y, labels, D, loss, hit
    "hinge_loss": ("C", "C", "C", "C", "C"),
    "mse_loss": ("C", "C", "C", "C", "C"),
    "squared_error_loss": ("C", "C", "C", "C"),        # Y, TT (n × K), D, loss
    "sgd": ("C", "C", "C"),                            # p, g, v
    "sample_sq": ("C", "strided", "C"),                # D, Z (Z_0 is an F-contiguous view), out
}

_modules: dict = {}                    # cupy module -> {None: its RawModule, (name, dtype): function}


def _module(cupy):
    fns = _modules.get(cupy)
    if fns is None:
        fns = _modules[cupy] = {None: cupy.RawModule(code=source.CUDA_SOURCE, options=OPTIONS,
                                                     name_expressions=source.instantiations())}
    return fns


def _function(cupy, template, dtype):
    """The compiled kernel ``template`` (a name expression with ``{T}``) at ``dtype``."""
    fns = _modules.get(cupy) or _module(cupy)
    fn = fns.get((template, dtype))
    if fn is None:
        fn = fns[(template, dtype)] = fns[None].get_function(template.format(T=source.TYPES[np.dtype(dtype).name]))
    return fn


def build(cupy: Any) -> Any:
    """Compile the module now and fetch every instance; returns how many there are.  The
    pre-flight of ``scripts/gpu_check.sh`` calls it, so that an NVRTC failure shows at once."""
    fns = _module(cupy)
    names = source.instantiations()
    for name in names:
        fns[None].get_function(name)
    return len(names)


def _grid(n):
    return (max(1, min((n + THREADS - 1) // THREADS, MAX_BLOCKS)),), (THREADS,)


def _scalar(dtype):
    return _SCALARS[np.dtype(dtype).name]


def bias_act(cupy: Any, kernel: Any) -> Callable:
    def run(S, b, Z):
        total = S.size
        _function(cupy, kernel.cuda, S.dtype)(*_grid(total), (S, S if b is None else b, Z, np.int64(S.shape[1]),
                                                              np.int64(total)))
    return run


def act_grad(cupy: Any, kernel: Any) -> Callable:
    def run(S, Z, D, mask=None, tmp=None):
        _function(cupy, kernel.cuda, D.dtype)(*_grid(D.size), (S, Z, D, np.int64(D.size)))
    return run


def label_loss(cupy: Any, kernel: Any) -> Callable:
    def run(Y, labels, D, loss, hit, inv_norm, margin, s=None):
        K, n = Y.shape
        T = _scalar(Y.dtype)
        _function(cupy, kernel.cuda, Y.dtype)(*_grid(n), (Y, labels, D, loss, hit, np.int32(K), np.int64(n),
                                                          T(inv_norm), T(margin)))
    return run


def target_loss(cupy: Any, kernel: Any) -> Callable:
    def run(Y, TT, D, loss, hit, inv_norm, margin, s=None):
        K, n = Y.shape
        T = _scalar(Y.dtype)
        _function(cupy, kernel.cuda, Y.dtype)(*_grid(n), (Y, TT, D, loss, np.int32(K), np.int64(n),
                                                          T(inv_norm / K), T(0.5 * inv_norm / K)))
    return run


def _template(kernel):
    """The kernel's template for the variant a call selects (:meth:`Kernel.variant`), each
    made once."""
    made: dict = {}

    def template(args):
        values = kernel.variant(args)
        name = made.get(values)
        if name is None:
            name = made[values] = kernel.template(values)
        return name
    return template


def sgd(cupy: Any, kernel: Any) -> Callable:
    template = _template(kernel)

    def run(p, g, v, lr, momentum, weight_decay, tmp=None):
        T = _scalar(p.dtype)
        fn = _function(cupy, template((p, g, v, lr, momentum, weight_decay)), p.dtype)
        fn(*_grid(p.size), (p, g, p if v is None else v, np.int64(p.size), T(lr), T(momentum), T(weight_decay)))
    return run


def sample_sq(cupy: Any, kernel: Any) -> Callable:
    template = _template(kernel)

    def run(D, Z, bias, first, out, tmp=None, dn=None, zn=None):
        n = D.shape[1]
        zr, zc = (s // Z.itemsize for s in Z.strides)
        fn = _function(cupy, template((D, Z, bias, first)), D.dtype)
        fn(*_grid(n), (D, Z, out, np.int32(D.shape[0]), np.int32(Z.shape[0]), np.int64(n), np.int64(zr), np.int64(zc)))
    return run
