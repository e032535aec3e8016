"""Learning on real data, the CLI, saved models, and a run whose loss turns NaN."""
import json
import subprocess
import sys

import numpy as np
import pytest

import gpumlp
from gpumlp import cli, data, io
from gpumlp.train import TrainingDiverged, evaluate, fit


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
    from gpumlp.testing import strict_backend
    Xtr, ytr, Xte, yte = (a[:, :200] if a.ndim == 2 else a[:200] for a in digits)
    runs = []
    for device in ("cpu", strict_backend()):
        net = gpumlp.MLP([64, 32, 10], dtype="float64", device=device, seed=1)
        runs.append(fit(net, Xtr, ytr, gpumlp.SGD(0.05, 0.9), loss="hinge", epochs=2, batch_size=50,
                        X_test=Xte, y_test=yte, progress=False, log=lambda line: None))
    for a, b in zip(*runs):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12) and a["test_accuracy"] == b["test_accuracy"]


def test_a_diverging_run_stops_naming_the_step(digits):
    Xtr, ytr, _, _ = digits
    net = gpumlp.MLP([64, 64, 10], device="cpu", seed=0)
    with pytest.raises(TrainingDiverged, match=r"became (nan|inf) at step \d+ \(epoch 1, batch \d+ of 45\); try a lower learning rate \(it is 1000000.0\)"):
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
    assert threads.step_flops([784, 1024, 1024, 10], 64) == 6 * 64 * (784 * 1024 + 1024 * 1024 + 1024 * 10)
    assert threads.auto_threads([784, 1024, 1024, 10], 64, cpus=2) == 2            # 715 MFLOP a step
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
