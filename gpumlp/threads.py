"""How many BLAS threads a CPU training run uses.

A narrow network's GEMMs are too small to split: a second thread only adds
synchronisation, and on a loaded machine its spin-waiting worker can slow a run
many times over.  So ``gpumlp train`` picks the count itself, deterministically
from the work of one step, unless ``--threads`` says otherwise, and sets it with
threadpoolctl (the library scikit-learn uses) around the run.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from threadpoolctl import threadpool_limits

from .flops import step_flops

__all__ = ["auto_threads", "step_flops", "limit"]

# One step's GEMM work above which a second thread pays for itself (see README, Performance).
MIN_FLOPS_PER_THREAD = 200e6


def auto_threads(sizes: Sequence[int], batch_size: int, cpus: int | None = None) -> int:
    """1 thread, plus one per further MIN_FLOPS_PER_THREAD of work per step, up to the CPUs."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return int(max(1, min(cpus, step_flops(sizes, batch_size) // MIN_FLOPS_PER_THREAD)))


def limit(threads: int) -> Any:
    """A context manager that runs BLAS and OpenMP pools with ``threads`` threads."""
    return threadpool_limits(limits=threads)
