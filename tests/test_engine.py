"""The public engine (gpumlp.engine) and the optimizer contract (gpumlp.optim)."""
import numpy as np
import pytest

import gpumlp
from gpumlp.engine import DeviceData, Hook, Step, Trainer
from gpumlp.losses import cross_entropy
from gpumlp.optim import L2Penalty
from gpumlp.testing import random_problem

SIZES = [6, 9, 4]


def problem(n=40, seed=0):
    return random_problem(SIZES, n, seed, "ce")


def net64(seed=1):
    return gpumlp.MLP(SIZES, dtype="float64", device="cpu", seed=seed)


def test_a_custom_loop_on_the_trainer_equals_fit_bit_for_bit():
    """The README's loop: shuffle with the generator fit uses, steps of 8 (the last one
    shorter), the same parameters and the same per-epoch loss as fit's history."""
    X, y = problem(n=37)
    a, b = net64(), net64()
    history = gpumlp.fit(a, X, y, gpumlp.SGD(0.1, 0.9), epochs=3, batch_size=8, seed=4)
    trainer = Trainer(b, gpumlp.SGD(0.1, 0.9), loss="ce")
    train, rng = trainer.data(X, y), np.random.default_rng(4)
    for _epoch in range(3):
        train.shuffle(rng.permutation(train.N))
        for s in range(0, train.N, 8):
            trainer.step(train, s, min(s + 8, train.N))
    np.testing.assert_array_equal(a.params, b.params)
    assert trainer.score(train) == gpumlp.evaluate(a, X, y)
    record = Trainer(net64(), gpumlp.SGD(0.1, 0.9)).epoch(train, 8, np.random.default_rng(4).permutation(37))
    assert record["loss"] == history[0]["loss"] and record["accuracy"] == history[0]["accuracy"]


def test_the_step_matches_the_homework_by_hand():
    """One step on rows [0, 5) of the stored order: ∂L/∂Y of the mean loss over those 5
    columns, backprop, θ ← θ − lr·g (SGD without momentum)."""
    X, y = problem(n=12)
    hand, net = net64(), net64()
    hand.backward(cross_entropy(hand.forward(X[:, :5]), y[:5])[1])
    expected = hand.params - 0.3 * hand.grads
    trainer = Trainer(net, gpumlp.SGD(0.3))
    trainer.step(trainer.data(X, y), 0, 5)
    np.testing.assert_allclose(net.params, expected, rtol=1e-13, atol=1e-15)


def test_gradients_make_no_update_and_equal_the_micro_batched_ones():
    X, y = problem(n=30)
    whole, chunked = net64(), net64()
    before = whole.params.copy()
    t1, t2 = Trainer(whole, gpumlp.SGD(0.1)), Trainer(chunked, gpumlp.SGD(0.1), micro_batch=7)
    d1, d2 = t1.data(X, y), t2.data(X, y)
    t1.gradients(d1, 0, 30)
    t2.gradients(d2, 0, 30)
    np.testing.assert_array_equal(whole.params, before)
    np.testing.assert_allclose(chunked.grads, whole.grads, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d2.loss, d1.loss, rtol=1e-13)


class Recorder(Hook):
    def __init__(self, stop_at=None):
        self.seen, self.stop_at = [], stop_at

    def before_step(self, trainer, step):
        self.seen.append(("before", step.epoch, step.index, step.start, step.stop, step.number, step.steps))

    def after_step(self, trainer, step):
        self.seen.append(("after", step.index))
        return step.number == self.stop_at


def test_hooks_see_every_step_and_can_end_an_epoch():
    X, y = problem(n=20)
    trainer = Trainer(net64(), gpumlp.SGD(0.1))
    data, hook = trainer.data(X, y), Recorder()
    record = trainer.epoch(data, 8, np.arange(20), number=2, first_step=3, hooks=[hook])
    assert hook.seen == [("before", 2, 0, 0, 8, 4, 3), ("after", 0), ("before", 2, 1, 8, 16, 5, 3), ("after", 1),
                         ("before", 2, 2, 16, 20, 6, 3), ("after", 2)]
    assert "stopped" not in record and record["epoch"] == 2
    stop = Recorder(stop_at=2)
    record = trainer.epoch(data, 8, np.arange(20), hooks=[stop])
    assert [s for s in stop.seen if s[0] == "after"] == [("after", 0), ("after", 1)] and record["stopped"] is True
    # the record covers the 16 columns the two steps saw
    assert record["loss"] == pytest.approx(float(np.sum(data.loss[:16])) * 8 / 16 / 1)


def test_a_hook_can_end_fit_after_an_epoch():
    class StopAfter2(Hook):
        def after_epoch(self, trainer, record):
            assert "test_loss" in record                  # the record is whole when it is called
            return record["epoch"] == 2
    X, y = problem()
    history = gpumlp.fit(net64(), X, y, gpumlp.SGD(0.1), epochs=5, X_test=X, y_test=y, hooks=[StopAfter2()])
    assert [h["epoch"] for h in history] == [1, 2]
    with pytest.raises(ValueError, match="hooks must be gpumlp.engine.Hook"):
        gpumlp.fit(net64(), X, y, gpumlp.SGD(0.1), hooks=[print])


def test_the_trainer_and_its_data_check_at_the_boundary():
    X, y = problem()
    net = net64()
    with pytest.raises(ValueError, match="unknown loss|loss must be one of"):
        Trainer(net, gpumlp.SGD(0.1), loss="nope")
    with pytest.raises(ValueError, match=r"update\(net, normalizer\) or a step\(net\)"):
        Trainer(net, object())
    with pytest.raises(ValueError, match="micro_batch"):
        Trainer(net, gpumlp.SGD(0.1), micro_batch=0)
    data = Trainer(net, gpumlp.SGD(0.1)).data(X, y)
    with pytest.raises(ValueError, match="permutation of the 40 columns"):
        data.shuffle(np.arange(39))
    with pytest.raises(ValueError, match="kind must be"):
        DeviceData(net, X, y, kind="nope")
    assert repr(Step(1, 0, 0, 8, 1, 5)) == "Step(epoch=1, index=0, rows=0:8, number=1)"


class Spy:
    """A gradient hook that records what it is called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, net, grads, normalizer):
        self.calls.append((grads is net.grads, normalizer))


def test_gradient_hooks_get_the_whole_batchs_normalizer():
    """With micro-batches the hook still sees the batch's N (8, then 8, then the last 4),
    once per step, before the update; through the public step, the last forward's N."""
    X, y = problem(n=20)
    spy = Spy()
    gpumlp.fit(net64(), X, y, gpumlp.SGD(0.1, hooks=[spy]), epochs=1, batch_size=8, micro_batch=3)
    assert spy.calls == [(True, 8), (True, 8), (True, 4)]
    net, spy2 = net64(), Spy()
    net.backward(cross_entropy(net.forward(X[:, :6]), y[:6])[1])
    gpumlp.SGD(0.1, hooks=[spy2]).step(net)
    assert spy2.calls == [(True, 6)]
    with pytest.raises(ValueError, match="gradient hook must be a function"):
        gpumlp.SGD(0.1, hooks=[3])


def test_the_l2_penalty_is_alpha_w_over_n_on_the_weights_alone():
    X, y = problem(n=10)
    net = net64()
    net.backward(cross_entropy(net.forward(X), y)[1])
    dW, db = [np.array(g) for g in net.dW], [np.array(g) for g in net.db]
    L2Penalty(0.5)(net, net.grads, 10)
    for k in range(2):
        np.testing.assert_allclose(net.dW[k], dW[k] + 0.05 * net.W[k], rtol=1e-14)
        np.testing.assert_array_equal(net.db[k], db[k])
    with pytest.raises(ValueError, match="alpha"):
        L2Penalty(-1)


def test_sgd_state_is_named_and_round_trips():
    X, y = problem(n=10)
    net, opt = net64(), gpumlp.SGD(0.1, 0.9)
    assert opt.state_dict(net) == {"velocity": None}
    Trainer(net, opt).step(Trainer(net, opt).data(X, y), 0, 10)
    state = opt.state_dict(net)
    assert set(state) == {"velocity"} and state["velocity"].shape == net.params.shape
    other = gpumlp.SGD(0.1, 0.9)
    other.load_state_dict(net, state)
    np.testing.assert_array_equal(other.state_dict(net)["velocity"], state["velocity"])
    assert gpumlp.SGD.get_state is gpumlp.SGD.state_dict          # the 0.4 names still work


def test_fit_is_quiet_unless_asked(capsys):
    """A library call prints nothing by default (progress belongs to the command line);
    progress=True logs one line per epoch."""
    X, y = problem(n=16)
    gpumlp.fit(net64(), X, y, gpumlp.SGD(0.1), epochs=2, batch_size=8)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    lines = []
    gpumlp.fit(net64(), X, y, gpumlp.SGD(0.1), epochs=2, batch_size=8, progress=True, log=lines.append)
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
