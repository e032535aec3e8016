"""A loop of your own against fit, on the digits' 64-256-10 at batch 32 (float32, CPU, 1 BLAS thread):
fit itself, the same steps through gpumlp.Trainer, and the public checked path (forward, the loss,
backward, SGD.step).  Medians of 5 rounds of 10 epochs, side by side in one process; ratios to fit.

    python scripts/bench_custom_loop.py
"""
import time

import numpy as np
from threadpoolctl import threadpool_limits

import gpumlp
from gpumlp.data import Standardizer, load_digits
from gpumlp.losses import cross_entropy

EPOCHS, B = 10, 32
X, y = load_digits()
X = Standardizer.fit(X)(X).astype(np.float32)
STEPS = EPOCHS * -(-X.shape[1] // B)


def with_fit():
    net = gpumlp.MLP([64, 256, 10], device="cpu", seed=0)
    t = time.perf_counter()
    gpumlp.fit(net, X, y, gpumlp.SGD(0.1, 0.9), epochs=EPOCHS, batch_size=B, seed=0)
    return time.perf_counter() - t


def with_trainer():
    net = gpumlp.MLP([64, 256, 10], device="cpu", seed=0)
    trainer = gpumlp.Trainer(net, gpumlp.SGD(0.1, 0.9))
    train, rng = trainer.data(X, y), np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(EPOCHS):
        train.shuffle(rng.permutation(train.N))
        for s in range(0, train.N, B):
            trainer.step(train, s, min(s + B, train.N))
    trainer.score(train)
    return time.perf_counter() - t


def with_public_calls():
    net, opt, rng = gpumlp.MLP([64, 256, 10], device="cpu", seed=0), gpumlp.SGD(0.1, 0.9), np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(EPOCHS):
        order = rng.permutation(X.shape[1])
        Xs, ys = X[:, order], y[order]
        for s in range(0, X.shape[1], B):
            net.backward(cross_entropy(net.forward(Xs[:, s:s + B]), ys[s:s + B])[1])
            opt.step(net)
    return time.perf_counter() - t


if __name__ == "__main__":
    runs = {f: [] for f in (with_fit, with_trainer, with_public_calls)}
    with threadpool_limits(1):
        for _ in range(5):
            for f, times in runs.items():
                times.append(f())
    base = np.median(runs[with_fit])
    print(f"64-256-10, batch {B}, {STEPS} steps a round, medians of 5 rounds, 1 BLAS thread")
    for f, times in runs.items():
        m = np.median(times)
        print(f"{f.__name__:<18} {m * 1e6 / STEPS:6.0f} µs a step   {m / base:4.2f} × fit")
