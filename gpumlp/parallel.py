"""Data-parallel training over MPI, with mpi4py (the ``mpi`` extra).

P processes each load the same data and compute the same split, scaling and shuffling
(same seed, not offset by rank).  Every batch's columns are then cut into P
contiguous shares, as even as can be (they differ by at most one column, and are empty
on some ranks when a batch has fewer than P columns).  Each rank runs forward and
backward on its share with the loss normalised by the whole batch, so the shares'
gradients add up to the batch's; one ``Allreduce`` of the flat gradient buffer sums
them, and every rank makes the same update.  The result equals the 1-process run up to
the order of the floating-point sums.

Only ranks read and write through this module; everything else in gpumlp is unchanged
without MPI.  CuPy arrays are staged through host memory for the all-reduce (NCCL
between GPUs is not used yet).

    mpiexec -n 2 python -m mpi4py -m gpumlp train --out run

(``python -m mpi4py`` makes a failing rank abort the whole job instead of leaving the
others waiting in a collective.)
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

if TYPE_CHECKING:
    from .backend import Array, Backend

__all__ = ["DataParallel", "from_environment", "LAUNCHER_VARIABLES"]

# what MPI launchers put in each process's environment (MPICH/Hydra, Open MPI, PMIx, Slurm, Intel MPI)
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "HYDRA_CONTROL_FD",
                      "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS")


class DataParallel:
    """One MPI communicator's view of data-parallel training: ``rank``, ``size``,
    :meth:`shard` of a batch, :meth:`allreduce` of gradients, :meth:`broadcast` of
    parameters and :meth:`sum` of host values."""

    def __init__(self, comm: Any) -> None:
        self.MPI: Any = getattr(comm, "MPI", None)  # gpumlp.loopback's communicator brings its own constants
        if self.MPI is None:
            from mpi4py import MPI
            self.MPI = MPI
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._stage: np.ndarray | None = None    # host staging buffer for device arrays
        node = comm.Split_type(self.MPI.COMM_TYPE_SHARED)   # collective: every rank, at once
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def shard(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's columns [lo, hi) of the batch [start, stop): contiguous shares whose
        sizes differ by at most one, the larger ones on the lower ranks."""
        q, r = divmod(stop - start, self.size)
        lo = start + self.rank * q + min(self.rank, r)
        return lo, lo + q + (self.rank < r)

    def _host(self, a):
        """``a`` itself on the host, or a staging buffer (made once) holding a device array's
        values: CuPy copies into it with ``get(out=...)``, allocating nothing per step."""
        if isinstance(a, np.ndarray):
            return a
        if self._stage is None or self._stage.shape != tuple(a.shape) or self._stage.dtype != np.dtype(str(a.dtype)):
            self._stage = np.empty(tuple(a.shape), dtype=np.dtype(str(a.dtype)))
        a.get(out=self._stage)
        return self._stage

    def _back(self, a, host):
        if host is not a:
            a.set(host)

    def allreduce(self, backend: Backend, a: Array) -> None:
        """a ← Σ_ranks a, in place (one Allreduce of the whole buffer)."""
        host = self._host(a)
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        self._back(a, host)

    def broadcast(self, backend: Backend, a: Array) -> None:
        """a ← rank 0's a, in place."""
        host = self._host(a)
        self.comm.Bcast(host, root=0)
        self._back(a, host)

    def sum(self, values: Any) -> np.ndarray:
        """Σ_ranks of a host array (a new float64 or int64 array)."""
        values = np.ascontiguousarray(values, dtype=np.int64 if np.asarray(values).dtype.kind in "iub" else np.float64)
        out = np.empty_like(values)
        self.comm.Allreduce(values, out, op=self.MPI.SUM)
        return out

    def agree(self, value: Any) -> bool:
        """True when every rank passed the same (picklable) value: a check that all ranks
        train the same data with the same settings."""
        values = self.comm.allgather(value)
        return all(v == values[0] for v in values)

    def use_local_gpu(self) -> int | None:
        """Make CuPy's current device the GPU of this rank's number on its machine (modulo the
        GPUs there), so that P ranks on a P-GPU machine take one each.  Does nothing without
        CuPy or a GPU (and calls no collective: safe when only some ranks have one); returns
        the device number or None."""
        try:
            import cupy
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception:                     # no CuPy, no driver: the ranks train on the CPU
            return None
        if count == 0:
            return None
        device = self.local_rank % count
        cupy.cuda.Device(device).use()
        return device

    def __repr__(self):
        return f"DataParallel(rank={self.rank}, size={self.size})"


def launched_by_mpi(environ: Mapping[str, str] | None = None) -> bool:
    """True when an MPI launcher started this process (its variables are set)."""
    environ = os.environ if environ is None else environ
    return any(v in environ for v in LAUNCHER_VARIABLES)


def from_environment(warn: TextIO | None = sys.stderr) -> DataParallel | None:
    """A :class:`DataParallel` over ``MPI.COMM_WORLD`` when this process was started by an MPI
    launcher into a job of more than one rank, else None.  mpi4py is imported only under a
    launcher; a launcher whose job mpi4py sees as 1 rank (a launcher of another MPI
    library than mpi4py's, which starts P copies of a 1-rank job) is warned about."""
    if not launched_by_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError as e:
        print(f"gpumlp: warning: started by an MPI launcher, but mpi4py is not importable ({e}); "
              "training in one process. pip install -e '.[mpi]' (in the gpumlp checkout)", file=warn)
        return None
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        started = _launcher_size()
        library = MPI.Get_library_version().splitlines()[0].strip()
        if started > 1:                       # P copies of a 1-rank job would each train and write alone
            raise ValueError(f"an MPI launcher started {started} processes, but mpi4py sees a 1-rank job: its "
                             f"mpiexec is not that of the MPI library mpi4py uses ({library}); use that one")
        print("gpumlp: warning: started by an MPI launcher, but this process's MPI job has 1 rank: it trains "
              f"alone. Use the mpiexec of the MPI library mpi4py was built with ({library})", file=warn)
        return None
    return DataParallel(comm)


def _launcher_size(environ=None):
    """The number of processes the launcher says it started (0 when it does not say)."""
    environ = os.environ if environ is None else environ
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "PMIX_SIZE"):
        try:
            return int(environ[name])
        except (KeyError, ValueError):
            continue
    return 0
