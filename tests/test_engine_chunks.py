"""The engine's chunked steps (micro-batches, data-parallel shares) against whole batches:
every column's loss and hit, the noise scale's records, the staging of device arrays for the
all-reduce; and the pass-through arguments of Classifier and the losses (mutmut's survivors)."""
import numpy as np
import pytest

import gpumlp
from gpumlp.engine import Trainer
from gpumlp.loopback import run_ranks
from gpumlp.losses import LOSSES, squared_error
from gpumlp.noise import NoiseScale
from gpumlp.parallel import DataParallel
from gpumlp.testing import random_problem

SIZES = [6, 9, 4]


def net64(seed=1):
    return gpumlp.MLP(SIZES, dtype="float64", device="cpu", seed=seed)


def test_micro_batches_fill_every_columns_hit_and_loss():
    """The epoch's accuracy and loss with micro-batches are those of whole batches: each
    chunk writes its columns' hits and losses."""
    X, y = random_problem(SIZES, 30, 0, "ce")
    whole = gpumlp.fit(net64(), X, y, gpumlp.SGD(0.1), epochs=2, batch_size=10, seed=2)
    chunked = gpumlp.fit(net64(), X, y, gpumlp.SGD(0.1), epochs=2, batch_size=10, seed=2, micro_batch=3)
    for a, b in zip(whole, chunked, strict=True):
        assert a["accuracy"] == b["accuracy"] and 0 < a["accuracy"] < 1
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)


def test_micro_batches_give_the_noise_scale_of_whole_batches():
    """Σ_n s_n of a step is summed over its chunks (the first written, the rest added)."""
    X, y = random_problem(SIZES, 30, 0, "ce")
    runs = [gpumlp.fit(net64(), X, y, gpumlp.SGD(1e-300), epochs=2, batch_size=10, seed=2, noise_scale=True,
                       micro_batch=m)[-1] for m in (None, 3, 4)]
    for r in runs[1:]:
        for key in ("b_simple", "b_simple_mean", "b_simple_start"):
            assert r[key] == pytest.approx(runs[0][key], rel=1e-10), key


def test_ranks_with_no_columns_record_no_norms():
    """13 columns in batches of 4 on 3 ranks: the last batch's one column leaves two ranks
    empty, and the noise scale is still the 1-process one."""
    X, y = random_problem(SIZES, 13, 0, "ce")
    single = gpumlp.fit(net64(), X, y, gpumlp.SGD(1e-300), epochs=1, batch_size=4, seed=2, noise_scale=True)[-1]

    def rank(comm):
        return gpumlp.fit(net64(), X, y, gpumlp.SGD(1e-300), epochs=1, batch_size=4, seed=2, noise_scale=True,
                          parallel=DataParallel(comm))[-1]["b_simple_mean"]
    for b in run_ranks(3, rank):
        assert b == pytest.approx(single["b_simple_mean"], rel=1e-10)


class DeviceArray:
    """What DataParallel needs of a CuPy array: shape, dtype, get(out=) and set()."""

    def __init__(self, values):
        self.values = np.array(values)
        self.shape, self.dtype = self.values.shape, self.values.dtype

    def get(self, out):
        out[...] = self.values

    def set(self, host):
        self.values[...] = host


def test_device_arrays_are_staged_through_one_host_buffer():
    def rank(comm):
        job = DataParallel(comm)
        r = comm.Get_rank()
        a = DeviceArray(np.arange(4.0) + 10 * r)
        job.allreduce(None, a)
        first = job._stage
        b = DeviceArray(np.full(4, float(r + 1)))
        job.broadcast(None, b)
        same = job._stage is first                       # same shape and dtype: the buffer is reused
        c = DeviceArray(np.ones((2, 3), np.float32) * (r + 1))
        job.allreduce(None, c)
        d = DeviceArray(np.ones(4, np.float32))          # same length, another dtype: a new buffer
        job.allreduce(None, d)
        stage32 = job._stage
        job.broadcast(None, d)                           # and that float32 buffer is reused in turn
        return (a.values.tolist(), b.values.tolist(), same, c.values.tolist(), stage32.dtype, d.values.tolist(),
                job._stage is stage32)
    for a, b, same, c, dtype, d, same32 in run_ranks(2, rank):
        assert a == [10.0, 12.0, 14.0, 16.0] and b == [1.0] * 4 and same
        assert c == [[3.0] * 3] * 2 and dtype == np.float32 and d == [2.0] * 4 and same32


def test_classifier_passes_its_batch_size_on(monkeypatch):
    X, y = random_problem(SIZES, 20, 0, "ce")
    clf = gpumlp.Classifier(net64(), gpumlp.Standardizer(np.zeros((6, 1)), np.ones((6, 1))), np.arange(4))
    seen = []
    batches = clf.net._batches

    def spy(X, batch_size):
        seen.append(batch_size)
        return batches(X, batch_size)
    monkeypatch.setattr(clf.net, "_batches", spy)
    clf.outputs(X, batch_size=7)
    clf.predict(X, batch_size=5)
    assert seen == [7, 5]


def test_squared_error_passes_its_normalizer_on():
    Y, T = np.arange(6.0).reshape(2, 3), np.zeros((2, 3))
    value, dY = squared_error(Y, T, normalizer=12)
    assert float(value) == pytest.approx(0.5 * np.sum(Y ** 2) / 24) and np.allclose(dY, Y / 24)
    value2, _ = LOSSES["squared_error"](Y, T)
    assert float(value2) == pytest.approx(0.5 * np.sum(Y ** 2) / 6)


def test_noise_scale_state_keeps_two_numbers_per_average():
    ns = NoiseScale(population=10).update([3.0, 2.0], [1.0, 0.5], [4, 4])
    d = ns.to_json()
    d["ema"] = [*d["ema"], 99.0]                        # a third number is not part of the state
    back = NoiseScale.from_json(d)
    assert back.to_json()["ema"] == ns.to_json()["ema"] and back.b_simple == ns.b_simple


def test_a_trainer_on_a_parallel_job_sums_its_shares():
    X, y = random_problem(SIZES, 11, 0, "ce")
    whole = net64()
    Trainer(whole, gpumlp.SGD(1e-300)).gradients(Trainer(whole, gpumlp.SGD(1e-300)).data(X, y), 0, 11)

    def rank(comm):
        net = net64()
        trainer = Trainer(net, gpumlp.SGD(1e-300), micro_batch=2, parallel=DataParallel(comm))
        trainer.gradients(trainer.data(X, y), 0, 11)
        return np.array(net.grads)
    for g in run_ranks(3, rank):
        np.testing.assert_allclose(g, whole.grads, rtol=1e-12, atol=1e-15)
