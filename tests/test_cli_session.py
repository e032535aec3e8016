"""gpumlp train's session (gpumlp.cli.session) and command (gpumlp.cli.train), in-process and fast:
tiny data, a few epochs.  The session's clock is a fake one, so the times it records and prints
are exact; a spy on fit checks what the session hands it; fake MPI jobs stand in for the ranks."""
import json
import os
import sys
import types

import numpy as np
import pytest

from gpumlp import backend as B
from gpumlp import cli, data, io, threads
from gpumlp.classifier import Classifier
from gpumlp.cli import session
from gpumlp.cli import train as cmd
from gpumlp.cli.job import Job
from gpumlp.cli.options import extra_hint
from gpumlp.model import MLP
from gpumlp.noise import NoiseScale
from gpumlp.optim import SGD
from gpumlp.runs import RUN_OPTIONS, Recorder, RunDir
from gpumlp.state import TrainState
from gpumlp.testing import exact, strict_backend
from gpumlp.train import OutOfDeviceMemory, TrainingDiverged

FAST = ["--device", "cpu", "--hidden", "4", "--threads", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def no_default_device(monkeypatch):
    """Every command here says --device cpu: a device taken from anywhere else fails loudly."""
    monkeypatch.setenv("GPUMLP_DEVICE", "no such device")


@pytest.fixture
def tiny(tmp_path):
    """40 samples of 4 features in 2 classes (32 train, 8 test at the default fraction)."""
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    X = rng.standard_normal((4, 40)) + 1.5 * y
    path = tmp_path / "tiny.npz"
    np.savez(path, X=X, y=y)
    return path


class Clock:
    """session.time with a perf_counter that returns the given readings in turn."""

    def __init__(self, *readings):
        self.readings = list(readings)

    def perf_counter(self):
        return self.readings.pop(0)


def clock(monkeypatch, *readings):
    c = Clock(*readings)
    monkeypatch.setattr(session, "time", c)
    return c


def run_cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def epoch_line(h, epochs):
    return (f"epoch {h['epoch']:>3}/{epochs}  loss {h['loss']:.4f}  acc {h['accuracy']:.4f}  "
            f"test loss {h['test_loss']:.4f}  test acc {h['test_accuracy']:.4f}")


def model_params(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k[0] in "Wb"}


def same_params(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# -- a run as the user sees it --------------------------------------------------------------------------

def test_a_run_prints_each_line_and_records_its_exact_time(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    clock(monkeypatch, 100.0, 101.0, 102.5, 103.0)       # start, after epoch 1, after epoch 2, end
    code, said, err = run_cli(["train", *FAST, "--epochs", 2, "--data", tiny, "--out", out], capsys)
    assert code == 0 and err == ""
    metrics = json.loads((out / "metrics.json").read_text())
    h = metrics["history"]
    net = MLP([4, 4, 2], device="cpu")
    assert said.splitlines() == [
        f"gpumlp: {net} on {tiny}: 32 training, 8 test samples, loss ce, batch 32, lr 0.1, 1 BLAS thread(s)",
        epoch_line(h[0], 2), epoch_line(h[1], 2),
        f"test accuracy {h[1]['test_accuracy']:.4f}  test loss {h[1]['test_loss']:.4f}  (3.0 s, device numpy)",
        f"wrote {out / 'model.npz'}, {out / 'checkpoint.npz'} and {out / 'metrics.json'}"]
    assert metrics["train_seconds"] == 3.0 and metrics["session_train_seconds"] == 3.0
    ck = io.load_checkpoint(out / "checkpoint.npz", device="cpu")
    assert ck.meta["train_seconds"] == 2.5                      # the last epoch boundary's snapshot
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] == h
    assert metrics["args"] == {k: v for k, v in {
        "data": str(tiny), "loss": "ce", "epochs": 2, "batch_size": 32, "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-3, "hidden": [4], "activation": "relu", "margin": 1.0, "dtype": "float32", "seed": 0,
        "test_fraction": 0.2, "threads": 1, "checkpoint_every": None, "noise_scale": False,
        "clip_grad_norm": None, "plot": False, "micro_batch": None, "test_data": None}.items()}
    assert list(metrics["args"]) == list(RUN_OPTIONS)
    sha = data.fingerprint(*data.load_npz(tiny))
    assert {k: v for k, v in metrics.items() if k not in ("history", "args")} == {
        "test_accuracy": h[1]["test_accuracy"], "test_loss": h[1]["test_loss"], "train_seconds": 3.0,
        "session_train_seconds": 3.0, "device": "numpy", "loss": "ce", "margin": 1.0, "data": str(tiny),
        "data_sha256": sha, "test_fraction": 0.2, "split_seed": 0, "split_version": 2, "blas_threads": 1}
    RunDir(out).lock().unlock()                                # the run let its folder go


def test_an_extended_run_equals_the_longer_run_and_adds_up_its_time(tiny, tmp_path, capsys, monkeypatch):
    args = ["train", *FAST, "--data", tiny, "--test-fraction", 0.25, "--seed", 3]
    clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 4.0)
    assert run_cli([*args, "--epochs", 3, "--out", tmp_path / "long"], capsys)[0] == 0
    clock(monkeypatch, 10.0, 11.0, 12.5, 13.0)
    assert run_cli([*args, "--epochs", 2, "--out", tmp_path / "short"], capsys)[0] == 0
    clock(monkeypatch, 50.0, 51.5, 52.0)
    code, said, err = run_cli(["train", "--resume", tmp_path / "short", "--epochs", 3, "--device", "cpu",
                               "--no-progress"], capsys)
    assert code == 0 and err == ""
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("long", "short"))
    lines = said.splitlines()
    assert lines[0] == f"gpumlp: resuming {tmp_path / 'short'} after epoch 2 of 3"
    assert lines[1].startswith("gpumlp: MLP(sizes=[4, 4, 2], activation='relu'")
    assert " 30 training, 10 test" in lines[1]
    assert lines[2:] == [epoch_line(b["history"][2], 3),
                         f"test accuracy {b['test_accuracy']:.4f}  test loss {b['test_loss']:.4f}  "
                         "(2.0 s in this session, 4.5 s in all, device numpy)",
                         f"wrote {tmp_path / 'short' / 'model.npz'}, {tmp_path / 'short' / 'checkpoint.npz'} and "
                         f"{tmp_path / 'short' / 'metrics.json'}"]
    assert same_params(model_params(tmp_path / "long" / "model.npz"), model_params(tmp_path / "short" / "model.npz"))
    assert [h["test_loss"] for h in a["history"]] == [h["test_loss"] for h in b["history"]]
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert b["train_seconds"] == 4.5 and b["session_train_seconds"] == 2.0      # 2.5 s before, 2.0 s now
    assert b["args"] == {**a["args"], "epochs": 3} and b["args"]["test_fraction"] == 0.25
    ck = io.load_checkpoint(tmp_path / "short" / "checkpoint.npz", device="cpu")
    assert ck.meta["train_seconds"] == 4.0 and ck.state.epoch == 3 and ck.meta["args"]["epochs"] == 3
    assert ck.state.to_json() == io.load_checkpoint(tmp_path / "long" / "checkpoint.npz", device="cpu").state.to_json()
    lines = (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == b["history"]
    RunDir(tmp_path / "short").lock().unlock()


def test_a_finished_run_is_left_alone_and_can_only_be_extended(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", *FAST, "--epochs", 3, "--data", tiny, "--out", out], capsys)[0] == 0
    ck = io.load_checkpoint(out / "checkpoint.npz", device="cpu")
    history = [{**h, "test_accuracy": 0.125 * h["epoch"]} for h in ck.meta["history"]]
    io.save_checkpoint(out / "checkpoint.npz", ck.net, ck.optimizer_state, ck.state, {**ck.meta, "history": history},
                       **ck.arrays)
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    done = (f"gpumlp: {out} is complete, after epoch 3 of 3 (test accuracy 0.3750); nothing was changed. "
            f"To train it longer: gpumlp train --resume {out} --epochs E, with E > 3\n")
    for extra in ([], ["--epochs", 3]):
        assert run_cli(["train", "--resume", out, "--device", "cpu", *extra], capsys) == (0, done, "")
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    assert run_cli(["train", "--resume", out, "--epochs", 2, "--device", "cpu"], capsys) == (
        2, "", f"gpumlp: error: --resume {out}: the run is of 3 epochs; --epochs can only extend it (give more "
               "than 3)\n")
    for extra, named in ((["--seed", 1], "--seed"), (["--out", out, "--force", "--lr", 0.5], "--force, --lr, --out"),
                         (["--test-data", tiny, "--epochs", 5], "--test-data")):
        assert run_cli(["train", "--resume", out, *extra], capsys) == (
            2, "", f"gpumlp: error: --resume takes the run's settings from its checkpoint; drop {named} (only "
                   "--epochs, --device and --no-progress may be given)\n")
    (out / "metrics.json").unlink()                           # an unfinished end: trained again to its epochs
    assert run_cli(["train", "--resume", out, "--device", "cpu", "--no-progress"], capsys)[0] == 0
    assert json.loads((out / "metrics.json").read_text())["history"] == history


def test_resume_needs_a_checkpoint_and_a_free_folder(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    for folder in (missing, tmp_path):
        assert run_cli(["train", "--resume", folder, "--device", "cpu"], capsys) == (
            2, "", f"gpumlp: error: --resume {folder}: there is no checkpoint.npz there (a run saves one with "
                   "--out)\n")
    assert not missing.exists()                                # nothing made where there was nothing
    RunDir(tmp_path).lock().unlock()                           # the failed resume let the folder go
    holder = RunDir(tmp_path).lock()
    try:
        assert run_cli(["train", "--resume", tmp_path, "--device", "cpu"], capsys) == (
            2, "", f"gpumlp: error: {tmp_path} is in use by another gpumlp run (pid {os.getpid()}): wait for it to "
                   "end, or give another folder\n")
    finally:
        holder.unlock()


def test_a_resumed_run_checks_its_data_and_keeps_its_saved_scaling(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", *FAST, "--epochs", 1, "--data", tiny, "--out", out], capsys)[0] == 0
    ck = io.load_checkpoint(out / "checkpoint.npz", device="cpu")
    scale = ck.arrays["x_scale"] * 3.0                          # another scaling than a refit gives
    io.save_checkpoint(out / "checkpoint.npz", ck.net, ck.optimizer_state, ck.state, ck.meta,
                       **{**ck.arrays, "x_scale": scale})
    assert run_cli(["train", "--resume", out, "--epochs", 2, "--device", "cpu", "--no-progress"], capsys)[0] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    clf = Classifier.load(out, device="cpu")
    assert np.array_equal(clf.scaler.scale, scale)
    X, y = data.load_npz(tiny)
    _, test = data.split(y, 0.2, data.SPLIT_SEED)
    loss, accuracy = clf.evaluate(X[:, test], y[test])          # what it scored, it scored with that scaling
    assert loss == pytest.approx(metrics["test_loss"], rel=1e-6) and accuracy == metrics["test_accuracy"]

    (out / "metrics.json").unlink()
    X2 = X.copy()
    X2[0, 0] += 1.0
    np.savez(tiny, X=X2, y=y)
    assert run_cli(["train", "--resume", out, "--device", "cpu"], capsys) == (
        2, "", f"gpumlp: error: {tiny} has changed since the checkpoint in {out} was written: a resumed run must "
               "see the same data\n")
    np.savez(tiny, X=X, y=np.where(np.arange(40) == 5, 2, y))   # a label the run never saw
    assert run_cli(["train", "--resume", out, "--device", "cpu"], capsys) == (
        2, "", f"gpumlp: error: {tiny}: labels [2] are not among the model's classes [0, 1]\n")


def test_a_test_data_run_resumes_on_its_test_file_and_notices_a_change(tiny, tmp_path, capsys):
    X, y = data.load_npz(tiny)
    test = tmp_path / "test.npz"
    np.savez(test, X=X[:, :12] + 0.5, y=y[:12])
    args = ["train", *FAST, "--data", tiny, "--test-data", test]
    assert run_cli([*args, "--epochs", 2, "--out", tmp_path / "long"], capsys)[0] == 0
    code, said, _ = run_cli([*args, "--epochs", 1, "--out", tmp_path / "run"], capsys)
    assert code == 0 and f": 40 training, 12 test samples from {test}, loss ce," in said
    assert run_cli(["train", "--resume", tmp_path / "run", "--epochs", 2, "--device", "cpu"], capsys)[0] == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("long", "run"))
    assert [h["test_loss"] for h in a["history"]] == [h["test_loss"] for h in b["history"]]
    assert b["test_data"] == str(test) and b["test_fraction"] is None and b["args"]["test_fraction"] is None
    (tmp_path / "run" / "metrics.json").unlink()
    np.savez(test, X=X[:, :12], y=y[:12])
    assert run_cli(["train", "--resume", tmp_path / "run", "--device", "cpu"], capsys) == (
        2, "", f"gpumlp: error: {test} has changed since the checkpoint in {tmp_path / 'run'} was written: a resumed "
               "run must see the same data\n")


def test_a_resumed_optimizer_state_that_does_not_fit_is_named_as_damage(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", *FAST, "--epochs", 1, "--data", tiny, "--out", out], capsys)[0] == 0
    ck = io.load_checkpoint(out / "checkpoint.npz", device="cpu")
    meta = {**ck.meta, "args": {**ck.meta["args"], "momentum": 0.0}}
    io.save_checkpoint(out / "checkpoint.npz", ck.net, ck.optimizer_state, ck.state, meta, **ck.arrays)
    assert run_cli(["train", "--resume", out, "--epochs", 2, "--device", "cpu"], capsys) == (
        2, "", f"gpumlp: error: {out / 'checkpoint.npz'} is damaged: the saved optimizer state has momentum buffers, "
               "but this SGD has momentum 0\n")


def test_a_run_refuses_a_folder_that_holds_one_and_replaces_it_with_force(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *FAST, "--epochs", 1, "--data", tiny, "--out", out]
    assert run_cli(args, capsys)[0] == 0
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    assert run_cli(args, capsys) == (
        2, "", f"gpumlp: error: --out {out} already holds a run (model.npz, checkpoint.npz): pass --force to replace "
               f"it, or continue it with: gpumlp train --resume {out}\n")
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    assert run_cli([*args, "--force", "--seed", 5], capsys)[0] == 0
    assert json.loads((out / "metrics.json").read_text())["args"]["seed"] == 5


def test_the_settings_reach_the_model_the_optimizer_and_the_record(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    code, said, _ = run_cli(["train", "--device", "cpu", "--no-progress", "--threads", "2", "--data", tiny,
                             "--epochs", 1, "--hidden", "3,5", "--activation", "tanh", "--dtype", "float64",
                             "--loss", "hinge", "--margin", 0.5, "--batch-size", 8, "--momentum", 0.5,
                             "--weight-decay", 0.01, "--clip-grad-norm", 2.0, "--micro-batch", 4, "--out", out],
                            capsys)
    assert code == 0
    net, meta, arrays = io.load(out / "model.npz", device="cpu")
    assert (list(net.sizes), net.activation, net.dtype) == ([4, 3, 5, 2], "tanh", "float64")
    assert "loss hinge, batch 8, lr 0.01, 2 BLAS thread(s)\n" in said       # hinge's default lr
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["loss"], metrics["margin"], metrics["blas_threads"]) == ("hinge", 0.5, 2)
    assert {k: metrics["args"][k] for k in ("lr", "momentum", "weight_decay", "clip_grad_norm", "micro_batch",
                                             "batch_size", "margin")} == {
        "lr": 0.01, "momentum": 0.5, "weight_decay": 0.01, "clip_grad_norm": 2.0, "micro_batch": 4,
        "batch_size": 8, "margin": 0.5}
    assert meta == {k: v for k, v in metrics.items() if k not in ("test_accuracy", "test_loss", "train_seconds",
                                                                   "session_train_seconds", "device", "history",
                                                                   "args")}
    train, _ = data.split(data.load_npz(tiny)[1], 0.2, 0)
    scaler = data.Standardizer.fit(data.load_npz(tiny)[0][:, train])
    assert np.array_equal(arrays["x_mean"], scaler.mean) and np.array_equal(arrays["x_scale"], scaler.scale)
    assert arrays["classes"].tolist() == [0, 1]


def test_a_far_test_value_is_refused_for_the_models_dtype(tiny, tmp_path, capsys):
    X, y = data.load_npz(tiny)
    far = X[:, :6].copy()
    far[1, 2] = 1e45
    np.savez(tmp_path / "far.npz", X=far, y=y[:6])
    assert run_cli(["train", *FAST, "--data", tiny, "--test-data", tmp_path / "far.npz", "--epochs", 1], capsys) == (
        2, "", f"gpumlp: error: {tmp_path / 'far.npz'}: some test values lie too far outside the training data's "
               "range: scaled, some exceed what float32 holds (the largest raw value is 1e+45)\n")


@pytest.mark.parametrize("argv, message", [
    (["--activation", "swish"], "unknown activation 'swish'; expected one of leaky_relu, linear, relu, sigmoid, tanh"),
    (["--test-data", "t.npz", "--test-fraction", "0.3"],
     "--test-data is the whole test set: drop --test-fraction (it holds out part of --data)"),
    (["--plot"], "--plot is about the files of --out DIR: give --out DIR"),
    (["--force"], "--force is about the files of --out DIR: give --out DIR"),
    (["--checkpoint-every", "2"], "--checkpoint-every is about the files of --out DIR: give --out DIR"),
])
def test_what_argparse_cannot_check_is_refused_before_anything_runs(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(data, "prepare", None)                  # refused before the data is read
    assert run_cli(["train", "--device", "cpu", *argv], capsys) == (2, "", f"gpumlp: error: {message}\n")


def test_plot_without_matplotlib_is_refused_first(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert run_cli(["train", "--device", "cpu", "--plot", "--out", tmp_path / "run"], capsys) == (
        2, "", f"gpumlp: error: --plot needs matplotlib: {extra_hint('plot')}\n")
    assert not (tmp_path / "run").exists()


# -- the command's wiring, with the session replaced by a spy ---------------------------------------------

@pytest.fixture
def sessions(monkeypatch):
    """Each call of session.train from gpumlp.cli.train, its arguments by name (the real one runs)."""
    calls = []
    real = cmd.train

    def spy(job, opts, net, optimizer, state, prepared, recorder, no_progress, out=None, history=()):
        calls.append(dict(job=job, opts=opts, net=net, optimizer=optimizer, state=state, prepared=prepared,
                          recorder=recorder, no_progress=no_progress, out=out, history=history))
        return real(job, opts, net, optimizer, state, prepared, recorder, no_progress, out, history)
    monkeypatch.setattr(cmd, "train", spy)
    return calls


def test_a_new_run_hands_the_session_its_parts(tiny, tmp_path, capsys, sessions, monkeypatch):
    monkeypatch.setattr(B, "_auto", strict_backend())          # a device taken by default would be this one
    out = tmp_path / "run"
    assert run_cli(["train", *FAST, "--epochs", 2, "--data", tiny, "--seed", 7, "--checkpoint-every", 2,
                    "--out", out], capsys)[0] == 0
    (c,) = sessions
    assert c["out"] == str(out) and c["no_progress"] is True and c["history"] == ()
    assert c["recorder"].run.path == str(out) and c["recorder"].every == 2 and c["recorder"].seconds_before == 0.0
    assert c["recorder"].noise is None and c["state"].epoch == 2
    assert TrainState(7).to_json()["rng"]["state"] != TrainState(0).to_json()["rng"]["state"]
    fresh = MLP([4, 4, 2], device="cpu", seed=7)
    assert c["net"].sizes == fresh.sizes and c["net"].backend is B.get_backend("cpu")
    opt = c["optimizer"]
    assert (opt.lr, opt.momentum, opt.weight_decay, opt.clip_norm) == (0.1, 0.9, 1e-3, None)
    assert c["opts"] == {k: v for k, v in json.loads((out / "metrics.json").read_text())["args"].items()}
    assert c["prepared"].source == str(tiny) and c["prepared"].X_train.shape == (4, 32)
    extra = c["recorder"].extra
    assert set(extra) == {"x_mean", "x_scale", "classes"} and extra["x_mean"] is c["prepared"].scaler.mean
    assert extra["x_scale"] is c["prepared"].scaler.scale and extra["classes"] is c["prepared"].classes
    sessions.clear()
    assert run_cli(["train", *FAST, "--epochs", 1, "--data", tiny], capsys)[0] == 0
    (c,) = sessions
    assert c["recorder"].run is None and c["out"] is None and c["recorder"].every is None


def test_the_blas_threads_are_chosen_from_the_sizes_without_threads(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", "--device", "cpu", "--no-progress", "--hidden", "4", "--epochs", 1, "--data", tiny,
                    "--out", out], capsys)[0] == 0
    expected = threads.auto_threads([4, 4, 2], 32)
    assert json.loads((out / "metrics.json").read_text())["blas_threads"] == expected == 1


def test_a_rank_other_than_0_resumes_without_the_folder(tiny, tmp_path, capsys, monkeypatch, sessions):
    out = tmp_path / "run"
    assert run_cli(["train", *FAST, "--epochs", 1, "--data", tiny, "--out", out], capsys)[0] == 0
    holder = RunDir(out).lock()                                # rank 0 holds it: the others do not lock
    monkeypatch.setattr(session, "fit", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt))
    a = cli.parser().parse_args(["train", "--resume", str(out), "--epochs", "2", "--device", "cpu"])
    try:
        with pytest.raises(session.Interrupted, match=exact(f"interrupted after epoch 1; rank 0 keeps {out}")):
            cmd.cmd_train(a, {"resume", "epochs", "device"}, fake_job(2, rank=1))
    finally:
        holder.unlock()
    assert sessions[-1]["recorder"].run is None and sessions[-1]["state"].epoch == 1 and len(sessions) == 2


def test_two_runs_of_one_seed_are_equal_and_another_seed_differs(tiny, tmp_path, capsys):
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        assert run_cli(["train", *FAST, "--epochs", 1, "--data", tiny, "--seed", seed, "--out", tmp_path / name],
                       capsys)[0] == 0
    a, b, c = (model_params(tmp_path / d / "model.npz") for d in "abc")
    assert same_params(a, b) and not same_params(a, c)


def test_a_resumed_run_hands_the_session_its_checkpoint(tiny, tmp_path, capsys, sessions):
    out = tmp_path / "run"
    assert run_cli(["train", *FAST, "--epochs", 1, "--data", tiny, "--noise-scale", "--checkpoint-every", 1,
                    "--out", out], capsys)[0] == 0
    ck = io.load_checkpoint(out / "checkpoint.npz", device="cpu")
    sessions.clear()
    assert run_cli(["train", "--resume", out, "--epochs", 2, "--device", "cpu", "--no-progress"], capsys)[0] == 0
    (c,) = sessions
    r = c["recorder"]
    assert r.run.path == str(out) and r.every == 1 and r.seconds_before == ck.meta["train_seconds"]
    assert isinstance(r.noise, NoiseScale) and r.noise.steps > ck.meta["noise_scale_state"]["steps"]
    assert r.meta["args"]["epochs"] == 2 and r.meta["data_sha256"] == ck.meta["data_sha256"]
    assert "history" not in r.meta and "train_seconds" not in r.meta
    assert set(r.extra) == {"x_mean", "x_scale", "classes"} and np.array_equal(r.extra["x_scale"], ck.arrays["x_scale"])
    assert c["history"] == ck.meta["history"] and c["out"] == str(out) and c["no_progress"] is True
    assert c["state"].epoch == 2 and c["opts"] == r.meta["args"]


# -- blas_threads and the optimizer, with stand-in jobs -------------------------------------------------------

def fake_job(size=1, rank=0, local_size=1):
    parallel = None if size == 1 else types.SimpleNamespace(comm=None, rank=rank, size=size, local_size=local_size,
                                                            agree=lambda value: True)
    return Job(parallel)


def test_blas_threads_of_a_plain_run_and_of_the_ranks_of_a_job(monkeypatch):
    seen = []

    def auto_threads(sizes, batch, cpus=None):
        seen.append((list(sizes), batch, cpus))
        return 6
    monkeypatch.setattr(cmd.threads, "auto_threads", auto_threads)
    sizes = [64, 256, 10]
    assert cmd.blas_threads({"threads": 3, "batch_size": 32}, sizes, fake_job()) == 3 and seen == []
    assert cmd.blas_threads({"threads": None, "batch_size": 32}, sizes, fake_job()) == 6
    assert seen == [(sizes, 32, None)]
    seen.clear()
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert cmd.blas_threads({"threads": 2, "batch_size": 33}, sizes, fake_job(4, local_size=3)) == 2
    assert cmd.blas_threads({"threads": None, "batch_size": 33}, sizes, fake_job(4, local_size=3)) == 6
    assert seen == [(sizes, 9, 5)]                            # ceil(33 / 4) columns a rank, 16 // 3 CPUs
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    cmd.blas_threads({"threads": None, "batch_size": 8}, sizes, fake_job(2, local_size=4))
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    cmd.blas_threads({"threads": None, "batch_size": 8}, sizes, fake_job(2, local_size=1))
    assert seen[1:] == [(sizes, 4, 1), (sizes, 4, 1)]         # at least one CPU; one when the count is unknown


def test_optimizer_of_takes_each_setting():
    opt = cmd.optimizer_of({"lr": 0.3, "momentum": 0.25, "weight_decay": 0.125, "clip_grad_norm": 4.0})
    assert isinstance(opt, SGD) and (opt.lr, opt.momentum, opt.weight_decay, opt.clip_norm) == (0.3, 0.25, 0.125, 4.0)


def test_rank_0_of_a_job_refuses_a_folder_with_a_run_for_every_rank(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", *FAST, "--epochs", 1, "--data", tiny, "--out", out], capsys)[0] == 0
    a = cli.parser().parse_args(["train", *FAST, "--epochs", "1", "--data", str(tiny), "--out", str(out)])
    with pytest.raises(ValueError, match=exact(f"--out {out} already holds a run (model.npz, checkpoint.npz): pass "
                                               f"--force to replace it, or continue it with: mpiexec -n 3 gpumlp "
                                               f"train --resume {out}")):
        cmd.cmd_train(a, set(), fake_job(3, rank=0))
    RunDir(out).lock().unlock()


def test_only_rank_0_makes_the_folder(tiny, tmp_path, capsys, monkeypatch, sessions):
    """A rank other than 0 of an MPI job neither creates nor locks --out, and records into no folder."""
    job = fake_job(2, rank=1)
    job.share = lambda problem: None
    monkeypatch.setattr(session, "fit", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt))
    a = cli.parser().parse_args(["train", *FAST, "--epochs", "1", "--data", str(tiny), "--out", str(tmp_path / "run")])
    with pytest.raises(session.Interrupted, match=exact(f"interrupted after epoch 0; rank 0 keeps {tmp_path / 'run'}")):
        cmd.cmd_train(a, set(), job)
    assert sessions[0]["recorder"].run is None and not (tmp_path / "run").exists()


# -- the session itself, with fit replaced -----------------------------------------------------------------

def parts(tmp_path, tiny, out=True, epochs=3, **opts):
    prepared = data.prepare(tiny, 0.2)
    options = {**{k: None for k in RUN_OPTIONS}, "loss": "ce", "margin": 1.0, "epochs": epochs, "batch_size": 8,
               "lr": 0.1, "noise_scale": False, "plot": False, "micro_batch": None, **opts}
    meta = {"loss": "ce", "margin": 1.0, **prepared.record, "blas_threads": 1, "args": options}
    extra = {"x_mean": prepared.scaler.mean, "x_scale": prepared.scaler.scale, "classes": prepared.classes}
    run = RunDir(tmp_path / "run") if out else None
    if run is not None:
        os.makedirs(run.path, exist_ok=True)
    net = MLP([4, 3, 2], device="cpu", seed=0)
    return dict(opts=options, net=net, optimizer=SGD(0.1, 0.9), state=TrainState(0), prepared=prepared,
                recorder=Recorder(run, None, meta, extra))


class FakeFit:
    """fit as the session calls it: the arguments kept; each epoch a record for the hooks; then
    ``then`` raised (after ``stop`` epochs, with the epoch counter already advanced when ``early``)."""

    def __init__(self, stop=None, then=None, early=False):
        self.stop, self.then, self.early, self.calls = stop, then, early, []

    def __call__(self, net, X, y, optimizer, **kw):
        self.calls.append(dict(net=net, X=X, y=y, optimizer=optimizer, **kw))
        state, trainer = kw["state"], types.SimpleNamespace(net=net)
        for epoch in range(state.epoch + 1, kw["epochs"] + 1):
            if epoch - 1 == self.stop:
                if self.early:
                    state.epoch = epoch
                raise self.then
            net.params[...] += 0.5
            state.epoch, state.step = epoch, state.step + 4
            record = {"epoch": epoch, "loss": 1.0 / epoch, "accuracy": 0.5, "test_loss": 2.0 / epoch,
                      "test_accuracy": 0.25 * epoch, "seconds": 0.1, "b_simple": None, "b_simple_start": 12.4,
                      "b_simple_mean": 99.6}
            for h in kw["hooks"]:
                h.after_epoch(trainer, record)
        return []


def test_the_session_hands_fit_the_scaled_data_and_each_setting(tiny, tmp_path, capsys, monkeypatch):
    fit = FakeFit()
    monkeypatch.setattr(session, "fit", fit)
    limits = []
    real_limit = session.threads.limit
    monkeypatch.setattr(session.threads, "limit", lambda n: limits.append(n) or real_limit(n))
    clock(monkeypatch, 5.0, 6.0, 7.0, 8.5, 9.0)
    p = parts(tmp_path, tiny, micro_batch=2, margin=0.75, loss="hinge")
    p["recorder"].meta["blas_threads"] = 3
    job = Job()
    assert session.train(job, no_progress=True, out="o", **p) == 0
    assert limits == [3]                                       # the run's BLAS threads, around fit
    assert ", 3 BLAS thread(s)" in capsys.readouterr().out
    (c,) = fit.calls
    pr = p["prepared"]
    assert c["net"] is p["net"] and c["optimizer"] is p["optimizer"] and c["state"] is p["state"]
    assert np.array_equal(c["X"], pr.scaler(pr.X_train)) and np.array_equal(c["y"], pr.y_train)
    assert np.array_equal(c["X_test"], pr.scaler(pr.X_test)) and np.array_equal(c["y_test"], pr.y_test)
    assert (c["loss"], c["margin"], c["epochs"], c["batch_size"], c["micro_batch"]) == ("hinge", 0.75, 3, 8, 2)
    assert c["progress"] is False and c["log"] == job.say and c["noise_scale"] is False and c["parallel"] is None
    (hook,) = c["hooks"]
    assert isinstance(hook, session.Checkpoints) and hook.recorder is p["recorder"] and hook.t0 == 5.0
    assert hook.optimizer is p["optimizer"] and hook.state is p["state"]
    r = p["recorder"]
    assert [s for s in (r.snapshot[0], r.snapshot[5])] == [3, 3.5]     # epoch 3, 8.5 - 5.0 seconds in
    assert r.snapshot[2] == p["optimizer"].state_dict(p["net"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_seconds"] == 4.0 and [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert io.load_checkpoint(tmp_path / "run" / "checkpoint.npz", device="cpu").state.epoch == 3


def test_progress_and_the_epoch_lines_follow_the_terminal(tiny, tmp_path, capsys, monkeypatch):
    fit = FakeFit()
    monkeypatch.setattr(session, "fit", fit)
    job = Job()
    for no_progress, tty, progress, log in ((True, False, False, job.say), (False, False, True, job.say),
                                            (True, True, False, job.say), (False, True, True, None)):
        monkeypatch.setattr(sys.stdout, "isatty", lambda tty=tty: tty, raising=False)
        clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 4.0)
        session.train(job, no_progress=no_progress, **parts(tmp_path, tiny, out=False))
        c = fit.calls.pop()
        assert (c["progress"], c["log"]) == (progress, log), (no_progress, tty)
    other = fake_job(2, rank=1)
    for tty in (False, True):                                  # the other ranks: neither bar nor lines
        monkeypatch.setattr(sys.stdout, "isatty", lambda tty=tty: tty, raising=False)
        clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 4.0)
        session.train(other, no_progress=False, **parts(tmp_path, tiny, out=False))
        c = fit.calls.pop()
        assert c["progress"] is False and c["log"] is None and c["parallel"] is other.parallel


def test_the_ranks_must_agree_on_the_data_and_the_settings(tiny, tmp_path, capsys, monkeypatch):
    fit = FakeFit()
    monkeypatch.setattr(session, "fit", fit)
    asked = []
    job = fake_job(2, rank=0)
    job.parallel.agree = lambda value: asked.append(value) or len(asked) > 1
    p = parts(tmp_path, tiny, out=False)
    p["opts"]["seed"] = 0
    with pytest.raises(ValueError, match=exact("the ranks of this MPI job do not train the same data with the same "
                                               "settings")):
        session.train(job, no_progress=True, **p)
    assert fit.calls == [] and capsys.readouterr().out == ""
    meta = p["recorder"].meta
    assert asked == [(meta["data_sha256"], json.dumps(meta["args"], sort_keys=True))]
    clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 4.0)
    assert session.train(job, no_progress=True, **p) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0].endswith(": 32 training, 8 test samples, loss ce, batch 8, lr 0.1, 1 BLAS thread(s), 2 MPI ranks")
    assert said[1] == "test accuracy 0.7500  test loss 0.6667  (4.0 s, device numpy)"


def test_the_noise_scale_is_made_for_the_training_columns_or_carried_on(tiny, tmp_path, capsys, monkeypatch):
    fit = FakeFit()
    monkeypatch.setattr(session, "fit", fit)
    clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 4.0)
    p = parts(tmp_path, tiny, out=False, noise_scale=True)
    session.train(Job(), no_progress=True, **p)
    noise = fit.calls[-1]["noise_scale"]
    assert isinstance(noise, NoiseScale) and noise.population == 32 and p["recorder"].noise is noise
    assert capsys.readouterr().out.splitlines()[-1] == (
        "gradient noise scale B_simple: not resolved at the end (moving average), 12 over the first epoch (its "
        "batches' means), 100 over the run (every batch's means)")
    carried = NoiseScale(population=32)
    p = parts(tmp_path, tiny, out=False, noise_scale=True)
    p["recorder"].noise = carried
    clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 4.0)
    session.train(Job(), no_progress=True, **p)
    assert fit.calls[-1]["noise_scale"] is carried


def test_the_first_lines_and_the_history_so_far(tiny, tmp_path, capsys, monkeypatch):
    fit = FakeFit()
    monkeypatch.setattr(session, "fit", fit)
    clock(monkeypatch, 0.0, 1.0, 2.0)
    p = parts(tmp_path, tiny, epochs=2)
    p["state"].epoch = 1
    earlier = [{"epoch": 1, "loss": 3.0, "accuracy": 0.5, "test_loss": 3.0, "test_accuracy": 0.5, "seconds": 1.0}]
    session.train(Job(), no_progress=True, out=str(tmp_path / "run"), history=earlier, **p)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2] and json.loads(lines[0]) == earlier[0]
    said = capsys.readouterr().out.splitlines()
    assert said[0] == (f"gpumlp: {p['net']} on {tiny}: 32 training, 8 test samples, loss ce, batch 8, lr 0.1, "
                       "1 BLAS thread(s)")


def test_plot_draws_the_curves_of_a_run_with_a_folder_only(tiny, tmp_path, capsys, monkeypatch):
    fit = FakeFit()
    monkeypatch.setattr(session, "fit", fit)
    drawn = []
    from gpumlp.cli import plot
    monkeypatch.setattr(plot, "draw", lambda run, history, metrics: drawn.append((run, history, metrics)))
    clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 4.0)
    p = parts(tmp_path, tiny, plot=True)
    session.train(Job(), no_progress=True, out=str(tmp_path / "run"), **p)
    ((run, history, metrics),) = drawn
    assert run is p["recorder"].run and history == p["recorder"].history and len(history) == 3
    assert metrics == json.loads((tmp_path / "run" / "metrics.json").read_text())
    out = tmp_path / "run"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote {out / 'model.npz'}, {out / 'checkpoint.npz'} and {out / 'metrics.json'} and {out / 'curves.png'}")
    clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 4.0)
    session.train(Job(), no_progress=True, **parts(tmp_path, tiny, out=False, plot=True))
    clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 4.0)
    (tmp_path / "run" / "model.npz").unlink()
    session.train(Job(), no_progress=True, **parts(tmp_path, tiny, plot=False))
    assert len(drawn) == 1


@pytest.mark.parametrize("out, where, stop, early, said", [
    (False, None, 2, False, "interrupted after epoch 2; nothing was saved (no --out)"),
    (False, "o", 2, False, "interrupted after epoch 2; rank 0 keeps o"),
    (True, "o", 0, False, "interrupted after epoch 0; no epoch was completed, so there is nothing to resume"),
    (True, "o", 2, False, "interrupted after epoch 2; resume with: mpiexec -n 2 gpumlp train --resume o (gpumlp "
                          "evaluate and predict read its checkpoint meanwhile)"),
    (True, "o", 2, True, "interrupted after epoch 2; resume with: mpiexec -n 2 gpumlp train --resume o (gpumlp "
                         "evaluate and predict read its checkpoint meanwhile)"),
    (False, None, 2, True, "interrupted after epoch 3; nothing was saved (no --out)"),
])
def test_ctrl_c_saves_the_last_epoch_and_says_what_is_left(tiny, tmp_path, capsys, monkeypatch, out, where, stop,
                                                          early, said):
    monkeypatch.setattr(session, "fit", FakeFit(stop, KeyboardInterrupt(), early))
    clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 4.0)
    p = parts(tmp_path, tiny, out=out)
    job = fake_job(2)
    with pytest.raises(session.Interrupted, match=exact(said)):
        session.train(job, no_progress=True, out=where, **p)
    if out:
        saved = tmp_path / "run" / "checkpoint.npz"
        assert saved.exists() == (stop > 0)
        if stop:
            assert io.load_checkpoint(saved, device="cpu").state.epoch == stop
        assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("error", [TrainingDiverged, OutOfDeviceMemory])
def test_a_failed_run_names_its_last_good_epoch(tiny, tmp_path, capsys, monkeypatch, error):
    monkeypatch.setattr(session, "fit", FakeFit(2, error("the loss is nan at epoch 3")))
    clock(monkeypatch, 0.0, 1.0, 2.0)
    p = parts(tmp_path, tiny)
    with pytest.raises(error, match=exact(f"the loss is nan at epoch 3; the last good epoch, 2, is saved in "
                                          f"{tmp_path / 'run' / 'checkpoint.npz'}")):
        session.train(Job(), no_progress=True, out="o", **p)
    assert io.load_checkpoint(tmp_path / "run" / "checkpoint.npz", device="cpu").state.epoch == 2
    for out, stop in ((False, 2), (True, 0)):                  # no folder, or nothing saved: the error as it was
        e = error("the loss is nan")
        monkeypatch.setattr(session, "fit", FakeFit(stop, e))
        clock(monkeypatch, 0.0, 1.0, 2.0)
        (tmp_path / "run" / "checkpoint.npz").unlink(missing_ok=True)
        with pytest.raises(error) as got:
            session.train(Job(), no_progress=True, **parts(tmp_path, tiny, out=out))
        assert got.value is e


# -- the closing lines ------------------------------------------------------------------------------------

def closing(capsys, session_seconds, total, noise=False, **final):
    last = {"test_accuracy": 0.8125, "test_loss": 0.43216, "b_simple": None, "b_simple_start": 12.4,
            "b_simple_mean": 99.5, **final}
    metrics = {"history": [{"test_accuracy": 0.5, "test_loss": 9.0, "b_simple": 1.0, "b_simple_start": 1.0,
                            "b_simple_mean": 1.0}, last],
               "session_train_seconds": session_seconds, "train_seconds": total}
    session.summary(Job(), {"noise_scale": noise}, metrics, types.SimpleNamespace(backend=types.SimpleNamespace(
        name="cupy")))
    return capsys.readouterr().out.splitlines()


def test_summary_gives_the_score_the_time_of_the_session_and_of_the_run(capsys):
    assert closing(capsys, 2.0, 2.04) == ["test accuracy 0.8125  test loss 0.4322  (2.0 s, device cupy)"]
    assert closing(capsys, 0.0, 0.05) == ["test accuracy 0.8125  test loss 0.4322  (0.0 s in this session, 0.1 s "
                                          "in all, device cupy)"]
    assert closing(capsys, 1.25, 2.25) == ["test accuracy 0.8125  test loss 0.4322  (1.2 s in this session, 2.2 s "
                                           "in all, device cupy)"]
    assert closing(capsys, 3.0, 3.0, noise=True, b_simple=7.6) == [
        "test accuracy 0.8125  test loss 0.4322  (3.0 s, device cupy)",
        "gradient noise scale B_simple: 8 at the end (moving average), 12 over the first epoch (its batches' means), "
        "100 over the run (every batch's means)"]
    assert closing(capsys, 3.0, 3.0, noise=True, b_simple_start=None, b_simple_mean=None)[1] == (
        "gradient noise scale B_simple: not resolved at the end (moving average), not resolved over the first epoch "
        "(its batches' means), not resolved over the run (every batch's means)")


def test_the_checkpoints_hook_records_each_epoch_with_the_sessions_time(tmp_path, monkeypatch):
    seen = []

    class Rec:
        def on_epoch(self, *a):
            seen.append(a)

    net = MLP([3, 2], device="cpu", seed=0)
    opt = SGD(0.1, 0.9)
    state = TrainState(0)
    hook = session.Checkpoints(Rec(), opt, state, 40.0)
    clock(monkeypatch, 41.5)
    assert hook.after_epoch(types.SimpleNamespace(net=net), {"epoch": 1}) is None
    ((n, opt_state, record, st, seconds),) = seen
    assert n is net and opt_state == {"velocity": None} and record == {"epoch": 1} and st is state
    assert seconds == 1.5
