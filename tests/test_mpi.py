"""Data-parallel training, checked on the ranks of a job.

Inside a real MPI job (tests/test_scale.py and .ci/run run this file as

    mpiexec -n P python -m mpi4py -m pytest tests/test_mpi.py      (P = 2, and 3: uneven shares)

with GPUMLP_TEST_RANKS=P) each test runs once per process on MPI.COMM_WORLD.  Outside one,
the same tests run in this process on 2 and on 3 thread-ranks of gpumlp.loopback's
communicator, so that they run everywhere (and tools that follow one process see them).
"""
import os

import numpy as np
import pytest

import gpumlp
from gpumlp.engine import Trainer
from gpumlp.loopback import run_ranks
from gpumlp.losses import LOSSES
from gpumlp.parallel import DataParallel
from gpumlp.train import TrainState, fit

try:
    from mpi4py import MPI
    WORLD = MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None
except ImportError:
    WORLD = None
pytestmark = pytest.mark.mpi


@pytest.fixture(params=["mpi"] if WORLD is not None else ["loopback-2", "loopback-3"])
def on_ranks(request):
    """``on_ranks(fn)`` runs ``fn(comm)`` on every rank of the job: this process's rank in a
    real MPI job, or each thread-rank of a loopback job (its failures raised here)."""
    if request.param == "mpi":
        return lambda fn: fn(WORLD)
    size = int(request.param.split("-")[1])
    return lambda fn: run_ranks(size, fn)


def problem(n=63, sizes=(6, 9, 4), seed=0):
    rng = np.random.default_rng(seed)
    return list(sizes), rng.standard_normal((sizes[0], n)), rng.integers(0, sizes[-1], n)


@pytest.mark.skipif(WORLD is None, reason="inside an MPI job only (tests/test_scale.py)")
def test_the_communicator_has_the_ranks_the_launcher_started():
    assert WORLD.Get_size() == int(os.environ["GPUMLP_TEST_RANKS"])


def test_summed_shares_equal_the_full_batch_gradient(on_ranks):
    """N = 63 over P ranks (uneven shares): the all-reduced gradients equal one process's
    full-batch gradients to 1e-10, in float64."""
    def check(comm):
        job = DataParallel(comm)
        sizes, X, y = problem()
        single = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=1)
        single.backward(LOSSES["ce"](single.forward(X), y)[1])
        net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=1)
        trainer = Trainer(net, gpumlp.SGD(1e-300), "ce", parallel=job)     # a step that does not move the weights
        data = trainer.data(X, y)                                  # the batch in its own order
        trainer.step(data, 0, 63)
        g, g1 = gpumlp.to_numpy(net.grads), gpumlp.to_numpy(single.grads)
        assert np.max(np.abs(g - g1)) <= 1e-10 * np.max(np.abs(g1))
        lo, hi = job.shard(0, 63)
        assert hi - lo in (63 // job.size, 63 // job.size + 1)
    on_ranks(check)


def test_training_keeps_ranks_identical_and_equal_to_one_process(on_ranks):
    """Several SGD steps with momentum and micro-batches: the parameters are bit-identical
    across ranks and match a 1-process run to 1e-10."""
    def check(comm):
        job = DataParallel(comm)
        sizes, X, y = problem(n=63)
        out = []
        for parallel, micro in ((job, 3), (None, None)):
            net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=2 + comm.Get_rank() * (parallel is not None))
            fit(net, X, y, gpumlp.SGD(0.2, 0.9, 1e-3), epochs=3, batch_size=16, seed=5, progress=False,
                parallel=parallel, micro_batch=micro)
            out.append(gpumlp.to_numpy(net.params))
        # rank r started from seed 2 + r: the broadcast gave every rank rank 0's weights
        everyone = comm.allgather(out[0].tobytes())
        assert all(b == everyone[0] for b in everyone)
        assert np.max(np.abs(out[0] - out[1])) <= 1e-10 * np.max(np.abs(out[1]))
    on_ranks(check)


def test_every_column_is_used_once_per_epoch(on_ranks):
    def check(comm):
        job = DataParallel(comm)
        sizes, X, y = problem(n=50)
        net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=0)
        trainer, state = Trainer(net, gpumlp.SGD(0.1), "ce", parallel=job), TrainState(3)
        data = trainer.data(X, y)
        trainer.epoch(data, 7, state.rng.permutation(50))
        used = (gpumlp.to_numpy(data.loss) > 0).astype(np.int64)    # a rank writes only the losses of its columns
        assert np.array_equal(job.sum(used), np.ones(50, np.int64))
    on_ranks(check)


def test_the_noise_scale_uses_the_global_batch(on_ranks):
    def check(comm):
        job = DataParallel(comm)
        sizes, X, y = problem(n=45)
        b = []
        for parallel in (job, None):
            net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=0)
            h = fit(net, X, y, gpumlp.SGD(1e-300), epochs=2, batch_size=8, seed=1, progress=False, parallel=parallel,
                    noise_scale=True)
            b.append(h[-1]["b_simple_mean"])
        assert b[0] == pytest.approx(b[1], rel=1e-9)
    on_ranks(check)


def test_ranks_with_an_empty_share_apply_the_same_penalty(on_ranks):
    """N = 13 in batches of 4: the last batch has 1 column, so some ranks hold none.  An
    optimizer that scales by the batch (scikit-learn's alpha) must see the whole batch's N
    there too: ranks identical, and equal to one process."""
    def check(comm):
        from gpumlp.optim import L2Penalty
        job = DataParallel(comm)
        sizes, X, y = problem(n=13)
        out = []
        for parallel in (job, None):
            net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=0)
            fit(net, X, y, gpumlp.SGD(0.1, momentum=0.9, hooks=[L2Penalty(1.0)]), epochs=3, batch_size=4, seed=2,
                parallel=parallel)
            out.append(gpumlp.to_numpy(net.params))
        everyone = comm.allgather(out[0].tobytes())
        assert all(b == everyone[0] for b in everyone)
        assert np.max(np.abs(out[0] - out[1])) <= 1e-10 * np.max(np.abs(out[1]))
    on_ranks(check)
