"""gpumlp.runs (the run folder, its lock) and gpumlp.data.prepare, without the command line."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from gpumlp import data
from gpumlp.runs import RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def holder(folder):
    """A process that locks ``folder`` and waits (printing 'locked' once it holds it)."""
    code = ("import sys, time; from gpumlp.runs import RunDir; RunDir(sys.argv[1]).lock(); "
            "print('locked', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_locked_folder_names_its_holder_and_a_killed_holder_frees_it(tmp_path):
    p = holder(tmp_path)
    try:
        with pytest.raises(ValueError) as e:
            RunDir(tmp_path).lock()
        assert str(e.value) == (f"{tmp_path} is in use by another gpumlp run (pid {p.pid}): wait for it to end, "
                                "or give another folder")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    run = RunDir(tmp_path).lock()             # the kernel dropped the dead holder's lock
    assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(ValueError, match=f"pid {os.getpid()}"):
        RunDir(tmp_path).lock()              # a second open file in this same process is refused too
    run.unlock()
    RunDir(tmp_path).lock().unlock()


def test_create_refuses_another_run_unless_forced_and_holds_the_lock(tmp_path):
    out = tmp_path / "run"
    run = RunDir(out)
    run.create()
    (out / "model.npz").write_bytes(b"m")
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="in use by another gpumlp run"):
        RunDir(out).create(force=True)
    run.unlock()
    hint = f"mpiexec -n 2 gpumlp train --resume {out}"
    with pytest.raises(ValueError, match=rf"already holds a run \(model.npz\).*{hint}"):
        RunDir(out).create(launch="mpiexec -n 2 gpumlp")
    again = RunDir(out)
    again.create(force=True)
    assert sorted(os.listdir(out)) == [".lock"]       # the replaced run's files are gone
    again.unlock()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="a file of that name exists"):
        RunDir(tmp_path / "file").create()


def test_history_prefers_the_finished_record_and_survives_a_torn_line(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(ValueError, match="holds no metrics.json or metrics.jsonl"):
        run.history()
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "loss": 2.0}\n{"epoch": 2, "lo')
    assert run.history() == [{"epoch": 1, "loss": 2.0}]
    (tmp_path / "metrics.json").write_text('{"history": [{"epoch": 1}, {"epoch": 2}]}')
    assert [h["epoch"] for h in run.history()] == [1, 2]
    (tmp_path / "metrics.json").write_text('{"histo')
    with pytest.raises(ValueError, match="metrics.json is damaged"):
        run.history()


# -- data.prepare ------------------------------------------------------------------------------------

def test_prepare_holds_out_the_split_of_the_fixed_seed_and_scales_on_training_columns():
    X, y = data.load_digits()
    for fraction in (0.2, 0.35):
        p = data.prepare(None, fraction)
        idx, classes = data.encode_labels(y)
        train, test = data.split(idx, fraction, 0)                     # SPLIT_SEED 0, as every version 2 run
        assert data.SPLIT_SEED == 0 and data.SPLIT_VERSION == 2
        assert np.array_equal(p.X_train, X[:, train]) and np.array_equal(p.y_train, idx[train])
        assert np.array_equal(p.X_test, X[:, test]) and np.array_equal(p.y_test, idx[test])
        assert np.array_equal(p.classes, classes) and p.source == "digits"
        np.testing.assert_allclose(p.scaler.mean.ravel(), X[:, train].mean(axis=1), rtol=1e-13, atol=1e-13)
        assert p.record == {"data": "digits", "data_sha256": data.fingerprint(X, y), "test_fraction": fraction,
                            "split_seed": 0, "split_version": 2}
        Xtr, ytr, Xte, yte = p.scaled()
        assert np.array_equal(Xtr, p.scaler(X[:, train])) and np.array_equal(yte, idx[test])
    assert data.prepare().X_test.shape == (64, 359)                     # the default fraction, 0.2


def test_prepare_with_a_test_file_trains_on_every_sample(tmp_path):
    X, y = data.load_digits()
    names = np.array([f"digit {d}" for d in range(10)])
    np.savez(tmp_path / "train.npz", X=X[:, :1500], y=names[y[:1500]])
    np.savez(tmp_path / "test.npz", X=X[:, 1500:], y=names[y[1500:]])
    p = data.prepare(tmp_path / "train.npz", test_file=tmp_path / "test.npz")
    assert p.X_train.shape == (64, 1500) and p.X_test.shape == (64, 297)
    assert np.array_equal(p.classes[p.y_test], names[y[1500:]])
    np.testing.assert_allclose(p.scaler.mean.ravel(), X[:, :1500].mean(axis=1), rtol=1e-13)
    assert p.record["test_fraction"] is None and p.record["test_data"] == str(tmp_path / "test.npz")
    assert p.record["test_data_sha256"] == data.fingerprint(X[:, 1500:], names[y[1500:]])
    with pytest.raises(ValueError, match="not both"):
        data.prepare(tmp_path / "train.npz", 0.2, tmp_path / "test.npz")
    np.savez(tmp_path / "narrow.npz", X=X[:60, 1500:], y=names[y[1500:]])
    with pytest.raises(ValueError, match=r"narrow.npz: X has 60 features \(rows\) but the training data"):
        data.prepare(tmp_path / "train.npz", test_file=tmp_path / "narrow.npz")
    np.savez(tmp_path / "other.npz", X=X[:, 1500:], y=np.where(y[1500:] == 3, "digit 33", names[y[1500:]]))
    with pytest.raises(ValueError, match=r"other.npz: labels \['digit 33'\] are not among"):
        data.prepare(tmp_path / "train.npz", test_file=tmp_path / "other.npz")
    far = X[:, 1500:].copy()
    far[3, 0] = 1e45
    np.savez(tmp_path / "far.npz", X=far, y=names[y[1500:]])
    with pytest.raises(ValueError, match="far.npz: some test values lie too far"):
        data.prepare(tmp_path / "train.npz", test_file=tmp_path / "far.npz", dtype="float32")
    data.prepare(tmp_path / "train.npz", test_file=tmp_path / "far.npz", dtype="float64")


def test_prepare_names_the_file_and_keeps_given_classes_and_scaling(tmp_path):
    X, y = data.load_digits()
    np.savez(tmp_path / "one.npz", X=X[:, :20], y=np.zeros(20, int))
    with pytest.raises(ValueError, match="one.npz has 1 class in y; classification needs at least 2"):
        data.prepare(tmp_path / "one.npz")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        data.prepare(None, 1.0)
    scaler = data.Standardizer(np.zeros((64, 1)), np.full((64, 1), 2.0))
    p = data.prepare(None, 0.2, classes=np.arange(12), scaler=scaler)
    assert p.scaler is scaler and len(p.classes) == 12
    with pytest.raises(ValueError, match="not among the model's classes"):
        data.prepare(None, classes=np.arange(5))


def test_a_resumed_records_time_is_the_sum_of_its_sessions(tmp_path):
    """RunDir.checkpoint hands back the training seconds saved with the checkpoint."""
    from gpumlp import cli
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "2", "--no-progress", "--out", str(out)]) == 0
    ck, meta, history, noise, seconds = RunDir(out).checkpoint(device="cpu")
    assert ck.state.epoch == 2 and [h["epoch"] for h in history] == [1, 2] and noise is None
    assert seconds == pytest.approx(ck.meta["train_seconds"]) and seconds > 0
    assert "train_seconds" not in meta and meta["args"]["test_data"] is None
    with pytest.raises(ValueError, match="there is no checkpoint.npz there"):
        RunDir(tmp_path).checkpoint()
