"""How many BLAS threads a CPU training run uses.

A narrow network's GEMMs are too small to split: a second thread only adds
synchronisation, and on a loaded machine its spin-waiting worker can slow a run
many times over.  So ``gpumlp train`` picks the count itself, deterministically
from the work of one step, unless ``--threads`` says otherwise, and sets it with
threadpoolctl (the library scikit-learn uses) around the run.
"""
import os

from threadpoolctl import threadpool_limits

__all__ = ["auto_threads", "step_flops", "limit"]

# One step's GEMM work above which a second thread pays for itself (see README, Performance).
MIN_FLOPS_PER_THREAD = 200e6


def step_flops(sizes, batch_size):
    """The multiply-adds ×2 of one step's GEMMs: forward, W^T Δ and dW for every layer."""
    return 6.0 * batch_size * sum(a * b for a, b in zip(sizes, sizes[1:]))


def auto_threads(sizes, batch_size, cpus=None):
    """1 thread, plus one per further MIN_FLOPS_PER_THREAD of work per step, up to the CPUs."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return int(max(1, min(cpus, step_flops(sizes, batch_size) // MIN_FLOPS_PER_THREAD)))


def limit(threads):
    """A context manager that runs BLAS and OpenMP pools with ``threads`` threads."""
    return threadpool_limits(limits=threads)
