"""Checks that close gaps a mutation test found in the rest of the suite.

Each test below pins one behaviour that a planted bug used to slip past:
non-linear output layers and non-zero biases in the gradient checks, the epoch
loss and accuracy that fit reports, evaluate's loss, shuffling, +inf divergence,
large logits, weight decay, the workspace cache, the CLI's scaler, device names,
and stale gradients.  Only the public API is used.
"""
import re

import numpy as np
import pytest

import gpumlp
from gpumlp import cli, data, io
from gpumlp.losses import cross_entropy, hinge, mse
from gpumlp.testing import host, random_biases
from gpumlp.train import TrainingDiverged, evaluate, fit

QUIET = dict(progress=False, log=lambda line: None)




def classification_problem(d0, K, N, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((d0, N)), rng.integers(0, K, N)






# -- gap 3: fit's epoch loss and accuracy, reproduced by hand ----------------
def test_epoch_loss_and_accuracy_match_a_replay_by_hand():
    sizes, N, batch, seed, epochs = [5, 8, 3], 50, 16, 7, 2
    X, y = classification_problem(sizes[0], sizes[-1], N, 3)
    net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=4)
    replay = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=4)
    np.testing.assert_array_equal(host(net.params), host(replay.params))
    history = fit(net, X, y, gpumlp.SGD(0.5, momentum=0.9), loss="ce", epochs=epochs,
                  batch_size=batch, seed=seed, **QUIET)

    optimizer, rng = gpumlp.SGD(0.5, momentum=0.9), np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(N)
        step_losses, step_sizes, correct = [], [], 0
        for s in range(0, N, batch):
            idx = order[s:s + batch]
            Y = replay.forward(X[:, idx])
            value, dY = cross_entropy(Y, y[idx])
            correct += int(np.sum(np.argmax(host(Y), axis=0) == y[idx]))
            replay.backward(dY)
            optimizer.step(replay)
            step_losses.append(float(value))
            step_sizes.append(len(idx))
        assert step_sizes == [16, 16, 16, 2]
        loss = float(np.dot(step_losses, step_sizes) / N)
        # the test is sensitive: the unweighted mean and a per-(batches × batch) accuracy differ
        assert abs(np.mean(step_losses) - loss) > 1e-4 and correct > 0
        assert history[epoch]["epoch"] == epoch + 1
        assert history[epoch]["loss"] == pytest.approx(loss, rel=1e-10, abs=0)
        assert history[epoch]["accuracy"] == pytest.approx(correct / N, rel=1e-10, abs=0)
    np.testing.assert_allclose(host(net.params), host(replay.params), rtol=1e-10, atol=1e-12)


# -- gap 4: evaluate's loss and fit's test loss against the loss function ---
@pytest.mark.parametrize("loss", ["ce", "hinge", "mse"])
def test_evaluate_equals_the_loss_function_on_the_whole_data(loss):
    sizes, N, margin = [4, 6, 3], 50, 0.7
    X, y = classification_problem(sizes[0], sizes[-1], N, 8)
    net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=2)
    random_biases(net, np.random.default_rng(9), 0.5)

    def direct(Y, labels):
        if loss == "ce":
            return float(cross_entropy(Y, labels)[0])
        if loss == "hinge":
            return float(hinge(Y, labels, margin=margin)[0])
        return float(mse(Y, np.eye(sizes[-1])[:, labels])[0])

    Y = host(net.forward(X))
    expected = direct(Y, y)
    accuracy = float(np.mean(np.argmax(Y, axis=0) == y))
    assert direct(Y[:, -1:], y[-1:]) > 1e-3          # the last batch (1 sample of 7) weighs in
    for batch_size in (7, 50, 4096):
        got_loss, got_acc = evaluate(net, X, y, loss=loss, margin=margin, batch_size=batch_size)
        assert got_loss == pytest.approx(expected, rel=1e-10, abs=0), batch_size
        assert got_acc == pytest.approx(accuracy, rel=1e-12, abs=0), batch_size


@pytest.mark.parametrize("loss", ["ce", "hinge", "mse"])
def test_fit_test_loss_is_the_loss_on_the_whole_test_set(loss):
    sizes = [5, 8, 3]
    Xtr, ytr = classification_problem(sizes[0], sizes[-1], 60, 1)
    Xte, yte = classification_problem(sizes[0], sizes[-1], 37, 2)
    net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=0)
    history = fit(net, Xtr, ytr, gpumlp.SGD(0.1), loss=loss, epochs=2, batch_size=16,
                  X_test=Xte, y_test=yte, **QUIET)
    Y = net.forward(Xte)
    if loss == "ce":
        expected = float(cross_entropy(Y, yte)[0])
    elif loss == "hinge":
        expected = float(hinge(Y, yte)[0])
    else:
        expected = float(mse(Y, np.eye(sizes[-1])[:, yte])[0])
    assert history[-1]["test_loss"] == pytest.approx(expected, rel=1e-10, abs=0)
    assert history[-1]["test_accuracy"] == pytest.approx(np.mean(np.argmax(host(Y), axis=0) == yte), abs=1e-15)


def test_fit_test_loss_on_the_digits_equals_cross_entropy_on_the_whole_test_set():
    X, y = data.load_digits()
    train, test = data.split(y, 0.2, seed=0)
    scaler = data.Standardizer.fit(X[:, train])
    Xtr, Xte = scaler(X[:, train]), scaler(X[:, test])
    net = gpumlp.MLP([64, 16, 10], dtype="float64", device="cpu", seed=0)
    history = fit(net, Xtr, y[train], gpumlp.SGD(0.1, momentum=0.9), loss="ce", epochs=1,
                  X_test=Xte, y_test=y[test], **QUIET)
    assert history[-1]["test_loss"] == pytest.approx(float(cross_entropy(net.forward(Xte), y[test])[0]),
                                                     rel=1e-10, abs=0)


# -- gap 5: the seed drives the shuffling --------------------------------------
def test_the_shuffling_seed_changes_the_trained_model_and_repeats_exactly():
    sizes = [5, 8, 3]
    X, y = classification_problem(sizes[0], sizes[-1], 50, 4)

    def trained(seed):
        net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=0)
        fit(net, X, y, gpumlp.SGD(0.1, momentum=0.9), loss="ce", epochs=2, batch_size=10, seed=seed, **QUIET)
        return host(net.params)

    a, again, b = trained(0), trained(0), trained(1)
    np.testing.assert_array_equal(a, again)
    assert np.max(np.abs(a - b)) > 1e-6


# -- gap 6: a loss that becomes +inf stops the run, naming the exact step -----
def test_a_loss_that_becomes_inf_stops_the_run_at_the_exact_step():
    N, batch, lr, epochs = 10, 4, 30.0, 20
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((1, N)), rng.integers(0, 2, N)

    # the replay: the same steps by hand, until the loss is no longer finite
    replay = gpumlp.MLP([1, 2], dtype="float32", device="cpu", seed=0)
    optimizer, order_rng = gpumlp.SGD(lr), np.random.default_rng(0)
    starts = list(range(0, N, batch))
    found = None
    with np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(1, epochs + 1):
            order = order_rng.permutation(N)
            for i, s in enumerate(starts):
                idx = order[s:s + batch]
                value, dY = mse(replay.forward(X[:, idx]), np.eye(2)[:, y[idx]])
                if not np.isfinite(float(value)):
                    found = (epoch, i + 1, float(value))
                    break
                replay.backward(dY)
                optimizer.step(replay)
            if found:
                break
    assert found is not None
    epoch, b, value = found
    assert value == np.inf                               # +inf, not NaN
    assert epoch >= 2                                    # so the step count spans epochs
    step = (epoch - 1) * len(starts) + b

    net = gpumlp.MLP([1, 2], dtype="float32", device="cpu", seed=0)
    with pytest.raises(TrainingDiverged) as info:
        fit(net, X, y, gpumlp.SGD(lr), loss="mse", epochs=epochs, batch_size=batch, seed=0, **QUIET)
    message = str(info.value)
    assert f"became inf at step {step} (epoch {epoch}, batch {b} of {len(starts)})" in message, message
    assert re.search(r"try a lower learning rate \(it is 30\.0\)", message)








# -- gap 10: the CLI fits its scaler on the training columns only --------------
def test_cli_scaler_is_fitted_on_the_training_split_only(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--hidden", "16", "--no-progress",
                     "--out", str(out)]) == 0
    capsys.readouterr()
    _, _, arrays = io.load(out / "model.npz", device="cpu")
    X, y = data.load_digits()
    idx, _ = data.encode_labels(y)                    # the CLI splits the class indices
    train, _ = data.split(idx, 0.2, seed=0)
    assert len(train) == 1438
    mean = np.asarray(arrays["x_mean"], np.float64).ravel()
    np.testing.assert_allclose(mean, X[:, train].mean(axis=1), rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(mean - X.mean(axis=1))) > 1e-3
    expected = data.Standardizer.fit(X[:, train])
    np.testing.assert_allclose(np.asarray(arrays["x_scale"]).ravel(), expected.scale.ravel(), rtol=1e-12)




