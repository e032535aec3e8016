"""The training loop: mini-batch SGD that reads device values only at the end of an epoch.

Data goes to the device once.  Each step runs forward, loss, backward and the
optimizer on the device and writes its loss into a device vector; the host
reads that vector at the end of the epoch, to report and to stop a run whose
loss has turned NaN, naming the first bad step.
"""
import time

import numpy as np
from tqdm.auto import tqdm

from . import losses as _losses
from ._checks import positive_int, to_device, to_labels
from .backend import backend_of

__all__ = ["fit", "evaluate", "TrainingDiverged", "loss_function"]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def loss_function(name, margin=1.0):
    """``fn(Y, labels, check) -> (loss, dY)`` for ``name`` in mse, hinge, ce.

    For ``mse`` the targets are the one-hot columns of the labels."""
    if name == "mse":
        def fn(Y, labels, check=True):
            backend = backend_of(Y)
            labels = to_labels(backend, labels, Y.shape[1], Y.shape[0], check)
            return _losses.mse(Y, _losses.one_hot(backend, labels, Y.shape[0], Y.dtype), check=False)
        return fn
    if name == "hinge":
        return lambda Y, labels, check=True: _losses.hinge(Y, labels, margin, check=check)
    if name in ("ce", "cross_entropy"):
        return lambda Y, labels, check=True: _losses.cross_entropy(Y, labels, check=check)
    raise ValueError(f"unknown loss {name!r}; expected one of mse, hinge, ce")


def _device_data(net, X, y):
    """X and y validated once and moved to the model's device."""
    X = net._input(X, check=True, copy=False)
    return X, to_labels(net.backend, y, X.shape[1], net.sizes[-1])


def _score(net, X, y, fn, batch_size=4096):
    """``(mean loss, accuracy)`` on device data that has been checked already."""
    N = X.shape[1]
    total = correct = 0
    for i in range(0, N, batch_size):
        j = min(i + batch_size, N)
        Y = net.forward(X[:, i:j], check=False)
        yb = y[i:j]
        value, _ = fn(Y, yb, check=False)
        total = total + value * yb.shape[0]
        correct = correct + _n_correct(net, Y, yb)
    return float(total) / N, float(correct) / N


def evaluate(net, X, y, loss="ce", margin=1.0, batch_size=4096):
    """``(mean loss, accuracy)`` of ``net`` on X (d0 × N) with labels y, as floats."""
    return _score(net, *_device_data(net, X, y), loss_function(loss, margin), batch_size)


def fit(net, X, y, optimizer, loss="ce", margin=1.0, epochs=30, batch_size=32,
        X_test=None, y_test=None, seed=0, progress=True, log=tqdm.write):
    """Train ``net`` on X (d0 × N) and labels y; returns the per-epoch history.

    Each history entry holds epoch, loss and accuracy on the training batches
    (as they were seen during the epoch), seconds, and test_loss and
    test_accuracy when a test set is given.  Raises :class:`TrainingDiverged`
    when the loss becomes NaN or infinite.
    """
    epochs, batch_size = positive_int(epochs, "epochs"), positive_int(batch_size, "batch_size")
    if (X_test is None) != (y_test is None):
        raise ValueError("give X_test and y_test together, or neither")
    fn = loss_function(loss, margin)
    X, y = _device_data(net, X, y)
    test = None if X_test is None else _device_data(net, X_test, y_test)
    N = X.shape[1]
    starts = list(range(0, N, batch_size))
    sizes = np.array([min(batch_size, N - s) for s in starts], dtype=np.float64)
    rng = np.random.default_rng(seed)
    history = []
    # NumPy would warn about overflow step by step before the loss turns NaN;
    # the check at the end of each epoch stops the run with one clear message instead.
    with np.errstate(over="ignore", invalid="ignore"), \
            tqdm(total=epochs * len(starts), unit="batch", disable=not progress, leave=False) as bar:
        for epoch in range(1, epochs + 1):
            history.append(_epoch(net, X, y, fn, optimizer, rng, starts, sizes, epoch, bar, test))
            log(_describe(history[-1], epochs))
    return history


def _epoch(net, X, y, fn, optimizer, rng, starts, sizes, epoch, bar, test):
    """One pass over the shuffled data; the host reads the step losses once, at the end."""
    backend, xp, N = net.backend, net.xp, X.shape[1]
    t0 = time.perf_counter()
    order = to_device(backend, rng.permutation(N), "order", backend.dtype("int64"), check=False)
    Xe, ye = xp.take(X, order, axis=1), xp.take(y, order, axis=0)
    step_loss = backend.zeros((len(starts),), net.params.dtype)
    step_correct = backend.zeros((len(starts),), backend.dtype("int64"))
    for i, s in enumerate(starts):
        e = s + int(sizes[i])
        Y = net.forward(Xe[:, s:e], check=False)
        yb = ye[s:e]
        value, dY = fn(Y, yb, check=False)
        net.backward(dY, check=False)
        optimizer.step(net)
        step_loss[i] = value
        step_correct[i] = _n_correct(net, Y, yb)
        bar.update(1)
    losses = backend.to_numpy(step_loss)                   # the host reads only from here on
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        step = (epoch - 1) * len(starts) + bad[0] + 1
        raise TrainingDiverged(
            f"the training loss became {losses[bad[0]]} at step {step} (epoch {epoch}, "
            f"batch {bad[0] + 1} of {len(starts)}); try a lower learning rate "
            f"(it is {getattr(optimizer, 'lr', '?')})")
    record = {"epoch": epoch, "loss": float(losses @ sizes / N),
              "accuracy": float(backend.to_numpy(step_correct).sum() / N)}
    if test is not None:
        record["test_loss"], record["test_accuracy"] = _score(net, *test, fn)
    record["seconds"] = time.perf_counter() - t0
    return record


def _describe(record, epochs):
    line = f"epoch {record['epoch']:>3}/{epochs}  loss {record['loss']:.4f}  acc {record['accuracy']:.4f}"
    if "test_accuracy" in record:
        line += f"  test loss {record['test_loss']:.4f}  test acc {record['test_accuracy']:.4f}"
    return line


def _n_correct(net, Y, labels):
    """How many columns of Y have their largest entry at the label (an int64 device scalar)."""
    xp = net.xp
    return xp.sum(xp.astype(xp.argmax(Y, axis=0) == labels, net.backend.dtype("int64")))
