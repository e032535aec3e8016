"""Does ``gpumlp train``'s automatic BLAS thread count hold up?  1 vs 2 vs auto threads.

For each net and batch size it times training steps (the step ``gpumlp train`` runs)
with 1 and 2 threads, interleaved round after round, and reports the automatic
choice (gpumlp.threads.auto_threads) as the time of the count it picks, twice: on the
machine as it is ("idle"), and with a concurrent load, a busy-looping process per CPU
but one started by this script.
It reports the minimum and median time per step of each.  The claims it checks:
under load, auto is never more than 10% slower than 1 thread; idle, auto is within
10% of the better of 1 and 2 threads.  It measures and prints; it asserts nothing.

  python scripts/bench_threads.py [--rounds 15] [--json FILE]
"""
import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import gpumlp  # noqa: E402
from gpumlp.engine import Trainer  # noqa: E402
from gpumlp.flops import step_flops  # noqa: E402
from gpumlp.threads import auto_threads  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--rounds", type=int, default=15)
p.add_argument("--json", metavar="FILE")
args = p.parse_args()

CASES = [([64, 256, 10], 32), ([64, 256, 10], 256), ([784, 1024, 1024, 10], 64),
         ([784, 1024, 1024, 10], 256), ([784, 1024, 1024, 10], 1024)]


def spin():
    while True:
        pass


def steps_for(sizes, n):
    net = gpumlp.MLP(sizes, device="cpu", seed=0)
    rng = np.random.default_rng(0)
    trainer = Trainer(net, gpumlp.SGD(0.01, 0.9, 1e-3))
    data = trainer.data(rng.standard_normal((sizes[0], n)), rng.integers(0, sizes[-1], n))
    repeat = max(1, int(2e8 // step_flops(sizes, n)))      # ~0.1 s of work

    def run():
        for _ in range(repeat):
            trainer.step(data, 0, n)
    return run, repeat


def measure(label):
    rows = []
    for sizes, n in CASES:
        run, repeat = steps_for(sizes, n)
        auto = auto_threads(sizes, n)
        counts = {"1": 1, "2": 2}               # auto is one of them: timed once, not twice
        times = {c: [] for c in counts}
        for _ in range(args.rounds + 1):
            for c, t in counts.items():
                with threadpool_limits(t):
                    t0 = time.perf_counter()
                    run()
                    times[c].append((time.perf_counter() - t0) / repeat)
        times = {c: v[1:] for c, v in times.items()}          # the first round warms up
        times["auto"] = times[str(min(auto, 2))]
        best = {c: 1e3 * min(v) for c, v in times.items()}
        med = {c: 1e3 * statistics.median(v) for c, v in times.items()}
        row = {"load": label, "net": "-".join(map(str, sizes)), "N": n, "auto_threads": auto,
               "min_ms": best, "median_ms": med,
               "auto_over_1": med["auto"] / med["1"], "auto_over_best_of_1_2": med["auto"] / min(med["1"], med["2"])}
        rows.append(row)
        print(f"{label:5s} {row['net']:>17} N={n:<5d} auto={auto}  median ms: 1 thread {med['1']:8.3f}  "
              f"2 threads {med['2']:8.3f}  auto {med['auto']:8.3f}   auto/1 {row['auto_over_1']:.2f}  "
              f"auto/best {row['auto_over_best_of_1_2']:.2f}", flush=True)
    return rows


print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()}; median of {args.rounds} interleaved rounds")
rows = measure("idle")
busy = [multiprocessing.Process(target=spin, daemon=True) for _ in range(max(1, (os.cpu_count() or 2) - 1))]
for proc in busy:
    proc.start()
try:
    rows += measure("load")
finally:
    for proc in busy:
        proc.terminate()
if args.json:
    Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.json}")
