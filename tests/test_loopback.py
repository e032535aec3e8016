"""gpumlp.loopback: the in-process communicator the data-parallel tests run on."""
import threading
import time

import numpy as np
import pytest

from gpumlp.loopback import LoopbackComm, run_ranks
from gpumlp.testing import exact


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


def test_a_rank_knows_its_rank_and_size_and_the_mpi_names():
    def body(comm):
        local = comm.Split_type(comm.MPI.COMM_TYPE_SHARED)
        assert local is comm and local.Free() is None
        return comm.Get_rank(), comm.Get_size()
    assert run_ranks(4, body) == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert LoopbackComm.MPI.SUM == "sum" and LoopbackComm.MPI.COMM_TYPE_SHARED == "shared"
    assert LoopbackComm.MPI.IN_PLACE is LoopbackComm.MPI.IN_PLACE and LoopbackComm.MPI.IN_PLACE is not None


def test_allreduce_sums_in_rank_order_into_another_buffer():
    sends = [1e16, 1.0, -1e16]                  # (1e16 + 1) - 1e16 rounds to 0.0; another order gives 1.0

    def body(comm):
        out = np.full(2, 100.0)                 # the receive buffer's old values take no part
        comm.Allreduce(np.full(2, sends[comm.Get_rank()]), out)
        inplace = np.full(1, sends[comm.Get_rank()])
        comm.Allreduce(comm.MPI.IN_PLACE, inplace, op=comm.MPI.SUM)
        return out.tolist(), inplace.tolist()
    assert run_ranks(3, body) == [([0.0, 0.0], [0.0])] * 3
    assert run_ranks(1, lambda comm: _allreduce_alone(comm)) == [[4.0, 5.0]]
    assert run_ranks(2, lambda comm: _allreduce_alone(comm)) == [[8.0, 10.0]] * 2


def _allreduce_alone(comm):
    a = np.array([4.0, 5.0])
    comm.Allreduce(comm.MPI.IN_PLACE, a)
    return a.tolist()


def test_a_rank_publishes_a_snapshot_and_only_the_root_sends(monkeypatch):
    published = {}
    exchange = LoopbackComm._exchange

    def spy(self, value):
        published.setdefault(self.Get_rank(), []).append(value)
        return exchange(self, value)
    monkeypatch.setattr(LoopbackComm, "_exchange", spy)

    def body(comm):
        r = comm.Get_rank()
        a = np.full(2, r + 1.0)
        comm.Allreduce(comm.MPI.IN_PLACE, a)
        s = np.full(2, 10.0 * r)
        out = np.empty(2)
        comm.Allreduce(s, out)
        b = np.full(2, 7.0 * r)
        comm.Bcast(b, root=1)
        return a, s, b
    results = run_ranks(2, body)
    for r, (a, s, b) in enumerate(results):
        sent_a, sent_s, sent_b = published[r]
        assert a.tolist() == [3.0, 3.0] and b.tolist() == [7.0, 7.0]
        assert sent_a.tolist() == [r + 1.0] * 2 and not np.shares_memory(sent_a, a)
        assert sent_s.tolist() == [10.0 * r] * 2 and not np.shares_memory(sent_s, s)
    assert published[0][2] is None
    assert published[1][2].tolist() == [7.0, 7.0] and not np.shares_memory(published[1][2], results[1][2])


def test_bcast_and_Bcast_default_to_root_0_and_allgather_keeps_rank_order():
    def body(comm):
        r = comm.Get_rank()
        b = np.array([r + 0.5, -r])
        comm.Bcast(b)
        return b.tolist(), comm.bcast(("from", r)), comm.allgather(r * r), comm.bcast(r, root=2)
    assert run_ranks(3, body) == [([0.5, 0.0], ("from", 0), [0, 1, 4], 2)] * 3


def test_allreduce_refuses_an_op_other_than_sum():
    with pytest.raises(ValueError, match=exact("the loopback communicator sums only; got op 'max'")):
        run_ranks(1, lambda comm: comm.Allreduce(np.zeros(1), np.zeros(1), op="max"))
    with pytest.raises(ValueError, match=exact("the loopback communicator sums only; got op None")):
        run_ranks(1, lambda comm: comm.Allreduce(np.zeros(1), np.zeros(1), op=None))


def test_abort_raises_system_exit_with_its_code():
    with pytest.raises(SystemExit) as e:
        run_ranks(2, lambda comm: comm.Abort(3))
    assert e.value.code == 3
    with pytest.raises(SystemExit) as e:
        run_ranks(1, lambda comm: comm.Abort())
    assert e.value.code == 1


@pytest.mark.parametrize("size", [0, -1, True, False, 2.0, "2", None])
def test_run_ranks_wants_a_positive_int(size):
    with pytest.raises(ValueError, match=exact(f"size must be a positive int; got {size!r}")):
        run_ranks(size, lambda comm: None)


def test_run_ranks_returns_results_in_rank_order_from_daemon_threads():
    assert run_ranks(1, lambda comm: "one") == ["one"]
    assert run_ranks(5, lambda comm: comm.Get_rank() * 10) == [0, 10, 20, 30, 40]
    assert run_ranks(2, lambda comm: threading.current_thread().daemon) == [True, True]
    assert run_ranks(2, lambda comm: threading.current_thread() is threading.main_thread()) == [False, False]


def test_the_barrier_times_out_after_60_seconds(monkeypatch):
    made = []

    class Recording(threading.Barrier):
        def __init__(self, parties, action=None, timeout=None):
            made.append((parties, timeout))
            super().__init__(parties, action, timeout)
    monkeypatch.setattr(threading, "Barrier", Recording)
    assert run_ranks(3, lambda comm: comm.Get_rank()) == [0, 1, 2]         # no barrier wait: fails fast
    assert made == [(3, 60)]
    assert run_ranks(2, lambda comm: comm.allgather(1)) == [[1, 1]] * 2
    assert made == [(3, 60), (2, 60)]


def test_an_error_is_raised_after_every_rank_has_ended():
    finished = []

    def body(comm):
        if comm.Get_rank() == 0:
            raise KeyError("rank 0")
        time.sleep(0.05)
        finished.append(comm.Get_rank())
    with pytest.raises(KeyError):
        run_ranks(2, body)
    assert finished == [1]


def test_the_first_failing_rank_is_the_one_raised():
    errors = {1: ValueError("rank 1"), 2: ValueError("rank 2")}

    def body(comm):
        if comm.Get_rank() in errors:
            raise errors[comm.Get_rank()]
        return "fine"
    with pytest.raises(ValueError) as e:
        run_ranks(3, body)
    assert e.value is errors[1]


def test_a_broken_barrier_on_the_others_does_not_mask_the_real_error():
    boom = RuntimeError("rank 2")
    seen = []

    def body(comm):
        if comm.Get_rank() == 2:
            time.sleep(0.02)                    # ranks 0 and 1 are waiting by then
            raise boom
        try:
            comm.allgather(0)
        except threading.BrokenBarrierError as e:
            seen.append(comm.Get_rank())
            raise e
    with pytest.raises(RuntimeError) as e:
        run_ranks(3, body)
    assert e.value is boom and sorted(seen) == [0, 1]


def test_a_broken_barrier_alone_is_raised():
    broken = threading.BrokenBarrierError("raised by rank 0 itself")

    def body(comm):
        if comm.Get_rank() == 0:
            raise broken
        return 1
    with pytest.raises(threading.BrokenBarrierError) as e:
        run_ranks(2, body)
    assert e.value is broken
