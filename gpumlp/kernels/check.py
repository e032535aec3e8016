"""The first-launch check that puts the compiled kernels on by default (``GPUMLP_FUSED=auto``).

The first launch of each (kernel, dtype) instance in a process also runs the kernel's twin on
copies of the same inputs, with the twin's scratch, and compares what the two wrote: float
results within :data:`TOLERANCE` (normwise, ‖a − b‖∞ / ‖b‖∞, with NaN and ±inf in the same
places), bool results exactly.  A mismatch, or a compiled form that cannot be built or
launched, prints one warning naming the kernel, writes the twin's results in place of the
compiled kernel's, and switches that instance to its twin for the rest of the process (its
scratch made once per shape).  Later launches cost a dictionary look-up.  The check holds,
once, a copy of the kernel's arguments and the twin's scratch.

What it cannot do: a launch that corrupts the CUDA context (an out-of-bounds write, say)
cannot be undone from Python, which is why CI runs every instance of the source on the CPU
with guard elements around every buffer (``tests/hostcuda``) before a card sees it.  And it
checks one launch, on that launch's data: a kernel wrong only for other shapes or values is
caught by those tests, not here.
"""
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["TOLERANCE", "checked", "verdicts"]

TOLERANCE = {"float32": 1e-5, "float64": 1e-12}      # the gpu tests' tolerances
verdicts: dict = {}            # (template, variant, dtype name) -> True (compiled agrees) or False (use the twin)


def _difference(a, b, dtype):
    """Why host arrays ``a`` (compiled) and ``b`` (twin) disagree, or None."""
    if a.dtype == np.bool_:
        bad = np.count_nonzero(a != b)
        return f"{bad} of {a.size} flags differ" if bad else None
    a, b = a.astype(np.float64), b.astype(np.float64)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return "NaN in different places"
    inf = np.isinf(a) | np.isinf(b)
    if not np.array_equal(a[inf], b[inf]):
        return "infinities in different places"
    a, b = a[np.isfinite(b)], b[np.isfinite(b)]
    if not b.size:
        return None
    scale, diff = np.max(np.abs(b)), np.max(np.abs(a - b))
    if scale == 0:
        return None if diff == 0 else f"non-zero values ({diff:.3g}) where the twin wrote zeros"
    err = float(diff / scale)
    return None if err <= TOLERANCE[dtype] else f"relative error {err:.3g} > {TOLERANCE[dtype]:g}"


def checked(backend: Any, kernel: Any, compiled: Callable, twin: Callable) -> Callable:
    """A launcher for ``kernel`` that runs ``compiled`` once it has agreed with ``twin`` (both
    take the kernel's arguments; ``twin`` needs its scratch, which :attr:`Kernel.scratch`
    makes, once per shape), and ``twin`` for good once it has not, or once the compiled form
    could not be built or launched."""
    fallback = kernel.lend(backend, twin)

    def run(*args):
        dtype = np.dtype(args[0].dtype).name
        key = (kernel.cuda, kernel.variant(args), dtype)
        verdict = verdicts.get(key)
        if verdict:
            return compiled(*args)
        if verdict is False:
            return fallback(*args)
        copies = {}                                    # id -> copy: arguments passed twice stay one buffer
        xp = backend.xp

        def copy(a):
            if a is None or not hasattr(a, "shape"):
                return a
            if id(a) not in copies:
                copies[id(a)] = xp.array(a, copy=True)
            return copies[id(a)]
        mirror = tuple(copy(a) for a in args)
        why = None
        try:
            compiled(*args)
        except Exception as e:        # NVRTC, the driver, a launch refused: nothing was written
            why = f"it could not be built or launched: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        fallback(*mirror)
        if why is None:
            for i in kernel.outputs:
                if args[i] is not None:
                    why = _difference(backend.to_numpy(args[i]), backend.to_numpy(mirror[i]), dtype)
                    if why:
                        why = f"it disagreed with its twin at its first launch ({why})"
                        break
        verdicts[key] = why is None
        if why:
            warnings.warn(f"gpumlp: the compiled kernel {kernel.instance(args, dtype)} is not used: {why}; this "
                          f"process runs its twin from now on", RuntimeWarning, stacklevel=2)
            for i in kernel.outputs:
                if args[i] is not None:
                    args[i][...] = mirror[i]
    return run
