"""gpumlp train's run folder as a user meets it: resuming (a finished run, a longer one, the
time of both sessions), --test-data, the noise scale's summary, one run per folder, and
interrupted runs that can still be scored and resumed exactly; the scaler fitted on the training
split alone."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpumlp import cli, data, io
from gpumlp.runs import Recorder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--device", "cpu", "--no-progress", "--hidden", "32"]
# slow enough per epoch (~0.3 s) to be stopped mid-run, fast enough for CI
SLOW = ["--device", "cpu", "--hidden", "512,512", "--batch-size", "8", "--lr", "0.01", "--dtype", "float64",
        "--threads", "1", "--no-progress"]


def params_of(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k[0] in "Wb"}


def same_params(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def arrays_of(state):
    """The arrays in an optimizer's state (a dict, possibly nested), in key order."""
    if isinstance(state, dict):
        return [a for k in sorted(state) for a in arrays_of(state[k])]
    if isinstance(state, (list, tuple)):
        return [a for v in state for a in arrays_of(v)]
    return [np.asarray(state)] if state is not None and np.ndim(state) else []


def stop_after(monkeypatch, epoch):
    """Ctrl-C right after ``epoch`` is recorded (its checkpoint is then written on the way out)."""
    real = Recorder.on_epoch

    def on_epoch(self, net, optimizer_state, record, state, seconds):
        real(self, net, optimizer_state, record, state, seconds)
        if record["epoch"] == epoch:
            raise KeyboardInterrupt
    monkeypatch.setattr(Recorder, "on_epoch", on_epoch)


def gpumlp_cmd(*args):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "GPUMLP_DEVICE": "cpu", "PYTHONPATH": ROOT}
    env.pop("PYTHONUNBUFFERED", None)
    return subprocess.Popen([sys.executable, "-m", "gpumlp", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for_lines(path, n, p, timeout=120):
    t0 = time.monotonic()
    while not (path.exists() and len(path.read_text().splitlines()) >= n):
        assert p.poll() is None and time.monotonic() - t0 < timeout, "the run ended or stalled"
        time.sleep(0.01)


# -- friction 9: resume -------------------------------------------------------------------------------

def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *FAST, "--epochs", "2", "--out", str(out)]) == 0
    before = {f: ((out / f).read_bytes(), (out / f).stat().st_mtime_ns) for f in os.listdir(out) if f != ".lock"}
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and f"{out} is complete, after epoch 2 of 2" in said and "nothing was changed" in said
    assert f"gpumlp train --resume {out} --epochs E, with E > 2" in said
    assert {f: ((out / f).read_bytes(), (out / f).stat().st_mtime_ns) for f in os.listdir(out) if f != ".lock"} \
        == before
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0   # its own length: the same
    assert "is complete" in capsys.readouterr().out
    assert cli.main(["train", "--resume", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the run is of 2 epochs; --epochs can only extend it" in err
    assert cli.main(["train", "--resume", str(out), "--epochs", "5", "--seed", "1"]) == 2
    assert "drop --seed" in capsys.readouterr().err


def test_a_finished_run_extended_equals_the_longer_run(tmp_path, capsys):
    """--resume DIR --epochs 4 after 2 epochs: bit for bit the 4-epoch run, with the noise scale
    and the time of both sessions recorded."""
    args = ["train", *FAST, "--noise-scale"]
    assert cli.main([*args, "--epochs", "4", "--out", str(tmp_path / "long")]) == 0
    assert cli.main([*args, "--epochs", "2", "--out", str(tmp_path / "short")]) == 0
    first = json.loads((tmp_path / "short" / "metrics.json").read_text())
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "short"), "--epochs", "4", "--no-progress"]) == 0
    assert "after epoch 2 of 4" in capsys.readouterr().out
    assert same_params(params_of(tmp_path / "long" / "model.npz"), params_of(tmp_path / "short" / "model.npz"))
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("long", "short"))
    for key in ("loss", "test_accuracy", "b_simple", "b_simple_mean"):
        assert [h[key] for h in a["history"]] == [h[key] for h in b["history"]], key
    assert b["args"]["epochs"] == 4 and len(b["history"]) == 4
    assert 0 < b["session_train_seconds"] < b["train_seconds"]
    assert b["train_seconds"] == pytest.approx(first["train_seconds"] + b["session_train_seconds"], abs=0.05)
    assert first["train_seconds"] == first["session_train_seconds"]


# -- friction 3: the noise scale's closing summary --------------------------------------------------------

def test_the_noise_summary_names_each_figure(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *FAST, "--epochs", "3", "--noise-scale", "--out", str(out)]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("gradient noise scale")]
    final = json.loads((out / "metrics.json").read_text())["history"][-1]
    assert line == [f"gradient noise scale B_simple: {final['b_simple']:.0f} at the end (moving average), "
                    f"{final['b_simple_start']:.0f} over the first epoch (its batches' means), "
                    f"{final['b_simple_mean']:.0f} over the run (every batch's means)"]


# -- friction 10: --test-data -----------------------------------------------------------------------------

@pytest.fixture
def official_split(tmp_path):
    X, y = data.load_digits()
    np.savez(tmp_path / "train.npz", X=X[:, :1400], y=y[:1400])
    np.savez(tmp_path / "test.npz", X=X[:, 1400:], y=y[1400:])
    return tmp_path / "train.npz", tmp_path / "test.npz"


def test_test_data_trains_on_all_and_scores_on_the_file(official_split, tmp_path, capsys):
    train, test = official_split
    out = tmp_path / "run"
    assert cli.main(["train", *FAST, "--epochs", "3", "--data", str(train), "--test-data", str(test),
                     "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"1400 training, 397 test samples from {test}" in said
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_data"] == str(test) and metrics["test_fraction"] is None
    assert metrics["args"]["test_data"] == str(test)
    assert cli.main(["evaluate", str(out), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"] == str(test) and result["samples"] == 397
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert cli.main(["evaluate", str(out), "--device", "cpu", "--split", "all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 1400              # all of the training data
    assert cli.main(["evaluate", str(out), "--device", "cpu", "--data", str(train)]) == 2
    assert "not the test data this model was scored on" in capsys.readouterr().err
    assert cli.main(["train", *FAST, "--data", str(train), "--test-data", str(test), "--test-fraction", "0.3"]) == 2
    assert "drop --test-fraction" in capsys.readouterr().err
    test.rename(tmp_path / "gone.npz")
    assert cli.main(["evaluate", str(out), "--device", "cpu"]) == 2
    assert f"was scored on {test}, which is not there any more" in capsys.readouterr().err


def test_a_test_data_run_resumes_on_the_same_test_data(official_split, tmp_path, monkeypatch, capsys):
    train, test = official_split
    args = ["train", *FAST, "--epochs", "4", "--data", str(train), "--test-data", str(test)]
    assert cli.main([*args, "--out", str(tmp_path / "whole")]) == 0
    with monkeypatch.context() as m:
        stop_after(m, 2)
        assert cli.main([*args, "--out", str(tmp_path / "cut")]) == 130
    assert cli.main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text())["history"] for d in ("whole", "cut"))
    assert [h["test_accuracy"] for h in a] == [h["test_accuracy"] for h in b]
    assert same_params(params_of(tmp_path / "whole" / "model.npz"), params_of(tmp_path / "cut" / "model.npz"))
    X, y = data.load_digits()
    np.savez(test, X=X[:, 1300:], y=y[1300:])                  # the test file changed under the run
    (tmp_path / "cut" / "model.npz").unlink()
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 2
    assert f"{test} has changed since the checkpoint" in capsys.readouterr().err


# -- friction 2 and the test-strength gaps: interrupted runs ----------------------------------------------

def test_an_interrupted_run_can_be_evaluated_and_predicts(tmp_path, monkeypatch, capsys):
    """The interrupted run has no model.npz: evaluate and predict use its checkpoint and say
    so, and score exactly what a run of that many epochs scores."""
    with monkeypatch.context() as m:
        stop_after(m, 2)
        assert cli.main(["train", *FAST, "--epochs", "5", "--out", str(tmp_path / "cut")]) == 130
    err = capsys.readouterr().err
    assert "interrupted after epoch 2; resume with: gpumlp train --resume" in err and err.count("\n") == 1
    assert cli.main(["train", *FAST, "--epochs", "2", "--out", str(tmp_path / "two")]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(tmp_path / "cut"), "--device", "cpu", "--json"]) == 0
    captured = capsys.readouterr()
    assert "holds no model.npz (its run did not finish): using checkpoint.npz, as of epoch 2" in captured.err
    result = json.loads(captured.out)
    assert result["model"] == str(tmp_path / "cut" / "checkpoint.npz") and result["samples"] == 359
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert result["accuracy"] == two["test_accuracy"] and result["loss"] == pytest.approx(two["test_loss"], rel=1e-6)
    X, _ = data.load_digits()
    np.savez(tmp_path / "new.npz", X=X[:, :50])
    labels = []
    for run in ("cut", "two"):
        assert cli.main(["predict", str(tmp_path / run), "--data", str(tmp_path / "new.npz"), "--device", "cpu"]) == 0
        labels.append(capsys.readouterr().out.split())
    assert labels[0] == labels[1] and len(labels[0]) == 50


def test_ctrl_c_mid_epoch_leaves_the_previous_epoch_bit_for_bit(tmp_path):
    cut = tmp_path / "cut"
    p = gpumlp_cmd("train", *SLOW, "--epochs", 30, "--out", cut)
    wait_for_lines(cut / "metrics.jsonl", 2, p)
    time.sleep(0.1)                                  # into the next epoch (~0.3 s each)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    ck = io.load_checkpoint(cut / "checkpoint.npz", device="cpu")
    done = ck.state.epoch
    assert f"interrupted after epoch {done};" in err and done >= 2
    whole = tmp_path / "whole"
    q = gpumlp_cmd("train", *SLOW, "--epochs", done, "--out", whole)
    assert q.wait(timeout=300) == 0
    again = io.load_checkpoint(whole / "checkpoint.npz", device="cpu")
    assert again.state.epoch == done and np.array_equal(again.net.params, ck.net.params)
    assert again.state.to_json() == ck.state.to_json()
    velocity = [arrays_of(c.optimizer_state) for c in (again, ck)]
    assert len(velocity[0]) >= 1 and all(np.array_equal(a, b) for a, b in zip(*velocity, strict=True))


def test_a_non_default_test_fraction_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    args = ["train", *FAST, "--epochs", "4", "--test-fraction", "0.35", "--seed", "2"]
    assert cli.main([*args, "--out", str(tmp_path / "whole")]) == 0
    with monkeypatch.context() as m:
        stop_after(m, 3)
        assert cli.main([*args, "--out", str(tmp_path / "cut")]) == 130
    assert cli.main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "cut"))
    assert b["test_fraction"] == 0.35 and b["history"][0]["test_loss"] != json.loads(
        (tmp_path / "whole" / "metrics.json").read_text())["history"][1]["test_loss"]
    assert [h["test_loss"] for h in a["history"]] == [h["test_loss"] for h in b["history"]]
    assert same_params(params_of(tmp_path / "whole" / "model.npz"), params_of(tmp_path / "cut" / "model.npz"))


# -- friction 13: one run per folder -----------------------------------------------------------------------

def test_a_second_run_into_a_busy_folder_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    p = gpumlp_cmd("train", *SLOW, "--epochs", 30, "--out", out)
    try:
        wait_for_lines(out / "metrics.jsonl", 1, p)
        lines = (out / "metrics.jsonl").read_text()
        for argv in (["train", *FAST, "--epochs", "1", "--out", str(out)],
                     ["train", *FAST, "--epochs", "1", "--out", str(out), "--force"],
                     ["train", "--resume", str(out)]):
            assert cli.main(argv) == 2
            err = capsys.readouterr().err
            assert err == f"gpumlp: error: {out} is in use by another gpumlp run (pid {p.pid}): wait for it to " \
                          "end, or give another folder\n", argv
        assert (out / "metrics.jsonl").read_text().startswith(lines)      # the first run's record, untouched
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 2      # killed before a checkpoint...
    assert "no checkpoint.npz" in capsys.readouterr().err                      # ...but not locked any more
    assert cli.main(["train", *FAST, "--epochs", "1", "--out", str(out)]) == 0


# -- the scaler is fitted on the training columns only -----------------------------------------
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

