"""Tests that close the gaps a mutation run (mutmut 3.8.1 over backend, activations, model,
losses, optim, train and kernels) left open: exact error messages, the ``normalizer`` of
every loss against its formula, ``one_hot``, the kernel templates against the compiled
name list, the copy/alias contracts of the backends, the dtype of every scratch buffer,
the batch widths of evaluate and predict, the progress bar, the epoch log line, and the
documented defaults."""
import time
import warnings

import numpy as np
import pytest

import gpumlp
from gpumlp.testing import exact, ref_ce, ref_hinge
from gpumlp.testing import labelled_problem as problem
from gpumlp.train import TrainingDiverged, evaluate, fit

CPU = gpumlp.get_backend("cpu")
QUIET = dict(progress=False, log=lambda line: None)








def forward_widths(monkeypatch, net):
    widths, forward = [], net._forward

    def recorded(Z0):
        widths.append(Z0.shape[1])
        return forward(Z0)
    monkeypatch.setattr(net, "_forward", recorded)
    return widths


def test_predict_and_evaluate_walk_the_data_in_batches(monkeypatch):
    net = gpumlp.MLP([3, 4, 3], dtype="float64", device="cpu", seed=0)
    X, y = problem(n=10)
    expected = np.argmax(net.forward(X), axis=0)
    whole = evaluate(net, X, y, batch_size=64)
    widths = forward_widths(monkeypatch, net)
    np.testing.assert_array_equal(net.predict(X, batch_size=3), expected)
    assert widths == [3, 3, 3, 1]
    widths.clear()
    assert evaluate(net, X, y, batch_size=4) == pytest.approx(whole, rel=1e-12)
    assert widths == [4, 4, 2]


def test_the_default_batch_is_4096_columns(monkeypatch):
    net = gpumlp.MLP([1, 2], dtype="float64", device="cpu", seed=0)
    X, y = problem(d0=1, n=4097, k=2)
    widths = forward_widths(monkeypatch, net)
    net.predict(X)
    evaluate(net, X, y)
    fit(net, X[:, :4], y[:4], gpumlp.SGD(0.1), epochs=1, batch_size=4, X_test=X, y_test=y, **QUIET)
    assert widths == [4096, 1] * 2 + [4] + [4096, 1]


# == evaluate, fit ======================================================================
def test_evaluate_defaults_to_cross_entropy_and_checks_its_arguments():
    net = gpumlp.MLP([3, 4, 3], dtype="float64", device="cpu", seed=0)
    X, y = problem()
    loss, acc = evaluate(net, X, y)
    Y = net.forward(X)
    assert loss == pytest.approx(ref_ce(Y, y, 10)[0], rel=1e-12)
    assert acc == np.mean(np.argmax(Y, axis=0) == y)
    assert evaluate(net, X, y, loss="hinge", margin=0.0)[0] == pytest.approx(ref_hinge(Y, y, 0.0, 10)[0], rel=1e-12)
    with pytest.raises(ValueError, match=exact("batch_size must be a positive integer; got 0")):
        evaluate(net, X, y, batch_size=0)
    with pytest.raises(ValueError, match=exact("margin must be a finite number >= 0; got -1")):
        evaluate(net, X, y, margin=-1)


def test_labels_are_checked_against_the_output_width_not_a_hidden_one():
    net = gpumlp.MLP([3, 5, 3], device="cpu", seed=0)
    X, _ = problem()
    y = np.array([0, 1, 2, 4, 0, 1, 2, 0, 1, 2])
    message = exact("labels must lie in [0, 3) for 3 classes (the rows of Y); got values from 0 to 4")
    with pytest.raises(ValueError, match=message):
        evaluate(net, X, y)
    with pytest.raises(ValueError, match=message):
        fit(net, X, y, gpumlp.SGD(0.1), **QUIET)


def test_fit_argument_messages_and_margins():
    net = gpumlp.MLP([3, 4, 3], device="cpu", seed=0)
    X, y = problem()
    with pytest.raises(ValueError, match=exact("give X_test and y_test together, or neither")):
        fit(net, X, y, gpumlp.SGD(0.1), X_test=X, **QUIET)
    with pytest.raises(ValueError, match=exact("margin must be a finite number >= 0; got -0.5")):
        fit(net, X, y, gpumlp.SGD(0.1), loss="hinge", margin=-0.5, **QUIET)
    for margin in (0.0, 0.5):
        assert len(fit(net, X, y, gpumlp.SGD(0.1), loss="hinge", margin=margin, epochs=1, **QUIET)) == 1


def test_fit_defaults_30_epochs_and_seed_0():
    X, y = problem(n=6)

    def run(**kwargs):
        net = gpumlp.MLP([3, 3], dtype="float64", device="cpu", seed=0)
        return fit(net, X, y, gpumlp.SGD(0.1), batch_size=2, **QUIET, **kwargs), net.params.copy()
    history, params = run()
    assert [h["epoch"] for h in history] == list(range(1, 31))
    np.testing.assert_array_equal(params, run(seed=0, epochs=30)[1])
    assert not np.array_equal(params, run(seed=1, epochs=30)[1])


class Bar:
    """A stand-in for tqdm that records how fit drives it."""
    made = []

    def __init__(self, **kwargs):
        self.kwargs, self.n = kwargs, 0
        Bar.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        self.n += n


def test_the_progress_bar_counts_every_step(monkeypatch):
    monkeypatch.setattr(gpumlp.train, "tqdm", Bar)
    X, y = problem(n=10)
    net = gpumlp.MLP([3, 3], device="cpu", seed=0)
    fit(net, X, y, gpumlp.SGD(0.1), epochs=3, batch_size=4, log=lambda line: None, progress=True)
    bar = Bar.made[-1]
    assert bar.kwargs == {"total": 9, "unit": "batch", "disable": None, "leave": False}   # None: only on a terminal
    assert bar.n == 9
    fit(net, X, y, gpumlp.SGD(0.1), epochs=1, batch_size=4, **QUIET)
    assert Bar.made[-1].kwargs["disable"] is True


def test_the_epoch_log_lines():
    X, y = problem(n=10)
    Xt, yt = problem(n=6, seed=1)
    net = gpumlp.MLP([3, 3], device="cpu", seed=0)
    lines = []
    history = fit(net, X, y, gpumlp.SGD(0.1), epochs=2, batch_size=4, X_test=Xt, y_test=yt,
                  progress=False, log=lines.append)
    assert lines == [f"epoch   {h['epoch']}/2  loss {h['loss']:.4f}  acc {h['accuracy']:.4f}"
                     f"  test loss {h['test_loss']:.4f}  test acc {h['test_accuracy']:.4f}" for h in history]
    lines.clear()
    history = fit(net, X, y, gpumlp.SGD(0.1), epochs=1, batch_size=4, progress=False, log=lines.append)
    assert lines == [f"epoch   1/1  loss {history[0]['loss']:.4f}  acc {history[0]['accuracy']:.4f}"]


def test_epoch_seconds_are_measured():
    X, y = problem(n=10)
    net = gpumlp.MLP([3, 3], device="cpu", seed=0)
    t0 = time.perf_counter()
    history = fit(net, X, y, gpumlp.SGD(0.1), epochs=2, batch_size=4, **QUIET)
    elapsed = time.perf_counter() - t0
    assert all(0 <= h["seconds"] <= elapsed for h in history)
    assert sum(h["seconds"] for h in history) <= elapsed


def test_a_diverging_run_raises_no_numpy_warnings():
    """Overflow and invalid values on the way to NaN are silenced; the run stops with
    TrainingDiverged only, even where warnings are errors."""
    X, y = problem(n=12)
    net = gpumlp.MLP([3, 4, 3], dtype="float32", device="cpu", seed=0)
    with warnings.catch_warnings(), np.errstate(over="warn", invalid="warn", divide="warn"):
        warnings.simplefilter("error")
        with pytest.raises(TrainingDiverged):
            fit(net, X, y, gpumlp.SGD(1e4), loss="mse", epochs=20, batch_size=4, **QUIET)


def test_divergence_with_an_optimizer_without_lr():
    class Blowup:                                     # any object with update(net, normalizer) will do
        def update(self, net, normalizer):
            net.params[...] = np.inf
    X, y = problem(n=8)
    net = gpumlp.MLP([3, 3], device="cpu", seed=0)
    with pytest.raises(TrainingDiverged) as info:
        fit(net, X, y, Blowup(), epochs=1, batch_size=4, **QUIET)
    assert str(info.value).endswith("try a lower learning rate (it is ?)")






