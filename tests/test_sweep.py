"""Batch-size sweeps: the learning-rate rules, training to a target, the critical-batch
fit, and scripts/sweep_batch_sizes.py's files and columns in quick CPU runs."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpumlp
from gpumlp import data
from gpumlp.sweep import fit_critical_batch, scaled_lr, train_to_target, warmup_factor

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "sweep_batch_sizes.py"


# -- learning-rate rules ------------------------------------------------------------------

def test_lr_rules():
    assert scaled_lr(0.1, 128, 32, "none") == 0.1
    assert scaled_lr(0.1, 128, 32, "linear") == pytest.approx(0.4)
    assert scaled_lr(0.1, 128, 32, "sqrt") == pytest.approx(0.2)
    assert scaled_lr(0.1, 8, 32, "linear") == pytest.approx(0.025)
    assert scaled_lr(0.1, 8, 32, "sqrt") == pytest.approx(0.05)
    for bad in [dict(scaling="cubic"), dict(base_lr=0), dict(batch_size=0), dict(base_batch_size=-1)]:
        kw = {"base_lr": 0.1, "batch_size": 64, "base_batch_size": 32, "scaling": "linear", **bad}
        with pytest.raises(ValueError):
            scaled_lr(**kw)


def test_warmup_ramps_linearly_to_one():
    assert warmup_factor(100, 0) == 1.0
    assert warmup_factor(25, 100) == 0.25
    assert warmup_factor(100, 100) == 1.0 and warmup_factor(1000, 100) == 1.0


# -- the critical batch size ----------------------------------------------------------------

def test_the_fit_recovers_s_min_and_e_min_exactly():
    B = np.array([8, 16, 32, 64, 128, 256, 512])
    S = 20.0 + 1000.0 / B                        # S_min 20, E_min 1000: B_crit 50
    fit = fit_critical_batch(B, S)
    assert fit["s_min"] == pytest.approx(20.0, rel=1e-10)
    assert fit["e_min"] == pytest.approx(1000.0, rel=1e-10)
    assert fit["b_crit"] == pytest.approx(50.0, rel=1e-10)
    assert fit["rms_relative_residual"] < 1e-12
    # the hyperbola (S/S_min − 1)(E/E_min − 1) = 1 holds along the fitted curve, with E = B·S
    assert np.allclose((S / 20 - 1) * (B * S / 1000 - 1), 1.0)


def test_the_fit_weights_relative_errors():
    """±5% errors on every point: the relative fit keeps B_crit within 10%, where an
    absolute fit, which lets the largest S dominate, is further off."""
    B = np.array([8, 16, 32, 64, 128, 256])
    S = (10.0 + 2000.0 / B) * np.array([1.05, 0.95, 1.05, 0.95, 1.05, 0.95])
    relative = fit_critical_batch(B, S)["b_crit"]
    assert relative == pytest.approx(200.0, rel=0.1)
    (s_min, e_min), *_ = np.linalg.lstsq(np.stack([np.ones(6), 1.0 / B], axis=1), S, rcond=None)
    assert abs(e_min / s_min - 200.0) > abs(relative - 200.0)


def test_the_fit_says_when_it_cannot_tell():
    fit = fit_critical_batch([8, 16], [100, 50])
    assert fit["b_crit"] is None and "at least 3 distinct batch sizes that reach the target; 2 did" in fit["why"]
    fit = fit_critical_batch([8, 16, 32, 64], [800, 400, 200, 100])      # S ∝ 1/B: no S_min yet
    assert fit["b_crit"] is None and "beyond" in fit["why"]
    fit = fit_critical_batch([8, 16, 32, math.nan], [10, 20, 40, 1])     # S grows with B; NaN dropped
    assert fit["b_crit"] is None and fit["points"] == 3 and "below" in fit["why"]
    fit = fit_critical_batch([8, 16, 32], [10.0 + 2000 / 8, 10.0 + 2000 / 16, 10.0 + 2000 / 32])
    assert fit["b_crit"] == pytest.approx(200) and fit["extrapolated"]     # beyond 32, within 10 × 32
    with pytest.raises(ValueError):
        fit_critical_batch([8, 16], [1.0])


# -- training to a target ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    X, y = data.load_digits()
    idx, _ = data.encode_labels(y)
    train, test = data.split(idx, 0.2, seed=0)
    scale = data.Standardizer.fit(X[:, train])
    return scale(X[:, train]), idx[train], scale(X[:, test]), idx[test]


def test_train_to_target_stops_at_the_first_scoring_past_the_target(digits):
    Xtr, ytr, Xte, yte = digits
    net = gpumlp.MLP([64, 128, 10], device="cpu", seed=0)
    r = train_to_target(net, Xtr, ytr, Xte, yte, gpumlp.SGD(0.3), batch_size=32, target=0.9, eval_every=96,
                        noise_scale=True)
    evs = r["evaluations"]
    assert r["reached"] and not r["diverged"]
    assert evs[-1]["test_accuracy"] >= 0.9 > max(e["test_accuracy"] for e in evs[:-1])
    assert r["steps"] == evs[-1]["step"] == r["steps_run"] and r["samples"] == 32 * r["steps"]
    assert r["epochs"] == pytest.approx(r["samples"] / Xtr.shape[1])
    assert [e["step"] for e in evs] == [3 * (i + 1) for i in range(len(evs))]     # every 96 examples
    assert 0 < r["seconds"] == r["seconds_run"]
    assert np.all(np.diff([e["seconds"] for e in evs]) > 0)
    assert 5 < r["b_simple_to_target"] < 5000 and 5 < r["b_simple_init"] < 5000
    assert r["noise_steps"] == r["steps"]                    # every step's batch (B = 32 ≥ 2) measured once
    # the same run, scored by evaluate() at the end, is as accurate as the run says
    loss, acc = gpumlp.train.evaluate(net, Xte, yte)
    assert acc == pytest.approx(r["final_test_accuracy"])


def test_a_run_that_misses_the_target_is_reported_not_dropped(digits):
    Xtr, ytr, Xte, yte = digits
    net = gpumlp.MLP([64, 32, 10], device="cpu", seed=0)
    r = train_to_target(net, Xtr, ytr, Xte, yte, gpumlp.SGD(0.001), batch_size=256, target=0.99, max_epochs=2,
                        eval_every=10_000)
    assert not r["reached"] and r["steps"] is None and r["seconds"] is None
    assert r["steps_run"] == 2 * math.ceil(Xtr.shape[1] / 256) and r["epochs_run"] == pytest.approx(2.0)
    assert len(r["evaluations"]) == 1 and 0 < r["final_test_accuracy"] < 0.99   # scored after the last step
    assert "b_simple_to_target" not in r


def test_a_diverging_run_is_reported(digits):
    Xtr, ytr, Xte, yte = digits
    net = gpumlp.MLP([64, 32, 10], device="cpu", seed=0)
    r = train_to_target(net, Xtr, ytr, Xte, yte, gpumlp.SGD(1e4), batch_size=64, target=0.96, max_epochs=5,
                        noise_scale=True)
    assert r["diverged"] and not r["reached"] and r["steps_run"] < 5 * 23


def test_warmup_scales_the_first_steps_and_restores_the_lr():
    """One step per epoch (B = N): with a warm-up over 4 epochs the first step takes lr/4,
    exactly as a run at lr/4 without warm-up does."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((5, 16)), rng.integers(0, 3, 16)
    nets = [gpumlp.MLP([5, 8, 3], dtype="float64", device="cpu", seed=1) for _ in range(2)]
    opt = gpumlp.SGD(0.8)
    train_to_target(nets[0], X, y, X, y, opt, batch_size=16, target=1.0, max_epochs=1, warmup_samples=64)
    assert opt.lr == 0.8
    train_to_target(nets[1], X, y, X, y, gpumlp.SGD(0.2), batch_size=16, target=1.0, max_epochs=1)
    assert np.array_equal(gpumlp.to_numpy(nets[0].params), gpumlp.to_numpy(nets[1].params))


def test_train_to_target_checks_its_arguments(digits):
    Xtr, ytr, Xte, yte = digits
    net = gpumlp.MLP([64, 8, 10], device="cpu", seed=0)
    for kw, match in [(dict(target=1.5), "target"), (dict(batch_size=0), "batch_size"),
                      (dict(eval_every=0), "eval_every"), (dict(warmup_samples=-1), "warmup")]:
        args = dict(batch_size=32, **{k: v for k, v in kw.items() if k != "batch_size"})
        if "batch_size" in kw:
            args["batch_size"] = kw["batch_size"]
        with pytest.raises(ValueError, match=match):
            train_to_target(net, Xtr, ytr, Xte, yte, gpumlp.SGD(0.1), **args)

    class Adam:
        lr = 0.1

        def step(self, net):
            pass
    with pytest.raises(ValueError, match="gpumlp.SGD"):
        train_to_target(net, Xtr, ytr, Xte, yte, Adam(), batch_size=32)


# -- the script -------------------------------------------------------------------------------

def run_sweep(*args, env=None, pre=""):
    """Run the script (``pre``: Python run first, in the same process)."""
    code = f"{pre}\nimport runpy, sys\nsys.argv = {[str(SCRIPT), *map(str, args)]!r}\n" \
           f"sys.path.insert(0, {str(SCRIPT.parent)!r})\nrunpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_step_sweep_writes_its_table(tmp_path):
    out = tmp_path / "step"
    p = run_sweep("--device", "cpu", "--batch-sizes", "32,256", "--sizes", "64,128,10", "--rounds", "3",
                  "--noise-scale", "--out", out)
    assert p.returncode == 0, p.stderr
    table = rows(out / "sweep.csv")
    assert [int(r["batch_size"]) for r in table] == [32, 256]
    for col in ["gpumlp_ms_min", "gpumlp_ms_median", "floor_ms_min", "floor_ms_median", "torch_ms_min",
                "torch_ms_median", "samples_per_s", "gflops", "gpumlp_over_floor", "gpumlp_over_torch",
                "peak_memory_bytes", "kernels_per_step", "gemms_per_step", "noise_scale_overhead"]:
        assert col in table[0], col
    for r in table:
        g, f = float(r["gpumlp_ms_min"]), float(r["floor_ms_min"])
        assert 0 < g <= float(r["gpumlp_ms_median"]) and float(r["gpumlp_over_floor"]) == pytest.approx(g / f)
        assert float(r["samples_per_s"]) == pytest.approx(int(r["batch_size"]) / (g / 1e3))
        # 2 N (2·64·128 + 2·128·10 + 128·10) flops
        flops = 2 * int(r["batch_size"]) * (2 * (64 * 128 + 128 * 10) + 128 * 10)
        assert float(r["gflops"]) == pytest.approx(flops / (g / 1e3) / 1e9)
        assert int(r["kernels_per_step"]) == 25 and int(r["gemms_per_step"]) == 7   # the twins: see test_kernels
    record = json.loads((out / "sweep.json").read_text())
    h = record["header"]
    assert {"date", "command", "hostname", "device", "versions", "threads"} <= set(h)
    assert h["versions"]["numpy"] == np.__version__ and h["threads"] == 1
    assert len(record["raw_ms"]["32"]["gpumlp"]) == 3
    assert "g/floor" in p.stdout and "noise +%" in p.stdout
    if _has("matplotlib"):
        assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_sweep_writes_every_run(tmp_path):
    out = tmp_path / "train"
    p = run_sweep("--mode", "train", "--batch-sizes", "16,128", "--lr-grid", "0.3,1", "--seeds", "2",
                  "--target", "0.9", "--max-epochs", "6", "--hidden", "64", "--out", out)
    assert p.returncode == 0, p.stderr
    table = rows(out / "sweep.csv")
    assert [int(r["batch_size"]) for r in table] == [16, 128]
    for col in ["batch_size", "lr", "final_test_accuracy", "steps_to_target", "samples_to_target",
                "epochs_to_target", "seconds_to_target", "b_simple", "b_simple_init", "reached"]:
        assert col in table[0], col
    runs = rows(out / "runs.csv")
    assert len(runs) == 2 * 2 * 2                           # every batch size × lr × seed
    for r in table:                 # the chosen lr: the most seeds reaching, then the fewest median steps
        mine = [x for x in runs if x["batch_size"] == r["batch_size"]]

        def key(lr, mine=mine):
            rs = [x for x in mine if float(x["lr"]) == lr]
            steps = sorted(int(x["steps"]) if x["reached"] == "True" else math.inf for x in rs)
            return (-sum(x["reached"] == "True" for x in rs), (steps[0] + steps[1]) / 2, lr)
        assert float(r["lr"]) == min({float(x["lr"]) for x in mine}, key=key)
        reached = [x for x in mine if float(x["lr"]) == float(r["lr"]) and x["reached"] == "True"]
        assert r["reached"] == f"{len(reached)}/2"
    model = json.loads((out / "sweep.json").read_text())["model"]
    assert "b_crit_fitted" in model and model["b_simple_predicted"] > 0
    assert "critical batch size" in p.stdout


def test_train_sweep_reports_runs_that_miss_and_follows_a_rule(tmp_path):
    out = tmp_path / "rule"
    p = run_sweep("--mode", "train", "--batch-sizes", "32,64", "--lr-scaling", "linear", "--base-lr", "0.05",
                  "--base-batch-size", "32", "--seeds", "1", "--target", "0.999", "--max-epochs", "1",
                  "--hidden", "16", "--out", out)
    assert p.returncode == 0, p.stderr
    table = rows(out / "sweep.csv")
    assert [float(r["lr"]) for r in table] == pytest.approx([0.05, 0.1])
    assert all(r["lr_rule"] == "linear" and r["reached"] == "0/1" and r["steps_to_target"] == "" for r in table)
    assert all(0 < float(r["final_test_accuracy"]) < 0.999 for r in table)
    assert "at least 3 distinct batch sizes that reach the target" in p.stdout


def test_without_matplotlib_the_sweep_still_writes_csv_and_json(tmp_path):
    out = tmp_path / "noplot"
    p = run_sweep("--device", "cpu", "--batch-sizes", "32", "--sizes", "8,8,2", "--rounds", "1", "--out", out,
                  pre="import sys; sys.modules['matplotlib'] = None")
    assert p.returncode == 0, p.stderr
    assert "no plot: matplotlib is not installed" in p.stdout
    assert (out / "sweep.csv").exists() and (out / "sweep.json").exists() and not (out / "sweep.png").exists()
    if _has("matplotlib"):                  # drawn later, where matplotlib is, from the JSON alone
        p = run_sweep("--replot", out / "sweep.json")
        assert p.returncode == 0, p.stderr
        assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    for args, match in [(["--batch-sizes", "32,-1"], "positive integers"), (["--lr-grid", "0,1"], "positive numbers"),
                        (["--mode", "train", "--target", "2"], "--target"),
                        (["--sizes", "8,8", "--hidden", "4"], "not allowed"),
                        (["--mode", "train", "--test-fraction", "1.5"], "test_fraction"),
                        (["--mode", "train", "--sizes", "10,4,10"], "d0 = 64"),
                        (["--mode", "train", "--data", tmp_path / "missing.npz"], "no such file"),
                        (["--workers", "2"], "never fanned out")]:
        p = run_sweep(*args, "--out", tmp_path / "x")
        assert p.returncode != 0 and match in p.stderr, (args, p.stderr)


def _has(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def test_the_sweeps_noise_bookkeeping_matches_a_hand_loop():
    """At a learning rate too small to move a float64 weight, every step's batch reaches the
    noise scale exactly once, with its true size (the last batch of an epoch is shorter),
    whatever the scoring points: the same values as a NoiseScale fed batch by batch."""
    from gpumlp.losses import LOSSES
    from gpumlp.noise import NoiseScale
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((5, 37)), rng.integers(0, 3, 37)
    for B, every in [(5, 8), (8, 13), (10, 1000)]:
        net = gpumlp.MLP([5, 7, 3], dtype="float64", device="cpu", seed=0)
        r = train_to_target(net, X, y, X, y, gpumlp.SGD(1e-300), batch_size=B, target=1.0, max_epochs=3,
                            eval_every=every, seed=4, noise_scale=True)
        assert not r["reached"] and r["noise_steps"] == r["steps_run"] == 3 * math.ceil(37 / B)
        ref, order_rng = NoiseScale(population=37), np.random.default_rng(4)
        for _ in range(3):
            order = order_rng.permutation(37)
            for s in range(0, 37, B):
                cols = order[s:s + B]
                net.backward(LOSSES["ce"](net.forward(X[:, cols]), y[cols])[1])
                g = gpumlp.to_numpy(net.grads)
                ref.update(gpumlp.to_numpy(net.sample_grad_sq_norms()).sum(), g @ g, len(cols))
        assert r["b_simple_to_target"] == pytest.approx(ref.b_simple_mean, rel=1e-9)
        assert r["b_simple_end"] == pytest.approx(ref.b_simple, rel=1e-9)


def test_an_interrupted_sweep_writes_what_it_measured(tmp_path):
    """A timeout's SIGTERM (or Ctrl-C) mid-sweep: the runs so far are written, marked."""
    out = tmp_path / "cut"
    pre = ("import os, signal, threading; "
           "threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()")
    p = run_sweep("--mode", "train", "--hidden", "32", "--out", out, pre=pre)
    assert p.returncode == 0, p.stderr
    assert "interrupted after" in p.stderr
    record = json.loads((out / "sweep.json").read_text())
    assert record["header"]["interrupted"].endswith("of 240 runs")
    assert len(record["runs"]) < 240 and len(rows(out / "runs.csv")) == len(record["runs"])


def test_a_train_sweep_fanned_out_over_workers_equals_the_local_one(tmp_path):
    """--workers 2 (mpi4py.futures, spawned): the same runs, merged into the same files; only
    the seconds differ.  The runs are seeded, so every step count and B_simple agree."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed")
    common = ("--mode", "train", "--batch-sizes", "16,128", "--lr-grid", "0.3,1", "--seeds", "2", "--target", "0.9",
              "--max-epochs", "4", "--hidden", "32", "--micro-batch", "10")
    assert run_sweep(*common, "--out", tmp_path / "local").returncode == 0
    p = run_sweep(*common, "--workers", "2", "--out", tmp_path / "pool")
    assert p.returncode == 0, p.stderr
    local, pool = rows(tmp_path / "local" / "runs.csv"), rows(tmp_path / "pool" / "runs.csv")
    timing = {"seconds", "seconds_run"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in local] == \
           [{k: v for k, v in r.items() if k not in timing} for r in pool]
    assert json.loads((tmp_path / "pool" / "sweep.json").read_text())["header"]["workers"] == 2
