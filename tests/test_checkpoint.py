"""Checkpoints and exact resume, interrupts, damaged files, and the train command's
everyday behaviour (options checked first, --out kept safe, exit codes, pipes)."""
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import gpumlp
from gpumlp import cli, io
from gpumlp.testing import strict_backend
from gpumlp.train import TrainState, fit

# slow enough per epoch (~0.3 s) to be killed mid-run, fast enough for CI
RUN = ["--device", "cpu", "--hidden", "512,512", "--batch-size", "8", "--lr", "0.01", "--dtype", "float64",
       "--threads", "1", "--no-progress"]


def gpumlp_cmd(*args, **kw):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "GPUMLP_DEVICE": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "gpumlp", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def finish(p, timeout=300):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def wait_for_lines(path, n, p, timeout=120):
    """Poll metrics.jsonl until it has n lines (the run must still be going)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        assert p.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.01)
    raise AssertionError("the run wrote no progress")


def params_of(folder):
    with np.load(folder / "model.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k[0] in "Wb"}


def epochs_of(folder):
    return [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_killed_run_resumes_to_bit_identical_parameters(tmp_path):
    """SIGKILL a real training process after its 4th epoch (checkpoints every 3), resume
    it, and compare with the same run left alone: every parameter bit for bit, and each
    epoch once in metrics.jsonl, with the same losses."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    rc, out, err = finish(gpumlp_cmd("train", *RUN, "--epochs", 6, "--checkpoint-every", 3, "--out", whole))
    assert rc == 0, err
    p = gpumlp_cmd("train", *RUN, "--epochs", 6, "--checkpoint-every", 3, "--out", cut)
    wait_for_lines(cut / "metrics.jsonl", 4, p)
    p.send_signal(signal.SIGKILL)
    finish(p)
    assert p.returncode == -signal.SIGKILL and not (cut / "model.npz").exists()
    assert io.load_checkpoint(cut / "checkpoint.npz", device="cpu").state.epoch == 3
    assert 4 <= len(epochs_of(cut)) < 6                       # written after the checkpoint: dropped on resume
    rc, out, err = finish(gpumlp_cmd("train", "--resume", cut, "--no-progress"))
    assert rc == 0, err
    assert "resuming" in out and "after epoch 3 of 6" in out
    a, b = params_of(whole), params_of(cut)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert epochs_of(cut) == [1, 2, 3, 4, 5, 6]
    la, lb = (json.loads((f / "metrics.json").read_text())["history"] for f in (whole, cut))
    assert [h["loss"] for h in la] == [h["loss"] for h in lb]
    assert [h["test_accuracy"] for h in la] == [h["test_accuracy"] for h in lb]
    assert list(tmp_path.glob("*/.tmp-*")) == []


def test_ctrl_c_keeps_the_last_epoch_and_exits_130(tmp_path):
    out = tmp_path / "run"
    p = gpumlp_cmd("train", *RUN, "--epochs", 30, "--out", out)
    wait_for_lines(out / "metrics.jsonl", 2, p)
    p.send_signal(signal.SIGINT)
    rc, stdout, err = finish(p)
    assert rc == 130
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    done = int(err.split("after epoch ")[1].split(";")[0])
    assert f"resume with: gpumlp train --resume {out}" in err
    ck = io.load_checkpoint(out / "checkpoint.npz", device="cpu")
    assert ck.state.epoch == done >= 1 and [h["epoch"] for h in ck.meta["history"]] == list(range(1, done + 1))
    assert ck.optimizer_state["velocity"] is not None                  # momentum 0.9: its buffers are kept


def test_resume_refuses_new_settings_and_a_missing_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "2", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--lr", "0.5"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path)]) == 2
    assert "no checkpoint.npz" in capsys.readouterr().err
    # a finished run resumes to nothing more, and says so with its final score
    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert "after epoch 2 of 2" in capsys.readouterr().out


def test_fit_hands_over_its_state_and_a_resumed_fit_continues_exactly():
    """The library level: fit to epoch 3, keep the parameters, the optimizer's state and
    the TrainState (through their saved forms), go on to 6; equal to 6 in one go."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 50)), rng.integers(0, 3, 50)
    quiet = dict(progress=False, log=None, batch_size=7)
    one = gpumlp.MLP([6, 9, 3], dtype="float64", device="cpu", seed=1)
    fit(one, X, y, gpumlp.SGD(0.1, 0.9, 1e-3), epochs=6, seed=5, **quiet)

    first = gpumlp.MLP([6, 9, 3], dtype="float64", device="cpu", seed=1)
    opt, state, seen = gpumlp.SGD(0.1, 0.9, 1e-3), TrainState(5), []
    fit(first, X, y, opt, epochs=3, state=state, on_epoch=lambda r, s: seen.append((r["epoch"], s.epoch, s.step)),
        **quiet)
    assert seen == [(1, 1, 8), (2, 2, 16), (3, 3, 24)]
    saved = (gpumlp.to_numpy(first.params), opt.get_state(first), json.loads(json.dumps(state.to_json())))
    second = gpumlp.MLP([6, 9, 3], dtype="float64", device="cpu", seed=99)
    second.params[...] = saved[0]
    opt2 = gpumlp.SGD(0.1, 0.9, 1e-3)
    opt2.set_state(second, saved[1])
    history = fit(second, X, y, opt2, epochs=6, state=TrainState.from_json(saved[2]), **quiet)
    assert [h["epoch"] for h in history] == [4, 5, 6]
    assert np.array_equal(gpumlp.to_numpy(second.params), gpumlp.to_numpy(one.params))


def test_optimizer_state_is_checked():
    net = gpumlp.MLP([3, 2], device="cpu", seed=0)
    with pytest.raises(ValueError, match="velocity"):
        gpumlp.SGD(0.1, 0.9).set_state(net, {"velocity": np.zeros(5)})
    with pytest.raises(ValueError, match="momentum 0"):
        gpumlp.SGD(0.1).set_state(net, {"velocity": np.zeros(8)})
    assert gpumlp.SGD(0.1, 0.9).get_state(net) == {"velocity": None}        # before its first step


def test_a_checkpoint_loads_on_another_device(tmp_path):
    """Checkpoints hold host arrays: one written from a NumPy model loads onto the strict
    array-API backend's non-CPU device (as a GPU's loads on a CPU, and the reverse)."""
    net = gpumlp.MLP([4, 5, 3], device="cpu", seed=0)
    state = TrainState(3)
    io.save_checkpoint(tmp_path / "c.npz", net, {"velocity": np.arange(net.params.shape[0], dtype=np.float32)},
                       state, {"note": 1})
    ck = io.load_checkpoint(tmp_path / "c.npz", device=strict_backend())
    assert np.array_equal(gpumlp.to_numpy(ck.net.params), gpumlp.to_numpy(net.params))
    assert ck.meta == {"note": 1} and ck.state.rng.integers(1 << 30) == np.random.default_rng(3).integers(1 << 30)
    opt = gpumlp.SGD(0.1, 0.9)
    opt.set_state(ck.net, ck.optimizer_state)
    assert np.array_equal(opt.get_state(ck.net)["velocity"], ck.optimizer_state["velocity"])


# -- damaged files ------------------------------------------------------------------------------

def _variants(good, rng, flips=150, cuts=40):
    """(name, bytes) of damaged copies of ``good``: single bit flips, truncations, zeroed runs."""
    n = len(good)
    for pos in rng.choice(n, size=flips, replace=False):
        b = bytearray(good)
        b[pos] ^= 1 << int(rng.integers(8))
        yield f"bit flip at byte {pos}", bytes(b)
    for cut in sorted(set(rng.integers(0, n, size=cuts).tolist()) | {0, 1, 4, n - 1}):
        yield f"truncated to {cut} bytes", good[:cut]
    for start in rng.choice(n - 64, size=10, replace=False):
        b = bytearray(good)
        b[start:start + 64] = bytes(64)
        yield f"64 zero bytes at {start}", bytes(b)


@pytest.mark.parametrize("kind", ["checkpoint", "model"])
def test_damaged_files_give_one_clear_error_or_the_same_numbers(tmp_path, kind):
    """About 200 damaged copies of a checkpoint and of a model: each one either loads with
    exactly the original numbers (the damage hit bytes no reader depends on, such as a zip
    timestamp) or raises one ValueError that names the file; never anything else."""
    net = gpumlp.MLP([5, 6, 3], device="cpu", seed=0)
    good_path = tmp_path / "good.npz"
    if kind == "checkpoint":
        io.save_checkpoint(good_path, net, {"velocity": None}, TrainState(0), {"a": 1}, x_mean=np.zeros(5))
        load = lambda p: io.load_checkpoint(p, device="cpu").net        # noqa: E731
    else:
        io.save(good_path, net, {"a": 1}, x_mean=np.zeros(5))
        load = lambda p: io.load(p, device="cpu")[0]                    # noqa: E731
    good = good_path.read_bytes()
    tried = failed = 0
    for name, blob in _variants(good, np.random.default_rng(0)):
        path = tmp_path / "bad.npz"
        path.write_bytes(blob)
        tried += 1
        try:
            back = load(path)
        except ValueError as e:
            failed += 1
            assert str(path) in str(e) and "\n" not in str(e), (name, str(e))
            continue
        assert np.array_equal(gpumlp.to_numpy(back.params), gpumlp.to_numpy(net.params)), name
    assert tried >= 200 and failed >= 0.8 * tried


def test_wrong_version_shape_and_format_are_named(tmp_path):
    net = gpumlp.MLP([5, 6, 3], device="cpu", seed=0)
    io.save_checkpoint(tmp_path / "c.npz", net, {"velocity": None}, TrainState(0))
    with np.load(tmp_path / "c.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "v3.npz", **{**arrays, "format": np.array("gpumlp-checkpoint/3")})
    np.savez(tmp_path / "shape.npz", **{**arrays, "params": arrays["params"][:-1]})
    np.savez(tmp_path / "nan.npz", **{**arrays, "params": arrays["params"] * np.nan})
    np.savez(tmp_path / "state.npz", **{**arrays, "state": np.array("{not json")})
    (tmp_path / "text.npz").write_text("hello")
    (tmp_path / "empty.npz").write_bytes(b"")
    for name, match in [("v3", "of this version"), ("shape", "must be 57 finite floats"), ("nan", "finite"),
                        ("state", "'state' entry cannot be read"), ("text", "not a .npz"), ("empty", "empty"),
                        ("missing", "cannot read")]:
        with pytest.raises(ValueError, match=match) as e:
            io.load_checkpoint(tmp_path / f"{name}.npz", device="cpu")
        assert str(tmp_path / f"{name}.npz") in str(e.value)
    with pytest.raises(ValueError, match="not a gpumlp model"):
        io.load(tmp_path / "c.npz")                     # a checkpoint is not a model file


def test_a_gpumlp_04_checkpoint_loads_with_its_velocity_mapped(tmp_path):
    """Format /1 kept SGD's velocity as the top-level array "velocity"; /2 keeps every named
    entry of the optimizer's state_dict.  A /1 file maps one to one and loads, and the
    resumed SGD steps exactly as one given the same state."""
    net = gpumlp.MLP([5, 6, 3], dtype="float64", device="cpu", seed=0)
    v = np.linspace(-1, 1, net.params.shape[0])
    io.save_checkpoint(tmp_path / "new.npz", net, {"velocity": v}, TrainState(0), {"a": 1}, x_mean=np.ones(5))
    with np.load(tmp_path / "new.npz") as z:
        arrays = {k: z[k] for k in z.files}
    assert sorted(k for k in arrays if k.startswith("optimizer")) == ["optimizer", "optimizer.velocity"]
    old = {k: a for k, a in arrays.items() if not k.startswith("optimizer")}
    np.savez(tmp_path / "old.npz", **{**old, "format": np.array("gpumlp-checkpoint/1"), "velocity": v})
    for name in ("new", "old"):
        ck = io.load_checkpoint(tmp_path / f"{name}.npz", device="cpu")
        assert set(ck.optimizer_state) == {"velocity"} and np.array_equal(ck.optimizer_state["velocity"], v)
        assert set(ck.arrays) == {"x_mean"} and ck.meta == {"a": 1}
    np.savez(tmp_path / "lost.npz", **{k: a for k, a in arrays.items() if k != "optimizer.velocity"})
    with pytest.raises(ValueError, match=r"lacks the optimizer's arrays \['velocity'\]"):
        io.load_checkpoint(tmp_path / "lost.npz", device="cpu")
    io.save_checkpoint(tmp_path / "none.npz", net, {"velocity": None, "t": 3}, TrainState(0))
    assert io.load_checkpoint(tmp_path / "none.npz", device="cpu").optimizer_state == {"velocity": None, "t": 3}


def test_the_cli_turns_damaged_files_into_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    for name in ("model.npz", "checkpoint.npz"):
        blob = (out / name).read_bytes()
        (out / name).write_bytes(blob[: len(blob) // 2])
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(out / "model.npz") in err and "damaged" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out / "checkpoint.npz") in err and len(err.strip().splitlines()) == 1
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as z:
        z.writestr("X.npy", b"\x93NUMPY garbage")
        z.writestr("y.npy", b"")
    assert cli.main(["train", "--device", "cpu", "--data", str(tmp_path / "bad.npz")]) == 2
    assert "bad.npz" in capsys.readouterr().err


# -- the command's everyday behaviour -------------------------------------------------------------

def test_options_are_checked_before_anything_is_printed_or_created(tmp_path, capsys):
    out = tmp_path / "never"
    for bad in (["--epochs", "0"], ["--batch-size", "-1"], ["--momentum", "5"], ["--lr", "nan"],
                ["--test-fraction", "1"], ["--weight-decay", "-1"]):
        with pytest.raises(SystemExit) as e:
            cli.main(["train", "--device", "cpu", "--out", str(out), *bad])
        assert e.value.code == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "error" in captured.err
    assert cli.main(["train", "--device", "cpu", "--activation", "swish", "--out", str(out)]) == 2
    assert capsys.readouterr().out == "" and not out.exists()


def test_out_keeps_another_run_unless_forced_and_files_get_the_umask(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    before = (out / "model.npz").read_bytes()
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--seed", "3", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and (out / "model.npz").read_bytes() == before
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--seed", "3", "--no-progress", "--force",
                     "--out", str(out)]) == 0
    assert (out / "model.npz").read_bytes() != before
    mask = os.umask(0)
    os.umask(mask)
    for name in ("model.npz", "checkpoint.npz", "metrics.json", "metrics.jsonl"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    assert epochs_of(out) == [1]


def test_version_help_and_a_closed_pipe():
    env = {**os.environ, "GPUMLP_DEVICE": "cpu"}
    v = subprocess.run([sys.executable, "-m", "gpumlp", "--version"], capture_output=True, text=True, env=env)
    assert v.returncode == 0 and v.stdout.strip() == f"gpumlp {gpumlp.__version__}"
    h = subprocess.run([sys.executable, "-m", "gpumlp", "train", "--help"], capture_output=True, text=True, env=env)
    assert "(default: 30)" in h.stdout and "(default: 0.9)" in h.stdout and "``" not in h.stdout
    pipe = subprocess.run(f"{sys.executable} -m gpumlp example | head -1", shell=True, capture_output=True,
                          text=True, env=env)
    assert pipe.stdout.count("\n") == 1 and pipe.stderr == ""


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    """A run whose loss turns NaN in epoch 3 stops with the step named, and DIR keeps
    epoch 2's checkpoint to go back to."""
    from gpumlp.engine import Trainer
    real = Trainer.epoch

    def epoch(self, data, batch_size, order=None, **kw):
        if kw["number"] == 3:
            self.net.params[...] = np.nan                # as a too-large step would
        return real(self, data, batch_size, order, **kw)
    monkeypatch.setattr(Trainer, "epoch", epoch)
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "5", "--no-progress", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "step" in err and "epoch 3" in err and "the last good epoch, 2, is saved" in err
    ck = io.load_checkpoint(out / "checkpoint.npz", device="cpu")
    assert ck.state.epoch == 2 and np.isfinite(gpumlp.to_numpy(ck.net.params)).all()


# -- inputs that used to go wrong quietly ----------------------------------------------------------

def test_the_split_does_not_depend_on_how_labels_are_spelled():
    from gpumlp import data
    rng = np.random.default_rng(0)
    y = rng.integers(0, 12, 300)
    as_int = data.split(data.encode_labels(y)[0], 0.25, 0)
    as_str = data.split(data.encode_labels(y.astype(str))[0], 0.25, 0)     # "10" sorts before "2"
    assert all(np.array_equal(a, b) for a, b in zip(as_int, as_str, strict=True))
    train, test = as_int
    for c in range(12):                                    # still stratified
        assert abs(np.sum(y[test] == c) - 0.25 * np.sum(y == c)) <= 0.5


def test_data_too_large_to_scale_is_refused(tmp_path, capsys):
    from gpumlp import data
    X, y = data.load_digits()
    np.savez(tmp_path / "huge.npz", X=X * 1e300, y=y)
    assert cli.main(["train", "--device", "cpu", "--data", str(tmp_path / "huge.npz"), "--no-progress"]) == 2
    assert "too large to centre and scale" in capsys.readouterr().err
    np.savez(tmp_path / "none.npz", X=np.zeros((4, 0)), y=np.zeros(0, int))
    assert cli.main(["train", "--device", "cpu", "--data", str(tmp_path / "none.npz")]) == 2
    assert "holds no samples" in capsys.readouterr().err


def test_a_model_file_with_misfit_scaling_is_blamed(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    net, meta, arrays = io.load(out / "model.npz", device="cpu")
    io.save(out / "model.npz", net, meta, **{**arrays, "x_mean": np.zeros(5)})
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "model.npz is damaged: its x_mean must be 64 finite numbers" in err


def test_evaluate_says_to_pass_data_when_the_training_file_moved(tmp_path, capsys):
    from gpumlp import data
    X, y = data.load_digits()
    np.savez(tmp_path / "d.npz", X=X[:, :400], y=y[:400])
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--data", str(tmp_path / "d.npz"),
                     "--out", str(out)]) == 0
    (tmp_path / "d.npz").rename(tmp_path / "moved.npz")
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--device", "cpu"]) == 2
    assert "pass the data with --data" in capsys.readouterr().err


def test_mse_suggests_a_reshape_only_where_it_fits():
    Y = np.zeros((3, 4))
    with pytest.raises(ValueError) as e:
        gpumlp.losses.mse(Y, np.zeros(4))
    assert "reshape" not in str(e.value)
    with pytest.raises(ValueError, match=r"T.reshape\(1, -1\)"):
        gpumlp.losses.mse(np.zeros((1, 4)), np.zeros(4))


# -- found by review --------------------------------------------------------------------------------

def _interrupt_at(monkeypatch, epoch_number):
    from gpumlp.engine import Trainer
    real = Trainer.epoch

    def epoch(self, data, batch_size, order=None, **kw):
        if kw["number"] == epoch_number:
            raise KeyboardInterrupt
        return real(self, data, batch_size, order, **kw)
    monkeypatch.setattr(Trainer, "epoch", epoch)


def test_a_resumed_noise_scale_run_reports_what_the_whole_run_does(tmp_path, capsys, monkeypatch):
    args = ["train", "--device", "cpu", "--epochs", "4", "--checkpoint-every", "2", "--noise-scale", "--no-progress"]
    assert cli.main([*args, "--out", str(tmp_path / "whole")]) == 0
    with monkeypatch.context() as m:
        _interrupt_at(m, 4)
        assert cli.main([*args, "--out", str(tmp_path / "cut")]) == 130
    assert cli.main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text())["history"] for d in ("whole", "cut"))
    for key in ("loss", "b_simple", "b_simple_mean", "b_simple_start", "test_accuracy"):
        assert [h[key] for h in a] == [h[key] for h in b], key


def test_a_closed_pipe_during_training_still_saves_the_run(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run(f"{sys.executable} -m gpumlp train --device cpu --epochs 5 --no-progress --out {out} | head -1",
                       shell=True, capture_output=True, text=True)
    assert p.stderr == "" and p.stdout.count("\n") == 1
    assert (out / "model.npz").exists() and epochs_of(out) == [1, 2, 3, 4, 5]


def test_write_failures_are_one_line(tmp_path, capsys, monkeypatch):
    def full(path, write, mode="wb"):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(io, "atomic_write", full)
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "cannot read or write" in err
    monkeypatch.undo()
    out = tmp_path / "ok"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    from gpumlp import data as datasets
    X, y = datasets.load_digits()
    np.savez(tmp_path / "x.npz", X=X[:, :5])
    for target in (tmp_path / "missing" / "p.csv", tmp_path):
        assert cli.main(["predict", str(out), "--data", str(tmp_path / "x.npz"), "--device", "cpu",
                         "--out", str(target)]) == 2
        assert "give a file in an existing folder" in capsys.readouterr().err


def test_files_of_an_older_split_are_refused_where_it_matters(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    ck = io.load_checkpoint(out / "checkpoint.npz", device="cpu")
    meta = {k: v for k, v in ck.meta.items() if k != "split_version"}
    io.save_checkpoint(out / "checkpoint.npz", ck.net, ck.optimizer_state, ck.state, meta, **ck.arrays)
    net, mmeta, arrays = io.load(out / "model.npz", device="cpu")
    io.save(out / "model.npz", net, {k: v for k, v in mmeta.items() if k != "split_version"}, **arrays)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out)]) == 2
    assert "older gpumlp whose held-out split differs" in capsys.readouterr().err
    assert cli.main(["evaluate", str(out), "--device", "cpu"]) == 2
    assert "--split all" in capsys.readouterr().err
    assert cli.main(["evaluate", str(out), "--device", "cpu", "--split", "all"]) == 0


@pytest.mark.parametrize("drop", ["test_fraction", "blas_threads", "args", "history", "data_sha256"])
def test_a_checkpoint_with_incomplete_records_is_called_damaged(tmp_path, capsys, monkeypatch, drop):
    monkeypatch.setenv("GPUMLP_DEVICE", "cpu")   # no "using the CPU" notice, which a process prints once
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    ck = io.load_checkpoint(out / "checkpoint.npz", device="cpu")
    meta = {k: v for k, v in ck.meta.items() if k != drop}
    io.save_checkpoint(out / "checkpoint.npz", ck.net, ck.optimizer_state, ck.state, meta, **ck.arrays)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.npz is damaged" in err and err.count("\n") == 1


def test_force_keeps_the_old_run_when_the_new_one_is_refused(tmp_path, capsys):
    from gpumlp import data as datasets
    X, y = datasets.load_digits()
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    before = (out / "model.npz").read_bytes()
    X = X.copy()
    test = datasets.split(datasets.encode_labels(y)[0], 0.2, 0)[1]
    X[5, test[0]] = 1e40                         # one held-out value: scaled, past float32
    np.savez(tmp_path / "odd.npz", X=X, y=y)
    capsys.readouterr()
    assert cli.main(["train", "--device", "cpu", "--data", str(tmp_path / "odd.npz"), "--force",
                     "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "odd.npz" in captured.err and "exceed what float32 holds" in captured.err and captured.out == ""
    assert (out / "model.npz").read_bytes() == before


def test_abbreviated_options_are_not_taken(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--resume", str(out), "--epoch", "50"])
    assert e.value.code == 2


def test_a_run_that_saved_nothing_does_not_block_the_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_at(m, 1)
        assert cli.main(["train", "--device", "cpu", "--epochs", "3", "--no-progress", "--out", str(out)]) == 130
    assert "nothing to resume" in capsys.readouterr().err
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    for flag in (["--force"], ["--checkpoint-every", "2"], ["--plot"]):
        assert cli.main(["train", "--device", "cpu", *flag]) == 2
        assert "give --out DIR" in capsys.readouterr().err


def test_plot_reads_a_run_whose_last_line_was_torn(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "3", "--no-progress", "--out", str(out)]) == 0
    (out / "metrics.json").unlink()
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "lo')                       # killed mid-write
    assert cli.main(["plot", str(out)]) == 0
