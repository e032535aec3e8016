"""gpumlp.runs (the run folder, its lock) and gpumlp.data.prepare, without the command line."""
import json
import os
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest

from gpumlp import backend as B
from gpumlp import data, io
from gpumlp.model import MLP
from gpumlp.noise import NoiseScale
from gpumlp.optim import SGD
from gpumlp.runs import RUN_OPTIONS, Recorder, RunDir, checked_meta
from gpumlp.state import TrainState
from gpumlp.testing import exact, strict_backend

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


# -- the lock, in-process (the test above runs a second process: slow, and out of a mutation run's reach) ------

def open_fds():
    return len(os.listdir("/proc/self/fd"))


def busy(path, pid):
    return exact(f"{path} is in use by another gpumlp run (pid {pid}): wait for it to end, or give another folder")


def test_lock_writes_the_pid_holds_the_folder_and_names_the_holder(tmp_path):
    mask = os.umask(0o022)
    try:
        run = RunDir(tmp_path)
        assert run.lock() is run
    finally:
        os.umask(mask)
    lock = tmp_path / ".lock"
    assert lock.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o644          # 0o666 less the umask
    fds = open_fds()
    assert run.lock() is run and open_fds() == fds                # a second lock() of the holder: a no-op
    other = RunDir(str(tmp_path))
    with pytest.raises(ValueError, match=busy(tmp_path, os.getpid())):
        other.lock()                                              # another open file in this process: refused
    assert open_fds() == fds                                      # the refused descriptor is closed
    # the holder's pid as the file says it: stripped, the first 32 bytes, undecodable bytes replaced
    for text, shown in ((b"  4242 \n", "4242"), (b"7" * 40, "7" * 32), (b"\xff12\n", "\ufffd12"),
                        (b"", "unknown"), (b" \n", "unknown")):
        lock.write_bytes(text)
        with pytest.raises(ValueError, match=busy(tmp_path, shown)):
            other.lock()
    assert open_fds() == fds
    run.unlock()
    run.unlock()                                                  # twice: nothing to do
    assert open_fds() == fds - 1
    assert other.lock() is other                                  # free again
    with pytest.raises(ValueError, match=busy(tmp_path, os.getpid())):
        run.lock()                                                # unlocked means not held: it must lock anew
    other.unlock()
    run.lock().unlock()
    assert lock.exists()                                          # the file stays


def test_a_stale_lock_file_of_a_dead_process_does_not_block(tmp_path):
    (tmp_path / ".lock").write_text("999999999999999\n")           # written by a run that no longer holds it
    run = RunDir(tmp_path).lock()
    assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"   # rewritten whole, not overwritten in part
    run.unlock()


def test_file_and_has_name_the_folders_files(tmp_path):
    run = RunDir(tmp_path)
    assert run.path == str(tmp_path) and isinstance(run.path, str)
    assert run.file("model.npz") == os.path.join(str(tmp_path), "model.npz")
    assert not run.has("model.npz")
    (tmp_path / "model.npz").write_bytes(b"")
    assert run.has("model.npz") and not run.has("checkpoint.npz")


# -- create -----------------------------------------------------------------------------------------------

def test_create_makes_the_folders_and_takes_the_lock(tmp_path):
    out = tmp_path / "a" / "b"
    run = RunDir(out)
    assert run.create() is None
    assert out.is_dir() and (out / ".lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(ValueError, match=busy(out, os.getpid())):
        RunDir(out).lock()
    run.unlock()
    again = RunDir(out)
    again.create()                                                # an existing, empty folder is fine
    again.unlock()


def test_create_refuses_what_is_not_a_folder_it_can_use(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=exact(f"--out {tmp_path / 'file'}: cannot create that folder "
                                               "(a file of that name exists)")):
        RunDir(tmp_path / "file").create()
    with pytest.raises(ValueError, match=exact(f"--out {tmp_path / 'file' / 'sub'}: cannot create that folder "
                                               "(Not a directory)")):
        RunDir(tmp_path / "file" / "sub").create()
    asked = []

    def access(path, mode):
        asked.append((path, mode))
        return False
    monkeypatch.setattr(os, "access", access)
    with pytest.raises(ValueError, match=exact(f"--out {tmp_path / 'ro'}: the folder is not writable")):
        RunDir(tmp_path / "ro").create()
    assert asked == [(str(tmp_path / "ro"), os.W_OK)]
    assert not (tmp_path / "ro" / ".lock").exists()               # refused before it locked anything


def test_create_refuses_a_run_in_one_line_and_lets_the_folder_go(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(b"c")
    with pytest.raises(ValueError, match=exact(f"--out {out} already holds a run (checkpoint.npz): pass --force to "
                                               f"replace it, or continue it with: gpumlp train --resume {out}")):
        RunDir(out).create()
    (out / "model.npz").write_bytes(b"m")
    with pytest.raises(ValueError, match=exact(f"--out {out} already holds a run (model.npz, checkpoint.npz): pass "
                                               f"--force to replace it, or continue it with: mpiexec -n 3 gpumlp "
                                               f"train --resume {out}")):
        RunDir(out).create(launch="mpiexec -n 3 gpumlp")
    RunDir(out).lock().unlock()                                   # the refusal released the lock
    assert (out / "model.npz").read_bytes() == b"m" and (out / "checkpoint.npz").read_bytes() == b"c"


def test_create_with_force_removes_the_old_runs_files_only(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for f in ("model.npz", "checkpoint.npz", "metrics.json", "metrics.jsonl", "curves.png", "notes.txt"):
        (out / f).write_text(f)
    run = RunDir(out)
    run.create(force=True)
    assert sorted(os.listdir(out)) == [".lock", "notes.txt"]
    with pytest.raises(ValueError, match="in use"):
        RunDir(out).lock()
    run.unlock()


def test_create_clears_the_traces_of_a_run_that_saved_nothing(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for f in ("metrics.json", "metrics.jsonl", "curves.png"):
        (out / f).write_text("{}")
    run = RunDir(out)
    run.create()
    assert sorted(os.listdir(out)) == [".lock"]
    run.unlock()


def test_is_complete_needs_the_last_epoch_and_both_final_files(tmp_path):
    run = RunDir(tmp_path)
    assert not run.is_complete(3, 3)
    (tmp_path / "model.npz").write_bytes(b"")
    assert not run.is_complete(3, 3)
    (tmp_path / "metrics.json").write_text("{}")
    assert run.is_complete(3, 3) and run.is_complete(4, 3) and not run.is_complete(2, 3)
    (tmp_path / "model.npz").unlink()
    assert not run.is_complete(3, 3)


# -- history and record ---------------------------------------------------------------------------------

def test_history_drops_only_a_torn_last_line_and_names_damage(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(ValueError, match=exact(f"{tmp_path} holds no metrics.json or metrics.jsonl (a run writes "
                                               "them with --out)")):
        run.history()
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text('{"epoch": 1}\n\n{"epoch": 2}\n  \n{"epoch": 3}\n')
    assert run.history() == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    jsonl.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n{"epoch": 4, "lo')
    assert run.history() == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    jsonl.write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')          # damage before the last line is damage
    with pytest.raises(ValueError, match=exact(f"{jsonl} is damaged: Invalid control character at: line 1 "
                                               "column 6 (char 5)")):
        run.history()
    js = tmp_path / "metrics.json"
    js.write_text('{"history": [{"epoch": 7}]}')
    assert run.history() == [{"epoch": 7}]                         # the finished record first
    js.write_text('{"args": {}}')
    with pytest.raises(ValueError, match=exact(f"{js} is damaged: 'history'")):
        run.history()
    js.write_text("[1, 2]")
    with pytest.raises(ValueError, match=exact(f"{js} is damaged: list indices must be integers or slices, not str")):
        run.history()


def test_record_reads_metrics_json_else_the_checkpoint_else_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPUMLP_DEVICE", "no such device")          # record reads on the CPU, whatever the default
    monkeypatch.setattr(B, "_auto", None)
    monkeypatch.setattr(B, "probe_cupy", lambda: (None, "no GPU in this test"))
    run = RunDir(tmp_path)
    assert run.record() == {}
    meta = write_run(tmp_path)
    ck_meta = io.load_checkpoint(tmp_path / "checkpoint.npz", device="cpu").meta
    assert run.record() == ck_meta and ck_meta["args"] == meta["args"] and ck_meta["history"][0]["epoch"] == 1
    for damaged in ("{", "5", "[1, 2, 3]"):                       # not JSON; JSON that is not a record
        (tmp_path / "metrics.json").write_text(damaged)
        assert run.record() == ck_meta
    (tmp_path / "metrics.json").write_text('{"data": "digits", "args": {"epochs": 2}}')
    assert run.record() == {"data": "digits", "args": {"epochs": 2}}
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "checkpoint.npz").write_bytes(b"not a zip")
    assert run.record() == {}
    assert capsys.readouterr().err == ""                          # no device notice: it chose the CPU itself


# -- a run's checkpoint, checked key by key ----------------------------------------------------------------

def run_meta(epochs=2, noise=False, test_data=None):
    """A whole record, as gpumlp train saves it (its history apart)."""
    args = {k: None for k in RUN_OPTIONS}
    args.update(epochs=epochs, noise_scale=noise, loss="ce", seed=0, test_data=test_data, lr=0.1)
    meta = {"loss": "ce", "margin": 1.0, "data": "digits", "data_sha256": "0123456789abcdef",
            "test_fraction": None if test_data else 0.2, "split_seed": 0, "split_version": 2, "blas_threads": 1,
            "args": args}
    if test_data:
        meta.update(test_data=test_data, test_data_sha256="fedcba9876543210")
    return meta


def write_run(path, epochs=2, noise=False, seconds_before=0.0, device="cpu"):
    """A run folder with the checkpoint of ``epochs`` epochs of a small network (written by Recorder)."""
    net = MLP([3, 4, 2], device=device, seed=0)
    meta = run_meta(epochs, noise)
    extra = {"x_mean": np.arange(3.0).reshape(3, 1), "x_scale": np.full((3, 1), 2.0), "classes": np.array([4, 9])}
    rec = Recorder(RunDir(path), None, meta, extra, NoiseScale(population=10) if noise else None, seconds_before)
    rec.start([])
    state = TrainState(0)
    for e in range(1, epochs + 1):
        state.epoch, state.step = e, 2 * e
        rec.on_epoch(net, {"velocity": None}, {"epoch": e, "loss": 1.0 / e, "test_loss": 2.0 / e,
                                               "test_accuracy": 0.25 * e, "seconds": 0.5}, state, 0.75 * e)
    rec.save_checkpoint(net)
    return meta


class FakeCheckpoint:
    def __init__(self, meta, epoch=2, arrays=("x_mean", "x_scale", "classes")):
        self.meta, self.arrays = meta, {k: np.zeros(1) for k in arrays}
        self.state = TrainState(0)
        self.state.epoch = epoch


def whole(**changes):
    m = {**run_meta(), "history": [{"epoch": 1, "loss": 1.0, "test_accuracy": 0.5},
                                   {"epoch": 2, "loss": 0.5, "test_accuracy": 0.75}],
         "noise_scale_state": None, "train_seconds": 3.5}
    for k, v in changes.items():
        if v is DROP:
            m.pop(k)
        else:
            m[k] = v
    return m


DROP = object()


def test_checked_meta_returns_the_record_without_what_a_session_adds():
    m = whole()
    meta, history, noise = checked_meta("ck.npz", FakeCheckpoint(m))
    assert meta == {k: v for k, v in m.items() if k not in ("history", "noise_scale_state", "train_seconds")}
    assert history == m["history"] and noise is None
    old = whole(args={k: v for k, v in m["args"].items() if k != "test_data"})   # before --test-data existed
    meta, _, noise = checked_meta("ck.npz", FakeCheckpoint(old))
    assert meta["args"] == {**old["args"], "test_data": None} and noise is None
    assert checked_meta("ck.npz", FakeCheckpoint(whole(blas_threads=1, history=[]), epoch=0))[1] == []
    state = NoiseScale(population=10).update(3.0, 1.0, 4).to_json()
    noisy = whole(args={**m["args"], "noise_scale": True}, noise_scale_state=state)
    _, _, noise = checked_meta("ck.npz", FakeCheckpoint(noisy))
    assert isinstance(noise, NoiseScale) and noise.to_json() == state
    file = whole(args={**m["args"], "test_data": "t.npz"}, test_fraction=None, test_data="t.npz",
                 test_data_sha256="ab")
    assert checked_meta("ck.npz", FakeCheckpoint(file))[0]["test_data"] == "t.npz"


SPLIT = ("it was written by an older gpumlp whose held-out split differs (or its split version is missing); "
         "start the run again")
ARGS = {k: None for k in RUN_OPTIONS}


@pytest.mark.parametrize("changes, what", [
    ({"split_version": DROP}, SPLIT),
    ({"split_version": 1}, SPLIT),
    ({"args": DROP}, "its run settings are incomplete"),
    ({"args": list(RUN_OPTIONS)}, "its run settings are incomplete"),
    ({"args": {k: None for k in RUN_OPTIONS if k != "seed"}}, "its run settings are incomplete"),
    ({"data": DROP}, "it does not record its data"),
    ({"data": 3}, "it does not record its data"),
    ({"data_sha256": DROP}, "it does not record its data"),
    ({"test_fraction": DROP}, "its test fraction is invalid"),
    ({"test_fraction": 0.0}, "its test fraction is invalid"),
    ({"test_fraction": 1.0}, "its test fraction is invalid"),
    ({"test_fraction": 1.5}, "its test fraction is invalid"),
    ({"args": {**ARGS, "test_data": "t.npz"}}, "it does not record its test data"),
    ({"args": {**ARGS, "test_data": "t.npz"}, "test_data": "t.npz"}, "it does not record its test data"),
    ({"args": {**ARGS, "test_data": "t.npz"}, "test_data_sha256": "ab"}, "it does not record its test data"),
    ({"blas_threads": 0}, "its BLAS thread count is invalid"),
    ({"blas_threads": 2.0}, "its BLAS thread count is invalid"),
    ({"blas_threads": DROP}, "its BLAS thread count is invalid"),
    ({"history": DROP}, "its history is invalid"),
    ({"history": {"1": {}}}, "its history is invalid"),
    ({"history": [1, 2]}, "its history is invalid"),
    ({"history": [{"epoch": "1", "loss": 1, "test_accuracy": 1}, {"epoch": 2, "loss": 1, "test_accuracy": 1}]},
     "its history is invalid"),
    ({"history": [{"loss": 1, "test_accuracy": 1}, {"epoch": 2, "loss": 1, "test_accuracy": 1}]},
     "its history is invalid"),
    ({"history": [{"epoch": 1, "test_accuracy": 1}, {"epoch": 2, "loss": 1, "test_accuracy": 1}]},
     "its history is invalid"),
    ({"history": [{"epoch": 1, "loss": 1}, {"epoch": 2, "loss": 1, "test_accuracy": 1}]},
     "its history is invalid"),
    ({"history": [{"epoch": 1, "loss": 1, "test_accuracy": 1}]}, "its history does not match its epoch"),
    ({"history": [{"epoch": 2, "loss": 1, "test_accuracy": 1}, {"epoch": 3, "loss": 1, "test_accuracy": 1}]},
     "its history does not match its epoch"),
    ({"args": {**ARGS, "noise_scale": True}}, "the noise scale's state is damaged (KeyError: 'population')"),
    ({"args": {**ARGS, "noise_scale": True}, "noise_scale_state": {"population": 10}},
     "the noise scale's state is damaged (KeyError: 'decay')"),
])
def test_checked_meta_names_each_kind_of_damage(changes, what):
    m = whole(**changes)
    if isinstance(m.get("args"), dict) and m["args"].get("test_data") and "test_fraction" not in changes:
        m["test_fraction"] = None
    with pytest.raises(ValueError, match=exact(f"ck.npz is damaged: {what}")):
        checked_meta("ck.npz", FakeCheckpoint(m))


def test_checked_meta_names_the_missing_arrays():
    with pytest.raises(ValueError, match=exact("ck.npz is damaged: it lacks ['classes', 'x_mean', 'x_scale']")):
        checked_meta("ck.npz", FakeCheckpoint(whole(), arrays=()))
    with pytest.raises(ValueError, match=exact("ck.npz is damaged: it lacks ['x_scale']")):
        checked_meta("ck.npz", FakeCheckpoint(whole(), arrays=("x_mean", "classes")))


def test_checkpoint_hands_back_the_checked_run_on_the_device_asked(tmp_path):
    with pytest.raises(ValueError, match=exact(f"--resume {tmp_path}: there is no checkpoint.npz there (a run saves "
                                               "one with --out)")):
        RunDir(tmp_path).checkpoint()
    meta = write_run(tmp_path, epochs=3, noise=True, seconds_before=10.0)
    strict = strict_backend()
    ck, got, history, noise, seconds = RunDir(tmp_path).checkpoint(device=strict)
    assert ck.net.backend is strict and ck.state.epoch == 3
    assert got == {**meta, "args": meta["args"]} and [h["epoch"] for h in history] == [1, 2, 3]
    assert isinstance(noise, NoiseScale) and noise.population == 10
    assert seconds == 12.25 and type(seconds) is float            # the sessions before, and this one's 2.25 s
    assert RunDir(tmp_path).checkpoint()[0].net.backend is B.get_backend("auto")       # the default device
    ck_path = tmp_path / "checkpoint.npz"
    rewrite_meta(ck_path, split_version=1)
    with pytest.raises(ValueError, match=exact(f"{ck_path} is damaged: {SPLIT}")):
        RunDir(tmp_path).checkpoint(device="cpu")
    (tmp_path / "checkpoint.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ValueError, match=r"checkpoint.npz is damaged, it cannot be read as a gpumlp checkpoint"):
        RunDir(tmp_path).checkpoint(device="cpu")


def rewrite_meta(path, **changes):
    """The checkpoint at ``path`` written again with its meta changed (None: the key dropped)."""
    ck = io.load_checkpoint(path, device="cpu")
    meta = {k: v for k, v in {**ck.meta, **changes}.items() if v is not None}
    io.save_checkpoint(path, ck.net, ck.optimizer_state, ck.state, meta, **ck.arrays)


def test_an_older_checkpoints_time_is_the_sum_of_its_epochs(tmp_path):
    write_run(tmp_path, epochs=3)
    ck = tmp_path / "checkpoint.npz"
    history = io.load_checkpoint(ck, device="cpu").meta["history"]
    history[0]["seconds"], history[1]["seconds"] = None, 1.25     # gpumlp <= 0.4: no train_seconds
    rewrite_meta(ck, train_seconds=None, history=history)
    assert RunDir(tmp_path).checkpoint(device="cpu")[4] == 1.75
    rewrite_meta(ck, train_seconds="3 s")                         # not a number: the same sum
    assert RunDir(tmp_path).checkpoint(device="cpu")[4] == 1.75
    rewrite_meta(ck, train_seconds=4)
    seconds = RunDir(tmp_path).checkpoint(device="cpu")[4]
    assert seconds == 4.0 and type(seconds) is float


def test_classifier_takes_model_npz_else_the_checkpoint_with_a_note(tmp_path):
    with pytest.raises(ValueError, match=exact(f"cannot read {tmp_path / 'model.npz'}: there is no such file")):
        RunDir(tmp_path).classifier(device="cpu")
    write_run(tmp_path, epochs=2)
    strict = strict_backend()
    clf, note = RunDir(tmp_path).classifier(device=strict)
    assert note == (f"{tmp_path} holds no model.npz (its run did not finish): using checkpoint.npz, "
                    "as of epoch 2")
    ck = io.load_checkpoint(tmp_path / "checkpoint.npz", device="cpu")
    assert clf.net.backend is strict and np.array_equal(strict.to_numpy(clf.net.params), ck.net.params)
    assert clf.meta == {k: v for k, v in ck.meta.items() if k not in ("args", "history", "noise_scale_state")}
    assert clf.classes.tolist() == [4, 9] and clf.scaler.scale.ravel().tolist() == [2.0, 2.0, 2.0]
    ck = io.load_checkpoint(tmp_path / "checkpoint.npz", device="cpu")
    io.save_checkpoint(tmp_path / "checkpoint.npz", ck.net, ck.optimizer_state, ck.state, ck.meta,
                       **{**ck.arrays, "x_scale": np.zeros((3, 1))})
    with pytest.raises(ValueError, match=exact(f"{tmp_path / 'checkpoint.npz'} is damaged: its x_scale has values "
                                               "<= 0")):
        RunDir(tmp_path).classifier(device="cpu")
    np.savez(tmp_path / "checkpoint.npz", x=np.zeros(1))       # not a checkpoint: named as the file it reads
    with pytest.raises(ValueError, match=exact(f"{tmp_path / 'checkpoint.npz'} is not a gpumlp checkpoint "
                                               "(it has no 'format' entry)")):
        RunDir(tmp_path).classifier(device="cpu")
    net = MLP([3, 2], device="cpu", seed=1)
    io.save(tmp_path / "model.npz", net, {"loss": "ce"}, x_mean=np.zeros((3, 1)), x_scale=np.ones((3, 1)),
            classes=np.array(["a", "b"]))
    clf, note = RunDir(tmp_path).classifier(device=strict)        # model.npz wins over a checkpoint
    assert note is None and clf.net.backend is strict and clf.classes.tolist() == ["a", "b"]
    assert RunDir(tmp_path).classifier()[0].net.backend is B.get_backend("auto")       # the default device
    assert clf.meta == {"loss": "ce"}


# -- Recorder ------------------------------------------------------------------------------------------

def record(e):
    return {"epoch": e, "loss": 1.0 / e, "accuracy": 0.5, "test_loss": 2.0 / e, "test_accuracy": 0.1 * e,
            "seconds": 0.25}


def recorder_parts():
    net = MLP([3, 4, 2], device="cpu", seed=0)
    extra = {"x_mean": np.arange(3.0).reshape(3, 1), "x_scale": np.full((3, 1), 2.0), "classes": np.array([4, 9])}
    return net, run_meta(4), extra


def test_a_recorder_without_a_folder_keeps_the_history_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net, meta, extra = recorder_parts()
    rec = Recorder(None, 1, meta, extra)
    assert (rec.snapshot, rec.saved_epoch, rec.history, rec.seconds_before) == (None, None, [], 0.0)
    rec.start([record(1)])
    state = TrainState(0)
    state.epoch = 2
    rec.on_epoch(net, {"velocity": None}, record(2), state, 1.5)
    assert rec.history == [record(1), record(2)] and rec.snapshot is None
    rec.save_checkpoint(net)
    metrics = rec.finish(net, 2.5)
    assert metrics["train_seconds"] == 2.5 and metrics["session_train_seconds"] == 2.5
    assert os.listdir(tmp_path) == [] and rec.saved_epoch is None


def test_a_recorder_writes_lines_snapshots_checkpoints_and_the_finished_run(tmp_path):
    net, meta, extra = recorder_parts()
    run = RunDir(tmp_path)
    noise = NoiseScale(population=10)
    rec = Recorder(run, 2, meta, extra, noise, seconds_before=10.0)
    rec.save_checkpoint(net)                                      # no epoch yet: nothing to save
    assert os.listdir(tmp_path) == []
    rec.start([record(7), record(8)])                             # rewritten whole, a line each
    assert (tmp_path / "metrics.jsonl").read_text() == json.dumps(record(7)) + "\n" + json.dumps(record(8)) + "\n"
    first = [record(1)]
    rec.start(first)
    first.append("later")                                         # the recorder keeps its own list
    assert (tmp_path / "metrics.jsonl").read_text() == json.dumps(record(1)) + "\n" and rec.history == [record(1)]
    optimizer = SGD(0.1, 0.9)
    state = TrainState(0)
    state.epoch, state.step = 2, 8
    noise.update(3.0, 1.0, 4)
    rec.on_epoch(net, optimizer.state_dict(net), record(2), state, 1.5)     # epoch 2 of every 2: saved
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(json.dumps(record(e)) + "\n" for e in (1, 2))
    ck = io.load_checkpoint(tmp_path / "checkpoint.npz", device="cpu")
    assert ck.state.epoch == 2 and ck.state.step == 8 and rec.saved_epoch == 2
    assert ck.meta == {**meta, "history": [record(1), record(2)], "noise_scale_state": noise.to_json(),
                       "train_seconds": 11.5}
    assert all(np.array_equal(ck.arrays[k], v) for k, v in extra.items()) and set(ck.arrays) == set(extra)
    assert ck.optimizer_state == {"velocity": None}
    epoch2 = net.backend.to_numpy(net.params).copy()
    assert np.array_equal(ck.net.params, epoch2)

    state.epoch, state.step = 3, 12
    rec.on_epoch(net, {"velocity": np.ones(net.params.shape[0], np.float32)}, record(3), state, 2.0)
    assert io.load_checkpoint(tmp_path / "checkpoint.npz", device="cpu").state.epoch == 2   # 3 is not of every 2
    snapshot = rec.snapshot
    assert snapshot[0] == 3 and snapshot[4] == noise.to_json() and snapshot[5] == 12.0
    assert snapshot[3] is not state and snapshot[3].to_json() == state.to_json()
    net.params[...] = 0                                           # the next epoch goes on changing them ...
    state.epoch = 4
    noise.update(5.0, 1.0, 4)
    rec.save_checkpoint(net)                                      # ... the checkpoint is the epoch-3 boundary's
    ck = io.load_checkpoint(tmp_path / "checkpoint.npz", device="cpu")
    assert ck.state.epoch == 3 and ck.state.step == 12 and np.array_equal(ck.net.params, epoch2)
    assert ck.meta["history"] == [record(1), record(2), record(3)] and ck.meta["train_seconds"] == 12.0
    assert ck.optimizer_state["velocity"].tolist() == [1.0] * net.params.shape[0]
    assert ck.meta["noise_scale_state"] == snapshot[4] != noise.to_json()
    (tmp_path / "checkpoint.npz").unlink()
    rec.save_checkpoint(net)                                      # epoch 3 is saved already: nothing written
    assert not (tmp_path / "checkpoint.npz").exists() and rec.saved_epoch == 3

    net.params[...] = net.backend.asarray(epoch2, net.params.dtype)
    metrics = rec.finish(net, 3.0)
    model_meta = {k: v for k, v in meta.items() if k != "args"}
    assert metrics == {"test_accuracy": record(3)["test_accuracy"], "test_loss": record(3)["test_loss"],
                       "train_seconds": 13.0, "session_train_seconds": 3.0, "device": "numpy",
                       "history": [record(1), record(2), record(3)], "args": meta["args"], **model_meta}
    assert (tmp_path / "metrics.json").read_text() == json.dumps(metrics, indent=2)
    loaded, got_meta, arrays = io.load(tmp_path / "model.npz", device="cpu")
    assert got_meta == model_meta and np.array_equal(loaded.params, epoch2)
    assert set(arrays) == {"x_mean", "x_scale", "classes"} and arrays["classes"].tolist() == [4, 9]
    assert np.array_equal(arrays["x_mean"], extra["x_mean"]) and np.array_equal(arrays["x_scale"], extra["x_scale"])


def test_a_recorder_saves_every_k_epochs_only_when_asked(tmp_path):
    net, meta, extra = recorder_parts()
    for every, saved in ((None, []), (1, [1, 2, 3]), (3, [3])):
        folder = tmp_path / str(every)
        folder.mkdir()
        rec = Recorder(RunDir(folder), every, meta, extra)
        rec.start([])
        state = TrainState(0)
        epochs = []
        for e in (1, 2, 3):
            state.epoch = e
            rec.on_epoch(net, {"velocity": None}, record(e), state, 0.5)
            if (folder / "checkpoint.npz").exists():
                epochs.append(io.load_checkpoint(folder / "checkpoint.npz", device="cpu").state.epoch)
                (folder / "checkpoint.npz").unlink()
        assert epochs == saved, every
