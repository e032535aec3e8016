"""fit and evaluate: learning on real data; the epoch's loss and accuracy, the test loss, the
shuffling, a run that diverges (NaN or +inf, at the exact step) replayed by hand; evaluate and
predict in batches; fit's arguments, defaults, progress bar and epoch lines; the CLI's train
and evaluate on the digits, saved models, threads."""
import json
import re
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import gpumlp
from gpumlp import cli, data, io
from gpumlp.losses import cross_entropy, hinge, mse
from gpumlp.testing import exact, host, labelled_problem, random_biases, ref_ce, ref_hinge, strict_backend
from gpumlp.train import TrainingDiverged, evaluate, fit

QUIET = dict(progress=False, log=lambda line: None)


@pytest.fixture(scope="module")
def digits():
    X, y = data.load_digits()
    train, test = data.split(y, 0.2, seed=0)
    scale = data.Standardizer.fit(X[:, train])
    return scale(X[:, train]), y[train], scale(X[:, test]), y[test]


@pytest.mark.parametrize("loss,lr", [("ce", 0.1), ("hinge", 0.01), ("mse", 0.02)])
def test_each_loss_learns_the_digits(digits, loss, lr):
    Xtr, ytr, Xte, yte = digits
    net = gpumlp.MLP([64, 256, 10], device="cpu", seed=0)
    history = fit(net, Xtr, ytr, gpumlp.SGD(lr, momentum=0.9, weight_decay=1e-3), loss=loss,
                  epochs=20, X_test=Xte, y_test=yte, progress=False, log=lambda line: None)
    assert [h["epoch"] for h in history] == list(range(1, 21))
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["test_accuracy"] >= 0.95
    loss_value, acc = evaluate(net, Xte, yte, loss=loss)
    assert acc == pytest.approx(history[-1]["test_accuracy"]) and loss_value == pytest.approx(history[-1]["test_loss"])
    assert (net.predict(Xte) == yte).mean() == pytest.approx(acc)


def test_training_on_the_strict_device_backend_matches_numpy(digits):
    Xtr, ytr, Xte, yte = (a[:, :200] if a.ndim == 2 else a[:200] for a in digits)
    runs = []
    for device in ("cpu", strict_backend()):
        net = gpumlp.MLP([64, 32, 10], dtype="float64", device=device, seed=1)
        runs.append(fit(net, Xtr, ytr, gpumlp.SGD(0.05, 0.9), loss="hinge", epochs=2, batch_size=50,
                        X_test=Xte, y_test=yte, progress=False, log=lambda line: None))
    for a, b in zip(*runs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12) and a["test_accuracy"] == b["test_accuracy"]


def test_a_diverging_run_stops_naming_the_step(digits):
    Xtr, ytr, _, _ = digits
    net = gpumlp.MLP([64, 64, 10], device="cpu", seed=0)
    with pytest.raises(TrainingDiverged, match=r"became (nan|inf) at step \d+ \(epoch 1, batch \d+ of 45\); "
                                               r"try a lower learning rate \(it is 1000000.0\)"):
        fit(net, Xtr, ytr, gpumlp.SGD(1e6), loss="mse", epochs=3, progress=False, log=lambda line: None)


def test_fit_rejects_bad_settings(digits):
    Xtr, ytr, _, _ = digits
    net = gpumlp.MLP([64, 10], device="cpu")
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fit(net, Xtr, ytr, gpumlp.SGD(0.1), epochs=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        fit(net, Xtr, ytr, gpumlp.SGD(0.1), batch_size=2.5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        fit(net, Xtr, ytr + 1, gpumlp.SGD(0.1))


def test_cli_train_writes_metrics_and_a_model_that_evaluate_scores(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "5", "--loss", "hinge", "--hidden", "64,32",
                     "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 5 and metrics["loss"] == "hinge"
    assert metrics["test_accuracy"] == metrics["history"][-1]["test_accuracy"] > 0.9
    net, meta, arrays = io.load(out / "model.npz", device="cpu")
    assert net.sizes == (64, 64, 32, 10) and meta["data"] == "digits"
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 359 and result["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert result["loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)
    assert cli.main(["evaluate", str(out / "model.npz"), "--split", "all", "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 1797


def test_cli_trains_on_the_users_own_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 300))
    y = np.where(X[0] * X[1] > 0, "same", "diff")                  # XOR-like, string labels
    np.savez(tmp_path / "xor.npz", X=X, y=y)
    assert cli.main(["train", "--data", str(tmp_path / "xor.npz"), "--device", "cpu", "--epochs", "40",
                     "--hidden", "16", "--lr", "0.1", "--no-progress", "--out", str(tmp_path / "o")]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9
    assert io.load(tmp_path / "o" / "model.npz", device="cpu")[2]["classes"].tolist() == ["diff", "same"]
    np.savez(tmp_path / "rows.npz", X=X.T, y=y)
    assert cli.main(["train", "--data", str(tmp_path / "rows.npz"), "--device", "cpu"]) == 2
    assert "save X.T" in capsys.readouterr().err


def test_evaluate_refuses_a_test_split_of_other_data_and_out_must_be_a_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    X, y = data.load_digits()
    np.savez(tmp_path / "other.npz", X=X[:, :500], y=y[:500])
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--data", str(tmp_path / "other.npz"), "--device", "cpu"]) == 2
    assert "not the data this model was trained on" in capsys.readouterr().err
    assert cli.main(["evaluate", str(out), "--data", str(tmp_path / "other.npz"), "--split", "all",
                     "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 500
    (tmp_path / "file").write_text("x")
    assert cli.main(["train", "--device", "cpu", "--out", str(tmp_path / "file"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "cannot create that folder" in captured.err and "epoch" not in captured.out


def test_cli_reports_divergence_and_bad_options(capsys):
    assert cli.main(["train", "--device", "cpu", "--lr", "1e6", "--loss", "mse", "--no-progress"]) == 1
    assert "try a lower learning rate" in capsys.readouterr().err
    assert cli.main(["train", "--activation", "swish", "--device", "cpu"]) == 2
    assert "unknown activation 'swish'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--hidden", "0"])


def test_saved_models_load_without_pickle_and_reject_other_files(tmp_path):
    net = gpumlp.MLP([3, 4, 2], activation="tanh", dtype="float64", device="cpu", seed=0)
    io.save(tmp_path / "m.npz", net, {"note": "hi"}, extra=np.arange(3))
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert {"W1", "b1", "W2", "b2", "format", "config", "meta", "extra"} <= set(z.files)
    back, meta, arrays = io.load(tmp_path / "m.npz", device="cpu")
    np.testing.assert_array_equal(back.params, net.params)
    assert back.activation == "tanh" and meta == {"note": "hi"} and arrays["extra"].tolist() == [0, 1, 2]
    np.savez(tmp_path / "other.npz", a=np.ones(2))
    with pytest.raises(ValueError, match="not a gpumlp model"):
        io.load(tmp_path / "other.npz")
    with np.load(tmp_path / "m.npz") as z:
        damaged = {k: z[k] for k in z.files if k != "W2"}
    np.savez(tmp_path / "damaged.npz", **damaged)
    with pytest.raises(ValueError, match=r"damaged: it lacks the arrays \['W2'\]"):
        io.load(tmp_path / "damaged.npz")
    assert list(tmp_path.glob(".tmp-*")) == []


def test_the_readme_train_command_reaches_097_on_digits(tmp_path):
    """`gpumlp train` with its defaults, as a user runs it (a separate process)."""
    run = subprocess.run([sys.executable, "-m", "gpumlp", "train", "--device", "cpu", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.97
    assert "epoch  30/30" in run.stdout and "test accuracy" in run.stdout


def test_train_picks_its_blas_threads_and_records_them(tmp_path):
    from threadpoolctl import threadpool_info

    from gpumlp import threads
    assert threads.auto_threads([64, 256, 10], 32, cpus=16) == 1                   # the digits: 3 MFLOP a step
    # forward and dW for every layer, W^T Δ for all but the first (gpumlp.flops)
    assert threads.step_flops([784, 1024, 1024, 10], 64) == 2 * 64 * (2 * (784 * 1024 + 1024 * 1024 + 1024 * 10)
                                                                      + 1024 * 1024 + 1024 * 10)
    assert threads.auto_threads([784, 1024, 1024, 10], 64, cpus=2) == 2            # 612 MFLOP a step
    assert threads.auto_threads([784, 1024, 1024, 10], 4096, cpus=16) == 16
    assert threads.auto_threads([784, 1024, 1024, 10], 4096, cpus=1) == 1
    before = [i["num_threads"] for i in threadpool_info()]
    for extra, expected in (([], 1), (["--threads", "2"], 2)):
        out = tmp_path / str(expected)
        assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out), *extra]) == 0
        assert json.loads((out / "metrics.json").read_text())["blas_threads"] == expected
    assert [i["num_threads"] for i in threadpool_info()] == before                  # restored after the run
    with pytest.raises(SystemExit):
        cli.main(["train", "--threads", "0"])


# -- fit's epoch figures, the test loss, the shuffling, +inf, replayed by hand ---------------------
def test_epoch_loss_and_accuracy_match_a_replay_by_hand():
    sizes, N, batch, seed, epochs = [5, 8, 3], 50, 16, 7, 2
    X, y = labelled_problem(d0=sizes[0], n=N, k=sizes[-1], seed=3)
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


@pytest.mark.parametrize("loss", ["ce", "hinge", "mse"])
def test_evaluate_equals_the_loss_function_on_the_whole_data(loss):
    sizes, N, margin = [4, 6, 3], 50, 0.7
    X, y = labelled_problem(d0=sizes[0], n=N, k=sizes[-1], seed=8)
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
    Xtr, ytr = labelled_problem(d0=sizes[0], n=60, k=sizes[-1], seed=1)
    Xte, yte = labelled_problem(d0=sizes[0], n=37, k=sizes[-1], seed=2)
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


def test_the_shuffling_seed_changes_the_trained_model_and_repeats_exactly():
    sizes = [5, 8, 3]
    X, y = labelled_problem(d0=sizes[0], n=50, k=sizes[-1], seed=4)

    def trained(seed):
        net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=0)
        fit(net, X, y, gpumlp.SGD(0.1, momentum=0.9), loss="ce", epochs=2, batch_size=10, seed=seed, **QUIET)
        return host(net.params)

    a, again, b = trained(0), trained(0), trained(1)
    np.testing.assert_array_equal(a, again)
    assert np.max(np.abs(a - b)) > 1e-6


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


# -- evaluate and predict in batches; fit's arguments, defaults, progress and log lines -----------
def test_evaluate_defaults_to_cross_entropy_and_checks_its_arguments():
    net = gpumlp.MLP([3, 4, 3], dtype="float64", device="cpu", seed=0)
    X, y = labelled_problem()
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
    X, _ = labelled_problem()
    y = np.array([0, 1, 2, 4, 0, 1, 2, 0, 1, 2])
    message = exact("labels must lie in [0, 3) for 3 classes (the rows of Y); got values from 0 to 4")
    with pytest.raises(ValueError, match=message):
        evaluate(net, X, y)
    with pytest.raises(ValueError, match=message):
        fit(net, X, y, gpumlp.SGD(0.1), **QUIET)


def test_fit_argument_messages_and_margins():
    net = gpumlp.MLP([3, 4, 3], device="cpu", seed=0)
    X, y = labelled_problem()
    with pytest.raises(ValueError, match=exact("give X_test and y_test together, or neither")):
        fit(net, X, y, gpumlp.SGD(0.1), X_test=X, **QUIET)
    with pytest.raises(ValueError, match=exact("margin must be a finite number >= 0; got -0.5")):
        fit(net, X, y, gpumlp.SGD(0.1), loss="hinge", margin=-0.5, **QUIET)
    for margin in (0.0, 0.5):
        assert len(fit(net, X, y, gpumlp.SGD(0.1), loss="hinge", margin=margin, epochs=1, **QUIET)) == 1


def test_fit_defaults_30_epochs_and_seed_0():
    X, y = labelled_problem(n=6)

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
    X, y = labelled_problem(n=10)
    net = gpumlp.MLP([3, 3], device="cpu", seed=0)
    fit(net, X, y, gpumlp.SGD(0.1), epochs=3, batch_size=4, log=lambda line: None, progress=True)
    bar = Bar.made[-1]
    assert bar.kwargs == {"total": 9, "unit": "batch", "disable": None, "leave": False}   # None: only on a terminal
    assert bar.n == 9
    fit(net, X, y, gpumlp.SGD(0.1), epochs=1, batch_size=4, **QUIET)
    assert Bar.made[-1].kwargs["disable"] is True


def test_the_epoch_log_lines():
    X, y = labelled_problem(n=10)
    Xt, yt = labelled_problem(n=6, seed=1)
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
    X, y = labelled_problem(n=10)
    net = gpumlp.MLP([3, 3], device="cpu", seed=0)
    t0 = time.perf_counter()
    history = fit(net, X, y, gpumlp.SGD(0.1), epochs=2, batch_size=4, **QUIET)
    elapsed = time.perf_counter() - t0
    assert all(0 <= h["seconds"] <= elapsed for h in history)
    assert sum(h["seconds"] for h in history) <= elapsed


def test_a_diverging_run_raises_no_numpy_warnings():
    """Overflow and invalid values on the way to NaN are silenced; the run stops with
    TrainingDiverged only, even where warnings are errors."""
    X, y = labelled_problem(n=12)
    net = gpumlp.MLP([3, 4, 3], dtype="float32", device="cpu", seed=0)
    with warnings.catch_warnings(), np.errstate(over="warn", invalid="warn", divide="warn"):
        warnings.simplefilter("error")
        with pytest.raises(TrainingDiverged):
            fit(net, X, y, gpumlp.SGD(1e4), loss="mse", epochs=20, batch_size=4, **QUIET)


def test_divergence_with_an_optimizer_without_lr():
    class Blowup:                                     # any object with update(net, normalizer) will do
        def update(self, net, normalizer):
            net.params[...] = np.inf
    X, y = labelled_problem(n=8)
    net = gpumlp.MLP([3, 3], device="cpu", seed=0)
    with pytest.raises(TrainingDiverged) as info:
        fit(net, X, y, Blowup(), epochs=1, batch_size=4, **QUIET)
    assert str(info.value).endswith("try a lower learning rate (it is ?)")


def forward_widths(monkeypatch, net):
    widths, forward = [], net._forward

    def recorded(Z0):
        widths.append(Z0.shape[1])
        return forward(Z0)
    monkeypatch.setattr(net, "_forward", recorded)
    return widths


def test_predict_and_evaluate_walk_the_data_in_batches(monkeypatch):
    net = gpumlp.MLP([3, 4, 3], dtype="float64", device="cpu", seed=0)
    X, y = labelled_problem(n=10)
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
    X, y = labelled_problem(d0=1, n=4097, k=2)
    widths = forward_widths(monkeypatch, net)
    net.predict(X)
    evaluate(net, X, y)
    fit(net, X[:, :4], y[:4], gpumlp.SGD(0.1), epochs=1, batch_size=4, X_test=X, y_test=y, **QUIET)
    assert widths == [4096, 1] * 2 + [4] + [4096, 1]
