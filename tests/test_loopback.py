"""gpumlp.loopback: the in-process communicator the data-parallel tests run on."""
import numpy as np
import pytest

from gpumlp.loopback import run_ranks


def test_collectives_give_every_rank_the_same_values():
    def body(comm):
        r, p = comm.Get_rank(), comm.Get_size()
        a = np.full(4, r + 1.0)
        comm.Allreduce(comm.MPI.IN_PLACE, a, op=comm.MPI.SUM)
        out = np.empty(2, np.int64)
        comm.Allreduce(np.array([r, 1]), out, op=comm.MPI.SUM)
        b = np.arange(3.0) * (r + 7)
        comm.Bcast(b, root=1)
        return a.tolist(), out.tolist(), b.tolist(), comm.allgather(r * 10), comm.bcast(f"from {r}", root=2), p
    results = run_ranks(3, body)
    for a, out, b, gathered, said, p in results:
        assert a == [6.0] * 4 and out == [3, 3] and b == [0.0, 8.0, 16.0]
        assert gathered == [0, 10, 20] and said == "from 2" and p == 3
    assert run_ranks(1, lambda comm: comm.Split_type(comm.MPI.COMM_TYPE_SHARED).Get_size()) == [1]


def test_a_failing_rank_raises_in_the_caller_and_nobody_hangs():
    def body(comm):
        if comm.Get_rank() == 1:
            raise ZeroDivisionError("rank 1 failed")
        comm.allgather(0)                       # the others wait at a barrier that rank 1 breaks
    with pytest.raises(ZeroDivisionError, match="rank 1 failed"):
        run_ranks(3, body)
    with pytest.raises(ValueError, match="sums only"):
        run_ranks(1, lambda comm: comm.Allreduce(np.zeros(1), np.zeros(1), op="max"))
    with pytest.raises(ValueError, match="positive int"):
        run_ranks(0, print)
