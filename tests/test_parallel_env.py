"""gpumlp.parallel outside a job: how a process learns it was launched by MPI, what it says
when mpi4py is missing or sees one rank, and which GPU a rank takes (in-process)."""
import io
import sys
import types

import numpy as np
import pytest

from gpumlp import parallel
from gpumlp.loopback import run_ranks
from gpumlp.parallel import LAUNCHER_VARIABLES, DataParallel, launched_by_mpi


def test_any_launcher_variable_means_a_launch():
    assert not launched_by_mpi({"PATH": "/bin"})
    for name in LAUNCHER_VARIABLES:
        assert launched_by_mpi({name: "0"}), name


def test_no_launcher_no_job(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert parallel.from_environment() is None


def test_a_launch_without_mpi4py_trains_alone_and_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    err = io.StringIO()
    assert parallel.from_environment(warn=err) is None
    assert "mpi4py is not importable" in err.getvalue() and "pip install -e '.[mpi]'" in err.getvalue()


@pytest.mark.parametrize("variable", ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "PMIX_SIZE"])
def test_each_launchers_count_is_read(monkeypatch, variable):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed")
    for name in LAUNCHER_VARIABLES + ("PMIX_SIZE",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PMI_RANK", "0")                # launched, and mpi4py sees 1 rank here
    monkeypatch.setenv(variable, "3")
    with pytest.raises(ValueError, match="started 3 processes"):
        parallel.from_environment()
    monkeypatch.setenv(variable, "three")              # unreadable: as if the launcher did not say
    err = io.StringIO()
    assert parallel.from_environment(warn=err) is None and "has 1 rank" in err.getvalue()


def fake_cupy(count):
    used = []
    cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: count),
                                 Device=lambda n: types.SimpleNamespace(use=lambda: used.append(n)))
    return types.SimpleNamespace(cuda=cuda), used


def test_each_rank_takes_the_gpu_of_its_local_rank(monkeypatch):
    cupy, used = fake_cupy(2)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    got = run_ranks(3, lambda comm: DataParallel(comm).use_local_gpu())
    assert got == [0, 1, 0] and sorted(used) == [0, 0, 1]
    cupy, used = fake_cupy(0)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    assert run_ranks(2, lambda comm: DataParallel(comm).use_local_gpu()) == [None, None] and used == []
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert run_ranks(2, lambda comm: DataParallel(comm).use_local_gpu()) == [None, None]


def test_a_job_knows_its_root_and_sums_host_values():
    def body(comm):
        job = DataParallel(comm)
        return job.is_root, job.sum([comm.Get_rank(), 1]).tolist(), job.sum([0.5]).dtype.kind, repr(job), \
            job.agree("same"), job.agree(comm.Get_rank())
    out = run_ranks(2, body)
    assert out[0] == (True, [1, 2], "f", "DataParallel(rank=0, size=2)", True, False)
    assert out[1][0] is False and out[1][1] == [1, 2]


def test_the_launchers_count_is_read_from_the_mapping_given():
    assert parallel._launcher_size({}) == 0                     # the launcher did not say
    assert parallel._launcher_size({"PMI_SIZE": "x", "PMIX_SIZE": "4"}) == 4
    assert parallel._launcher_size({"OMPI_COMM_WORLD_SIZE": "2", "PMIX_SIZE": "4"}) == 2


class _Spy:
    """A communicator that records its calls (one rank, no MPI constants of its own)."""

    def __init__(self):
        self.calls = []

    def Get_rank(self):  # noqa: N802
        return 0

    def Get_size(self):  # noqa: N802
        return 1

    def Split_type(self, kind):  # noqa: N802
        self.calls.append(("Split_type", kind))
        return self

    def Free(self):  # noqa: N802
        self.calls.append(("Free",))

    def Allreduce(self, send, recv, op=None):  # noqa: N802
        self.calls.append(("Allreduce", op))
        recv[...] = recv if send is IN_PLACE else send

    def Bcast(self, buf, root=None):  # noqa: N802
        self.calls.append(("Bcast", root))


IN_PLACE = object()


def test_a_communicator_without_constants_takes_mpi4pys(monkeypatch):
    MPI = types.SimpleNamespace(COMM_TYPE_SHARED="shared-kind", IN_PLACE=IN_PLACE, SUM="sum-op")
    monkeypatch.setitem(sys.modules, "mpi4py", types.SimpleNamespace(MPI=MPI))
    spy = _Spy()
    dp = DataParallel(spy)
    assert dp.MPI is MPI and spy.calls == [("Split_type", "shared-kind"), ("Free",)]
    assert (dp.rank, dp.size, dp.local_rank, dp.local_size) == (0, 1, 0, 1)
    spy.calls.clear()
    a = np.arange(3.0)
    dp.allreduce(None, a)
    dp.broadcast(None, a)
    assert dp.sum([1.5]).tolist() == [1.5]
    assert spy.calls == [("Allreduce", "sum-op"), ("Bcast", 0), ("Allreduce", "sum-op")]


def test_sums_of_host_values_are_int64_or_float64():
    def rank(comm):
        dp = DataParallel(comm)
        ints = dp.sum(np.array([True, False]))
        small = dp.sum(np.array([100], dtype=np.int8))
        floats = dp.sum(np.array([0.1], dtype=np.float32))
        return ints, small, floats

    for ints, small, floats in run_ranks(2, rank):
        assert ints.dtype == np.int64 and ints.tolist() == [2, 0]
        assert small.dtype == np.int64 and small.tolist() == [200]          # no int8 wrap-around
        assert floats.dtype == np.float64 and floats[0] == 2 * float(np.float32(0.1))


def test_agree_compares_every_rank_with_rank_0():
    assert run_ranks(3, lambda comm: DataParallel(comm).agree(min(comm.Get_rank(), 1))) == [False] * 3
    assert run_ranks(3, lambda comm: DataParallel(comm).agree("same")) == [True] * 3
