"""An in-process stand-in for an MPI communicator: the ranks of a job as threads of one
process, for tests of the data-parallel code without ``mpiexec`` (and for tools, such
as mutation testing, that follow the code of one process only).

:func:`run_ranks` starts ``size`` threads, each calling ``fn(comm)`` with its own
:class:`LoopbackComm`, and returns their results in rank order.  The communicator has
what :class:`gpumlp.parallel.DataParallel` and the command line use of mpi4py's:
``Get_rank``, ``Get_size``, ``Split_type``, ``Free``, ``Allreduce`` (in place or into
another buffer, with SUM), ``Bcast``, ``allgather``, ``bcast`` and ``Abort``, and the
constants as ``comm.MPI``.  Sums are taken in rank order, so every rank gets the same bits.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

__all__ = ["LoopbackComm", "run_ranks"]


class _Constants:
    """The few names of ``mpi4py.MPI`` that gpumlp uses."""

    IN_PLACE = object()
    SUM = "sum"
    COMM_TYPE_SHARED = "shared"


class _World:
    def __init__(self, size):
        self.size, self.slots = size, [None] * size
        self.barrier = threading.Barrier(size, timeout=60)


class LoopbackComm:
    """One rank's view of a :class:`_World` of ``size`` thread-ranks."""

    MPI = _Constants

    def __init__(self, world: _World, rank: int):
        self._world, self._rank = world, rank

    def Get_rank(self) -> int:  # noqa: N802 (mpi4py's names)
        return self._rank

    def Get_size(self) -> int:  # noqa: N802
        return self._world.size

    def Split_type(self, kind: Any) -> LoopbackComm:  # noqa: N802
        return self                                  # one machine: every rank is local

    def Free(self) -> None:  # noqa: N802
        pass

    def _exchange(self, value):
        """Every rank's value, in rank order (two barriers: all have written, all have read)."""
        world = self._world
        world.slots[self._rank] = value
        world.barrier.wait()
        values = list(world.slots)
        world.barrier.wait()
        return values

    def Allreduce(self, sendbuf: Any, recvbuf: np.ndarray, op: Any = _Constants.SUM) -> None:  # noqa: N802
        if op != _Constants.SUM:
            raise ValueError(f"the loopback communicator sums only; got op {op!r}")
        mine = np.array(recvbuf if sendbuf is _Constants.IN_PLACE else sendbuf, copy=True)
        values = self._exchange(mine)
        total = values[0].copy()
        for v in values[1:]:
            total += v
        recvbuf[...] = total

    def Bcast(self, buf: np.ndarray, root: int = 0) -> None:  # noqa: N802
        values = self._exchange(np.array(buf, copy=True) if self._rank == root else None)
        buf[...] = values[root]

    def allgather(self, value: Any) -> list:
        return self._exchange(value)

    def bcast(self, value: Any, root: int = 0) -> Any:
        return self._exchange(value)[root]

    def Abort(self, code: int = 1) -> NoReturn:  # noqa: N802
        raise SystemExit(code)


def run_ranks(size: int, fn: Callable[[LoopbackComm], Any]) -> list[Any]:
    """``fn(comm)`` on ``size`` thread-ranks at once; their results in rank order.  An
    exception on any rank is raised here (the first rank's that failed), after every
    thread has ended (a rank that fails breaks the barrier, so none waits forever)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int; got {size!r}")
    world = _World(size)
    results: list[Any] = [None] * size
    errors: list[BaseException | None] = [None] * size

    def body(rank):
        try:
            results[rank] = fn(LoopbackComm(world, rank))
        except BaseException as e:                   # noqa: B036 (re-raised in the caller)
            errors[rank] = e
            world.barrier.abort()

    threads = [threading.Thread(target=body, args=(r,), daemon=True) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)]
    if failed or any(errors):
        raise failed[0] if failed else next(e for e in errors if e is not None)
    return results
