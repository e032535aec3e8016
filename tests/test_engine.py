"""The public engine (gpumlp.engine) and the optimizer contract (gpumlp.optim)."""
import time

import numpy as np
import pytest

import gpumlp
from gpumlp.engine import DeviceData, Hook, Step, Trainer, TrainingDiverged, is_out_of_memory
from gpumlp.losses import cross_entropy
from gpumlp.noise import NoiseScale, StepRecords
from gpumlp.optim import L2Penalty
from gpumlp.testing import exact, random_problem, ref_hinge, ref_mse

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


# -- is_out_of_memory ---------------------------------------------------------------------------

OutOfMemoryError = type("OutOfMemoryError", (Exception,), {})        # CuPy's, by name


@pytest.mark.parametrize("error, expected", [
    (MemoryError(), True),
    (MemoryError("no more"), True),
    (OutOfMemoryError("Out of memory allocating 1,024 bytes"), True),
    (RuntimeError("cuBLAS failed: CUBLAS_STATUS_ALLOC_FAILED"), True),
    (ValueError("CUBLAS_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("cublas_status_alloc_failed"), False),
    (RuntimeError("CUBLAS_STATUS_NOT_INITIALIZED"), False),
    (RuntimeError("out of memory"), False),
    (type("OutOfMemory", (Exception,), {})(), False),
    (KeyboardInterrupt(), False),
])
def test_is_out_of_memory_knows_its_three_signs(error, expected):
    assert is_out_of_memory(error) is expected


# -- DeviceData -------------------------------------------------------------------------------

def test_device_data_stores_one_sample_per_row_in_the_models_dtype():
    X, y = problem(n=7)
    net = gpumlp.MLP(SIZES, dtype="float32", device="cpu", seed=0)
    data = DeviceData(net, X, y)
    assert (data.N, data.kind, data.backend) == (7, "labels", net.backend)
    assert data.XT.shape == (7, 6) and data.XT.dtype == np.float32
    np.testing.assert_array_equal(data.XT, X.T.astype(np.float32))
    np.testing.assert_array_equal(data.y, y)
    assert data.loss.shape == data.hit.shape == (7,)
    assert data.loss.dtype == np.float32 and data.hit.dtype == np.bool_
    assert data.XTe is data.XT and data.ye is data.y and data.records is None


def test_device_data_takes_real_targets_one_row_per_sample():
    X, _ = problem(n=5)
    T = np.arange(20.0).reshape(4, 5)
    data = Trainer(net64(), gpumlp.SGD(0.1), loss="squared_error").data(X, T)
    assert data.kind == "targets" and data.y.shape == (5, 4)
    np.testing.assert_array_equal(data.y, T.T)
    with pytest.raises(ValueError, match=exact("kind must be 'labels' or 'targets'; got 'nope'")):
        DeviceData(net64(), X, T, kind="nope")


def test_shuffle_gathers_into_a_copy_made_once():
    X, y = problem(n=6)
    data = DeviceData(net64(), X, y)
    XT, labels = np.array(data.XT), np.array(data.y)
    order = np.array([3, 0, 5, 1, 4, 2])
    data.shuffle(order)
    np.testing.assert_array_equal(data.XTe, XT[order])
    np.testing.assert_array_equal(data.ye, labels[order])
    np.testing.assert_array_equal(data.XT, XT)                       # the stored order is kept
    np.testing.assert_array_equal(data.y, labels)
    copy = data.XTe
    data.shuffle(order[::-1].tolist() and order[::-1].copy())
    assert data.XTe is copy
    np.testing.assert_array_equal(data.XTe, XT[order[::-1]])
    np.testing.assert_array_equal(data.ye, labels[order[::-1]])


@pytest.mark.parametrize("order, shape", [(np.arange(5), "(5,)"), (np.arange(6).reshape(2, 3), "(2, 3)"),
                                          ([0, 1, 2, 3, 4, 5], "()")])
def test_shuffle_refuses_anything_but_n_positions(order, shape):
    data = DeviceData(net64(), *problem(n=6))
    with pytest.raises(ValueError, match=exact(f"order must be a permutation of the 6 columns; got shape {shape}")):
        data.shuffle(order)


# -- Step and the Trainer's construction ------------------------------------------------------------

def test_step_holds_its_fields_and_size():
    step = Step(2, 1, 8, 13, 5, 3)
    assert (step.epoch, step.index, step.start, step.stop, step.number, step.steps, step.size) == (2, 1, 8, 13, 5, 3, 5)
    assert repr(step) == "Step(epoch=2, index=1, rows=8:13, number=5)"


def test_the_trainer_holds_its_settings():
    net, opt = net64(), gpumlp.SGD(0.1)
    t = Trainer(net, opt)
    assert (t.net, t.optimizer, t.loss, t.kind, t.margin, t.micro, t.parallel) == (net, opt, "ce", "labels", 1.0,
                                                                                   None, None)
    t = Trainer(net, opt, loss="hinge", margin=0.25, micro_batch=3)
    assert (t.loss, t.kind, t.margin, t.micro) == ("hinge", "labels", 0.25, 3)
    assert Trainer(net, opt, loss="squared_error").kind == "targets"


class Named:
    def __repr__(self):
        return "<named>"


def test_the_trainer_refuses_an_optimizer_without_update_or_step():
    with pytest.raises(ValueError, match=exact("optimizer must have an update(net, normalizer) or a step(net) method, "
                                               "as gpumlp.SGD does; got <named>")):
        Trainer(net64(), Named())
    odd = Named()
    odd.update, odd.step = 3, "x"                                    # attributes that are not methods
    with pytest.raises(ValueError, match="optimizer must have"):
        Trainer(net64(), odd)
    with pytest.raises(ValueError, match=exact("micro_batch must be a positive integer; got 0")):
        Trainer(net64(), gpumlp.SGD(0.1), micro_batch=0)
    with pytest.raises(ValueError, match=exact("margin must be a finite number >= 0; got -1")):
        Trainer(net64(), gpumlp.SGD(0.1), margin=-1)


def test_an_optimizer_with_only_step_is_called_through_it():
    class StepOnly:
        lr = 0.5

        def __init__(self):
            self.calls = []

        def step(self, net):
            self.calls.append(net)

    inner = StepOnly()
    net = net64()
    t = Trainer(net, inner)
    assert t.optimizer is not inner and t.optimizer.inner is inner and t.optimizer.lr == 0.5
    data = t.data(*problem(n=10))
    t.step(data, 0, 4)
    t.step(data, 4, 10)
    assert inner.calls == [net, net]
    del StepOnly.lr
    assert Trainer(net, StepOnly()).optimizer.lr == "?"


def test_an_optimizer_with_update_is_used_as_it_is():
    class Both:
        def __init__(self):
            self.calls = []

        def update(self, net, normalizer):
            self.calls.append(("update", normalizer))

        def step(self, net):
            self.calls.append(("step",))

    opt = Both()
    t = Trainer(net64(), opt)
    assert t.optimizer is opt
    t.step(t.data(*problem(n=10)), 3, 8)
    assert opt.calls == [("update", 5)]


# -- step, gradients and score against the loss by hand -------------------------------------------

def test_a_step_on_rows_inside_the_order_normalises_by_its_own_columns():
    """Rows [3, 8) of a shuffled order: the mean loss over those 5 columns, and 5 passed on."""
    X, y = problem(n=10)
    order = np.array([9, 2, 4, 0, 7, 1, 8, 3, 6, 5])
    hand, net = net64(), net64()
    cols = order[3:8]
    Y = hand.forward(X[:, cols])
    hand.backward(cross_entropy(Y, y[cols])[1])
    spy = Spy()
    trainer = Trainer(net, gpumlp.SGD(0.5, hooks=[spy]))
    data = trainer.data(X, y)
    data.shuffle(order)
    trainer.step(data, 3, 8)
    assert spy.calls == [(True, 5)]
    np.testing.assert_allclose(net.grads, hand.grads, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(net.params, hand.params - 0.5 * hand.grads, rtol=1e-13, atol=1e-16)
    p = np.exp(Y - Y.max(axis=0)) / np.exp(Y - Y.max(axis=0)).sum(axis=0)
    np.testing.assert_allclose(data.loss[3:8], -np.log(p[y[cols], np.arange(5)]) / 5, rtol=1e-13)
    np.testing.assert_array_equal(data.hit[3:8], Y.argmax(axis=0) == y[cols])


def test_gradients_can_record_the_noise_scales_inputs_in_a_row():
    X, y = problem(n=10)
    net, hand = net64(), net64()
    hand.backward(cross_entropy(hand.forward(X[:, 2:9]), y[2:9])[1])
    s = hand.sample_grad_sq_norms()
    trainer = Trainer(net, gpumlp.SGD(0.1))
    records = StepRecords(net, 3)
    records.sum_s[...] = -1.0
    records.grad_sq[...] = -1.0
    trainer.gradients(trainer.data(X, y), 2, 9, records, 1)
    assert records.sum_s[0, 0] == records.sum_s[2, 0] == records.grad_sq[0, 0] == records.grad_sq[2, 0] == -1.0
    assert records.sum_s[1, 0] == pytest.approx(float(np.sum(s)), rel=1e-12)
    assert records.grad_sq[1, 0] == pytest.approx(float(hand.grads @ hand.grads), rel=1e-12)


def test_score_is_the_mean_loss_and_accuracy_over_the_stored_order():
    X, y = problem(n=9)
    net = net64()
    Y = net.forward(X)
    trainer = Trainer(net, gpumlp.SGD(0.1), loss="hinge", margin=0.5)
    data = trainer.data(X, y)
    data.shuffle(np.arange(9)[::-1].copy())                          # scoring ignores the steps' order
    loss, acc = trainer.score(data, batch_size=4)
    assert loss == pytest.approx(ref_hinge(Y, y, 0.5, 9)[0], rel=1e-13)
    assert acc == np.count_nonzero(Y.argmax(axis=0) == y) / 9 and 0 < acc < 1
    assert type(loss) is float and type(acc) is float
    T = np.random.default_rng(2).normal(size=(4, 9))
    t2 = Trainer(net, gpumlp.SGD(0.1), loss="squared_error")
    loss, acc = t2.score(t2.data(X, T))
    assert loss == pytest.approx(ref_mse(Y, T, 9 * 4)[0], rel=1e-13) and acc is None


def test_score_walks_4096_columns_at_a_time_by_default(monkeypatch):
    net = gpumlp.MLP([1, 2], dtype="float64", device="cpu", seed=0)
    X, y = random_problem([1, 2], 4100, 0, "ce")
    trainer = Trainer(net, gpumlp.SGD(0.1))
    data = trainer.data(X, y)
    widths, forward = [], net._forward
    monkeypatch.setattr(net, "_forward", lambda Z0: widths.append(Z0.shape[1]) or forward(Z0))
    whole = trainer.score(data)
    assert widths == [4096, 4]
    widths.clear()
    assert trainer.score(data, 1000) == pytest.approx(whole, rel=1e-12)
    assert widths == [1000] * 4 + [100]


# -- the epoch and its record ---------------------------------------------------------------

def _replay(X, y, order, batch, lr):
    """The epoch by hand: each batch's mean loss and hits before its update."""
    net = net64()
    losses, hits, sizes = [], 0, []
    for s in range(0, X.shape[1], batch):
        cols = order[s:s + batch]
        Y = net.forward(X[:, cols])
        value, dY = cross_entropy(Y, y[cols])
        losses.append(float(value))
        sizes.append(len(cols))
        hits += int(np.count_nonzero(Y.argmax(axis=0) == y[cols]))
        net.backward(dY)
        gpumlp.SGD(lr).step(net)
    return net, np.array(losses), np.array(sizes), hits


def test_the_epoch_record_is_the_batches_loss_and_accuracy_as_seen():
    X, y = problem(n=11)
    order = np.random.default_rng(3).permutation(11)
    hand, losses, sizes, hits = _replay(X, y, order, 4, 0.5)
    net = net64()
    t0 = time.perf_counter()
    record = Trainer(net, gpumlp.SGD(0.5)).epoch(Trainer(net, gpumlp.SGD(0.5)).data(X, y), 4, order, number=3)
    elapsed = time.perf_counter() - t0
    assert set(record) == {"epoch", "loss", "accuracy", "seconds"} and record["epoch"] == 3
    assert record["loss"] == pytest.approx(float(losses @ sizes) / 11, rel=1e-13)
    assert record["accuracy"] == hits / 11
    assert 0 <= record["seconds"] <= elapsed
    np.testing.assert_allclose(net.params, hand.params, rtol=1e-13, atol=1e-16)


def test_an_epoch_without_an_order_steps_through_the_current_one():
    X, y = problem(n=8)
    order = np.array([7, 6, 5, 4, 3, 2, 1, 0])
    hand, losses, sizes, _ = _replay(X, y, order, 3, 0.2)
    net = net64()
    trainer = Trainer(net, gpumlp.SGD(0.2))
    data = trainer.data(X, y)
    data.shuffle(order)
    record = trainer.epoch(data, 3)
    assert record["epoch"] == 1 and record["loss"] == pytest.approx(float(losses @ sizes) / 8, rel=1e-13)
    np.testing.assert_allclose(net.params, hand.params, rtol=1e-13, atol=1e-16)


def test_an_epoch_of_one_column():
    """One column, predicted right: accuracy 1 (hits over the one column seen)."""
    X, _ = problem(n=1)
    net = net64()
    Y = net.forward(X)
    y = np.array([int(Y.argmax())])
    trainer = Trainer(net64(), gpumlp.SGD(0.1))
    record = trainer.epoch(trainer.data(X, y), 4)
    assert record["loss"] == pytest.approx(float(cross_entropy(Y, y)[0]), rel=1e-13)
    assert record["accuracy"] == 1.0


def test_a_stopped_epoch_reports_the_columns_its_steps_saw():
    X, y = problem(n=20)
    order = np.random.default_rng(1).permutation(20)
    _, losses, sizes, hits = _replay(X[:, order[:12]], y[order[:12]], np.arange(12), 6, 0.1)
    net = net64()
    trainer = Trainer(net, gpumlp.SGD(0.1))
    record = trainer.epoch(trainer.data(X, y), 6, order, hooks=[Recorder(stop_at=2)])
    assert record["stopped"] is True
    assert record["loss"] == pytest.approx(float(losses @ sizes) / 12, rel=1e-13)
    assert record["accuracy"] == hits / 12


class Poison(Hook):
    """Makes the step loss of one step NaN or infinite (as a diverging run would)."""

    def __init__(self, data, index, value):
        self.data, self.index, self.value = data, index, value

    def after_step(self, trainer, step):
        if step.index == self.index:
            self.data.loss[step.start] = self.value


@pytest.mark.parametrize("value, shown", [(np.inf, "inf"), (np.nan, "nan"), (-np.inf, "-inf")])
def test_a_step_loss_that_is_not_finite_names_the_step(value, shown):
    X, y = problem(n=10)
    trainer = Trainer(net64(), gpumlp.SGD(0.25))
    data = trainer.data(X, y)
    with pytest.raises(TrainingDiverged, match=exact(
            f"the training loss became {shown} at step 8 (epoch 3, batch 2 of 3); try a lower learning rate "
            "(it is 0.25)")):
        trainer.epoch(data, 4, number=3, first_step=6, hooks=[Poison(data, 1, value)])
    record = trainer.epoch(data, 4, hooks=[Poison(data, 2, value)], check=False)
    assert not np.isfinite(record["loss"])


def test_divergence_names_no_rate_when_the_optimizer_has_none():
    class Plain:
        def update(self, net, normalizer):
            pass

    X, y = problem(n=10)
    trainer = Trainer(net64(), Plain())
    data = trainer.data(X, y)
    with pytest.raises(TrainingDiverged, match=r"\(epoch 1, batch 1 of 2\); try a lower learning rate \(it is \?\)$"):
        trainer.epoch(data, 5, hooks=[Poison(data, 0, np.nan)])


def test_hooks_may_come_from_a_generator_and_each_sees_every_step():
    X, y = problem(n=9)
    trainer = Trainer(net64(), gpumlp.SGD(0.1))
    before_only, after_only = [], []

    class Before(Hook):
        def before_step(self, trainer, step):
            before_only.append(step.index)

    class After(Hook):
        def after_step(self, trainer, step):
            after_only.append(step.index)

    record = trainer.epoch(trainer.data(X, y), 4, hooks=(h for h in [Before(), After()]))
    assert before_only == after_only == [0, 1, 2] and "stopped" not in record


def test_every_after_step_hook_runs_even_when_one_stops_the_epoch():
    X, y = problem(n=9)
    trainer = Trainer(net64(), gpumlp.SGD(0.1))
    first, second = Recorder(stop_at=1), Recorder()
    record = trainer.epoch(trainer.data(X, y), 4, hooks=[first, second])
    assert [s for s in second.seen if s[0] == "after"] == [("after", 0)] and record["stopped"] is True


def test_the_epochs_noise_scale_is_the_replayed_steps():
    """Σ_n s_n and |ḡ|² of each step (before its update), fed to a NoiseScale with each
    batch's size; the records are made once per data set and kept while they suffice."""
    X, y = problem(n=11)
    order = np.random.default_rng(4).permutation(11)
    hand = net64()
    sums, sq = [], []
    for s in range(0, 11, 4):
        cols = order[s:s + 4]
        hand.backward(cross_entropy(hand.forward(X[:, cols]), y[cols])[1])
        sums.append(float(np.sum(hand.sample_grad_sq_norms())))
        sq.append(float(hand.grads @ hand.grads))
        gpumlp.SGD(0.3).step(hand)
    expected = NoiseScale(population=11).update(sums, sq, [4, 4, 3])
    net = net64()
    trainer = Trainer(net, gpumlp.SGD(0.3))
    data = trainer.data(X, y)
    noise = NoiseScale(population=11)
    record = trainer.epoch(data, 4, order, noise=noise)
    assert (noise.steps, noise.samples) == (3, 11)
    for key in ("trace", "grad_sq", "b_simple_mean"):
        assert getattr(noise, key) == pytest.approx(getattr(expected, key), rel=1e-10), key
    assert record["b_simple"] == noise.b_simple and record["b_simple_mean"] == noise.b_simple_mean
    assert record["b_simple_start"] == noise.b_simple_start and noise.b_simple_mean is not None
    records = data.records
    assert records.sum_s.shape == (3, 1)
    trainer.epoch(data, 4, order, noise=noise)                       # as many steps: the same records
    trainer.epoch(data, 6, order, noise=noise)                       # fewer steps: still enough
    assert data.records is records
    trainer.epoch(data, 2, order, noise=noise)                       # more steps: new records
    assert data.records is not records and data.records.sum_s.shape == (6, 1)


def test_a_stopped_epoch_feeds_the_noise_scale_only_the_steps_that_ran():
    X, y = problem(n=12)
    trainer = Trainer(net64(), gpumlp.SGD(0.1))
    noise = NoiseScale(population=12)
    trainer.epoch(trainer.data(X, y), 3, hooks=[Recorder(stop_at=2)], noise=noise)
    assert (noise.steps, noise.samples) == (2, 6)


@pytest.mark.parametrize("micro", [3, 4, 6])
def test_micro_batched_gradients_record_the_whole_steps_norms_in_their_row(micro):
    """Rows [2, 9) in chunks of 3 (3, 3, 1), 4 (4, 3) or 6 (6, 1): the chunks' Σ_n s_n add up in
    row 1 (the first written over what was there, the rest added), |ḡ|² is the summed
    gradient's, and every column's loss and hit is written."""
    X, y = problem(n=10)
    hand = net64()
    Y = hand.forward(X[:, 2:9])
    hand.backward(cross_entropy(Y, y[2:9])[1])
    s = hand.sample_grad_sq_norms()
    net = net64()
    trainer = Trainer(net, gpumlp.SGD(0.1), micro_batch=micro)
    data = trainer.data(X, y)
    records = StepRecords(net, 3)
    records.sum_s[...] = -1.0
    records.grad_sq[...] = -1.0
    data.loss[...] = -1.0
    for _ in range(2):                                               # the gradient sum's buffer is reused
        trainer.gradients(data, 2, 9, records, 1)
        np.testing.assert_allclose(net.grads, hand.grads, rtol=1e-12, atol=1e-16)
        assert records.sum_s[1, 0] == pytest.approx(float(np.sum(s)), rel=1e-12)
        assert records.grad_sq[1, 0] == pytest.approx(float(hand.grads @ hand.grads), rel=1e-12)
        assert records.sum_s[0, 0] == records.sum_s[2, 0] == records.grad_sq[2, 0] == -1.0
        p = np.exp(Y - Y.max(axis=0)) / np.exp(Y - Y.max(axis=0)).sum(axis=0)
        np.testing.assert_allclose(data.loss[2:9], -np.log(p[y[2:9], np.arange(7)]) / 7, rtol=1e-13)
        np.testing.assert_array_equal(data.hit[2:9], Y.argmax(axis=0) == y[2:9])
        assert data.loss[1] == data.loss[9] == -1.0


# -- what the mutation run found the tests above left open --------------------------------------

def test_labels_are_checked_against_the_output_width():
    """SIZES = 6-9-4: label 5 is beyond the 4 outputs (though within the hidden layer's 9)."""
    X, _ = problem(n=4)
    with pytest.raises(ValueError, match=exact(
            "labels must lie in [0, 4) for 4 classes (the rows of Y); got values from 0 to 5")):
        Trainer(net64(), gpumlp.SGD(0.1)).data(X, np.array([0, 1, 5, 2]))


def test_a_float32_models_targets_and_shuffled_copy_stay_float32():
    X, _ = problem(n=5)
    net = gpumlp.MLP(SIZES, dtype="float32", device="cpu", seed=0)
    data = Trainer(net, gpumlp.SGD(0.1), loss="squared_error").data(X, np.ones((4, 5)))
    assert data.y.dtype == np.float32
    data.shuffle(np.arange(5)[::-1].copy())
    assert data.XTe.dtype == data.ye.dtype == np.float32


def test_a_hinge_step_uses_the_trainers_margin_in_a_three_layer_network():
    """The loss kernel gets the margin and writes ∂L/∂Y into the last layer's Δ (with three
    layers, not the second's)."""
    X, y = random_problem([5, 7, 6, 3], 8, 1, "ce")
    hand = gpumlp.MLP([5, 7, 6, 3], dtype="float64", device="cpu", seed=2)
    hand.backward(gpumlp.losses.hinge(hand.forward(X[:, 1:7]), y[1:7], margin=0.3)[1])
    net = gpumlp.MLP([5, 7, 6, 3], dtype="float64", device="cpu", seed=2)
    trainer = Trainer(net, gpumlp.SGD(0.1), loss="hinge", margin=0.3)
    trainer.gradients(trainer.data(X, y), 1, 7)
    assert np.abs(hand.grads).max() > 1e-3
    np.testing.assert_allclose(net.grads, hand.grads, rtol=1e-12, atol=1e-15)


def test_gradients_record_into_row_0_by_default():
    X, y = problem(n=6)
    net = net64()
    trainer = Trainer(net, gpumlp.SGD(0.1))
    records = StepRecords(net, 2)
    records.sum_s[...] = records.grad_sq[...] = -1.0
    trainer.gradients(trainer.data(X, y), 0, 6, records)
    assert records.sum_s[0, 0] > 0 and records.grad_sq[0, 0] == pytest.approx(float(net.grads @ net.grads))
    assert records.sum_s[1, 0] == records.grad_sq[1, 0] == -1.0


def test_micro_batches_write_every_hit_and_sum_in_the_models_dtype():
    """A float32 step in chunks of 3, 3, 1: the hits of every chunk are written, and the
    gradient is g0 + g1 summed in float32, then g2 + that (each chunk's g from the same pass)."""
    X, y = problem(n=7)
    net = gpumlp.MLP(SIZES, dtype="float32", device="cpu", seed=0)
    trainer = Trainer(net, gpumlp.SGD(0.1), micro_batch=3)
    data = trainer.data(X, y)
    parts = []
    for c, d in ((0, 3), (3, 6), (6, 7)):
        trainer._pass(data.XTe[c:d, :].T, data.ye[c:d], 1.0 / 7, data.loss[c:d], data.hit[c:d])
        parts.append(np.array(net.grads))
    expected_hits = np.array(data.hit)
    data.hit[...] = ~expected_hits
    trainer.gradients(data, 0, 7)
    np.testing.assert_array_equal(data.hit, expected_hits)
    np.testing.assert_array_equal(net.grads, parts[2] + (parts[0] + parts[1]))


def test_hooks_get_the_trainer_and_steps_with_hooks_still_feed_the_noise_scale():
    X, y = problem(n=11)
    order = np.random.default_rng(4).permutation(11)
    plain = NoiseScale(population=11)
    t1 = Trainer(net64(), gpumlp.SGD(0.3))
    t1.epoch(t1.data(X, y), 4, order, noise=plain)
    seen = []

    class Both(Hook):
        def before_step(self, trainer, step):
            seen.append(("before", trainer is t2))

        def after_step(self, trainer, step):
            seen.append(("after", trainer is t2))

    hooked = NoiseScale(population=11)
    t2 = Trainer(net64(), gpumlp.SGD(0.3))
    data = t2.data(X, y)
    data.records = StepRecords(t2.net, 3)
    data.records.sum_s[...] = data.records.grad_sq[...] = 1e6           # stale values must all be overwritten
    t2.epoch(data, 4, order, hooks=[Both()], noise=hooked)
    assert seen == [("before", True), ("after", True)] * 3
    assert hooked.to_json() == plain.to_json()


def test_step_records_into_row_0_by_default():
    X, y = problem(n=6)
    net = net64()
    trainer = Trainer(net, gpumlp.SGD(1e-300))
    records = StepRecords(net, 2)
    records.sum_s[...] = records.grad_sq[...] = -1.0
    trainer.step(trainer.data(X, y), 0, 6, records)
    assert records.sum_s[0, 0] > 0 and records.grad_sq[1, 0] == -1.0


def test_ranks_of_a_job_make_the_one_process_epoch():
    """14 columns in batches of 4 over 3 thread-ranks (the last batch's two columns leave the
    third rank empty, and count for the noise scale), two epochs: each rank's record (loss,
    accuracy, noise scale) and parameters are the one-process run's, and a rank's loss columns
    hold its own share alone."""
    from gpumlp.loopback import run_ranks
    from gpumlp.parallel import DataParallel

    X, y = problem(n=14)
    orders = [np.random.default_rng(s).permutation(14) for s in (1, 2)]
    single = Trainer(net64(), gpumlp.SGD(0.2))
    data1, noise1 = single.data(X, y), NoiseScale(population=14)
    expected = [single.epoch(data1, 4, order, number=k + 1, noise=noise1) for k, order in enumerate(orders)]

    def rank(comm):
        job = DataParallel(comm)
        trainer = Trainer(net64(), gpumlp.SGD(0.2), parallel=job)
        assert trainer.parallel is job
        data, noise = trainer.data(X, y), NoiseScale(population=14)
        data.records = StepRecords(trainer.net, 4)
        data.records.sum_s[...] = 1e6                                 # an empty share's row must be zeroed
        records = [trainer.epoch(data, 4, order, number=k + 1, noise=noise) for k, order in enumerate(orders)]
        mine = np.zeros(14, bool)
        for s in range(0, 14, 4):
            lo, hi = job.shard(s, min(s + 4, 14))
            mine[lo:hi] = True
        loss, hit = np.array(data.loss), np.array(data.hit)
        return records, np.array(trainer.net.params), loss[~mine], hit[~mine], mine.sum()

    results = run_ranks(3, rank)
    assert [r[4] for r in results] == [7, 4, 3]                      # 2, 1, 1 of each 4, then 1, 1, 0
    for records, params, others_loss, others_hit, _ in results:
        np.testing.assert_allclose(params, single.net.params, rtol=1e-12, atol=1e-15)
        assert not others_loss.any() and not others_hit.any()
        for got, want in zip(records, expected, strict=True):
            assert got["accuracy"] == want["accuracy"] and 0 < want["accuracy"] < 1
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-12)
            for key in ("b_simple", "b_simple_mean", "b_simple_start"):
                assert got[key] == pytest.approx(want[key], rel=1e-9), key
