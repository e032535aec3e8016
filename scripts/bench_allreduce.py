"""What data parallelism costs per step on the CPU: one training step of the wide net on
each rank (its share of a global batch), the all-reduce of the flat gradients alone,
and the whole data-parallel step.  Run under MPI:

  mpiexec -n 2 python -m mpi4py scripts/bench_allreduce.py [--sizes 784,1024,1024,10] [--batch-sizes 64,256,1024]

1 BLAS thread per rank.  Rank 0 prints min and median over the rounds; it measures and
prints, it never asserts.
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import gpumlp  # noqa: E402
from gpumlp.engine import Trainer  # noqa: E402
from gpumlp.parallel import DataParallel  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--sizes", default="784,1024,1024,10")
p.add_argument("--batch-sizes", default="64,256,1024")
p.add_argument("--rounds", type=int, default=15)
a = p.parse_args()
sizes = [int(v) for v in a.sizes.split(",")]
comm = MPI.COMM_WORLD
job = DataParallel(comm)
rng = np.random.default_rng(0)
if job.is_root:
    n_params = sum(sizes[k] * sizes[k + 1] + sizes[k + 1] for k in range(len(sizes) - 1))
    print(f"{job.size} ranks, net {'-'.join(map(str, sizes))} ({n_params:,} parameters, all-reduce of "
          f"{4 * n_params / 1e6:.2f} MB float32), {MPI.Get_library_version().splitlines()[0].strip()}")
    print(f"{'global N':>9} {'local step ms':>14} {'allreduce ms':>13} {'dp step ms':>11} {'allreduce/dp step':>18}")
for N in [int(v) for v in a.batch_sizes.split(",")]:
    X, y = rng.standard_normal((sizes[0], N)).astype(np.float32), rng.integers(0, sizes[-1], N)
    net = gpumlp.MLP(sizes, device="cpu", seed=0)
    opt = gpumlp.SGD(1e-3, 0.9)
    local, dp = Trainer(net, opt), Trainer(net, opt, parallel=job)      # one net, one optimizer
    data = local.data(X, y)
    lo, hi = job.shard(0, N)
    times = {"local": [], "allreduce": [], "dp": []}
    for r in range(a.rounds + 2):
        comm.Barrier()
        t0 = time.perf_counter()
        local.step(data, lo, hi)                  # this rank's share, no communication
        t1 = time.perf_counter()
        comm.Barrier()
        t2 = time.perf_counter()
        job.allreduce(net.backend, net.grads)
        t3 = time.perf_counter()
        comm.Barrier()
        t4 = time.perf_counter()
        dp.step(data, 0, N)
        t5 = time.perf_counter()
        if r >= 2:
            times["local"].append(t1 - t0), times["allreduce"].append(t3 - t2), times["dp"].append(t5 - t4)
    worst = {k: comm.allreduce(min(v), op=MPI.MAX) for k, v in times.items()}     # the slowest rank's best
    med = {k: comm.allreduce(statistics.median(v), op=MPI.MAX) for k, v in times.items()}
    if job.is_root:
        print(f"{N:>9} {1e3 * worst['local']:>8.3f} ({1e3 * med['local']:.2f}) {1e3 * worst['allreduce']:>7.3f} "
              f"({1e3 * med['allreduce']:.2f}) {1e3 * worst['dp']:>6.3f} ({1e3 * med['dp']:.2f}) "
              f"{worst['allreduce'] / worst['dp']:>12.1%}")
if job.is_root:
    print("min over rounds (median in brackets), the slowest rank's")
