"""gpumlp.parallel outside a job: how a process learns it was launched by MPI, what it says
when mpi4py is missing or sees one rank, and which GPU a rank takes (in-process)."""
import io
import sys
import types

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
