"""gpumlp.sweep against exact answers: the critical-batch fit on steps made from a known
S(B) = S_min + E_min / B (each of its thresholds crossed on purpose), and train_to_target's
noise scale at the starting parameters against a hand loop over the public calls."""
import numpy as np
import pytest

import gpumlp
from gpumlp.losses import cross_entropy
from gpumlp.noise import NoiseScale
from gpumlp.sweep import fit_critical_batch, train_to_target
from gpumlp.testing import random_problem

B3 = [1, 2, 4]


def steps(s_min, e_min, B=B3):
    return [s_min + e_min / b for b in B]


def test_a_small_e_min_and_s_min_are_fitted_not_refused():
    """E_min and S_min below 1 are fine (the steps may be medians of a few runs): S_min = 0.5,
    E_min = 1 gives B_crit = 2, inside the batch sizes swept; the step 0.75 (< 1) counts."""
    fit = fit_critical_batch(B3, steps(0.5, 1.0))
    assert fit["b_crit"] == pytest.approx(2.0, rel=1e-9) and fit["extrapolated"] is False
    assert fit["s_min"] == pytest.approx(0.5, rel=1e-9) and fit["e_min"] == pytest.approx(1.0, rel=1e-9)
    assert fit["points"] == 3 and fit["rms_relative_residual"] < 1e-12
    fit = fit_critical_batch(B3, steps(1.0, 0.5))                        # B_crit 0.5, below the smallest B
    assert fit["b_crit"] == pytest.approx(0.5, rel=1e-9) and fit["extrapolated"] is True


def test_points_that_cannot_be_fitted_are_dropped_not_used():
    """A run that never reached (steps 0, inf or NaN) and a batch size of 0 are left out:
    the fit on what remains is the fit without them."""
    clean = fit_critical_batch(B3, steps(0.5, 1.0))
    for extra_B, extra_S in ((8, 0.0), (8, np.inf), (8, np.nan), (0, 5.0)):
        fit = fit_critical_batch(B3 + [extra_B], steps(0.5, 1.0) + [extra_S])
        assert fit["points"] == 3 and fit["b_crit"] == pytest.approx(clean["b_crit"], rel=1e-12), (extra_B, extra_S)


def test_the_thresholds_at_ten_times_the_largest_and_a_tenth_of_the_smallest():
    """B_crit beyond 10 × the largest B (4) or below a tenth of the smallest (1) is not fitted."""
    beyond = fit_critical_batch(B3, steps(1.0, 42.0))                    # B_crit 42 > 40
    assert beyond["b_crit"] is None and beyond["why"].startswith("S_min ≈ 0")
    inside = fit_critical_batch(B3, steps(1.0, 38.0))                    # 38 < 40: fitted, extrapolated
    assert inside["b_crit"] == pytest.approx(38.0, rel=1e-9) and inside["extrapolated"] is True
    below = fit_critical_batch(B3, steps(1.0, 0.095))                    # 0.095 < 0.1
    assert below["b_crit"] is None and below["why"].startswith("E_min ≈ 0")
    # the threshold scales with S_min: E_min 0.1 against S_min 2 is B_crit 0.05 < 0.1
    below = fit_critical_batch(B3, steps(2.0, 0.1))
    assert below["b_crit"] is None and below["why"].startswith("E_min ≈ 0")
    just = fit_critical_batch(B3, steps(1.0, 0.105))                     # 0.105 > 0.1: fitted
    assert just["b_crit"] == pytest.approx(0.105, rel=1e-9)


def test_the_residual_is_the_rms_of_the_relative_misfit():
    B = np.array([8, 16, 32, 64, 128])
    S = (10.0 + 2000.0 / B) * np.array([1.1, 0.9, 1.05, 0.95, 1.0])
    fit = fit_critical_batch(B, S)
    resid = (fit["s_min"] + fit["e_min"] / B) / S - 1
    assert fit["rms_relative_residual"] == pytest.approx(float(np.sqrt(np.mean(resid ** 2))), rel=1e-12)
    assert fit["rms_relative_residual"] > 0.01


def test_the_noise_scale_at_init_is_the_hand_loop_over_its_own_order():
    """b_simple_init: one pass in batches of B over the order of default_rng([seed, 1]), no
    updates: Σ_n s_n and |ḡ|² of each batch, by the public calls, into a NoiseScale of the
    population N (the last batch shorter)."""
    sizes, N, B, seed = [5, 7, 3], 30, 8, 3
    X, y = random_problem(sizes, N, 0, "ce")
    net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=1)
    hand = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=1)
    r = train_to_target(net, X, y, X, y, gpumlp.SGD(1e-300), batch_size=B, target=1.0, max_epochs=1,
                        seed=seed, noise_scale=True)
    order = np.random.default_rng([seed, 1]).permutation(N)
    sums, grads, counts = [], [], []
    for s in range(0, N, B):
        idx = order[s:s + B]
        hand.backward(cross_entropy(hand.forward(X[:, idx]), y[idx], normalizer=len(idx))[1])
        sums.append(float(np.sum(hand.sample_grad_sq_norms())))
        grads.append(float(hand.grads @ hand.grads))
        counts.append(len(idx))
    assert counts == [8, 8, 8, 6]
    expected = NoiseScale(population=N).update(sums, grads, counts).b_simple_mean
    assert r["b_simple_init"] == pytest.approx(expected, rel=1e-10)
    assert r["b_simple_first_epoch"] is not None and r["b_simple_first_epoch"] == r["b_simple_to_target"]


def test_train_to_target_defaults_and_its_record():
    """The defaults are max_epochs 100, eval_every 256, seed 0 and margin 1 (the same run with
    them spelt out), and best_test_accuracy is the best scoring of the run."""
    sizes = [5, 7, 3]
    X, y = random_problem(sizes, 40, 0, "ce")
    runs = []
    for kw in ({}, {"max_epochs": 100, "eval_every": 256, "seed": 0, "margin": 1.0}):
        net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=1)
        runs.append(train_to_target(net, X, y, X, y, gpumlp.SGD(0.05), batch_size=8, target=1.0, loss="hinge",
                                    **kw))
    a, b = runs
    untimed = [[{k: v for k, v in e.items() if k != "seconds"} for e in r["evaluations"]] for r in runs]
    assert untimed[0] == untimed[1] and len(untimed[0]) > 10
    assert not a["reached"] and a["epochs_run"] == b["epochs_run"] == 100          # every epoch ran
    accs = [e["test_accuracy"] for e in a["evaluations"]]
    assert a["best_test_accuracy"] == max(accs) and a["final_test_accuracy"] == accs[-1]
    with pytest.raises(ValueError, match="target"):
        train_to_target(gpumlp.MLP(sizes, device="cpu"), X, y, X, y, gpumlp.SGD(0.1), 8, target=0.0)
    with pytest.raises(ValueError, match="micro_batch"):
        train_to_target(gpumlp.MLP(sizes, device="cpu"), X, y, X, y, gpumlp.SGD(0.1), 8, micro_batch=0)


def test_run_job_is_train_to_target_on_the_prepared_split(tmp_path):
    """A sweep worker's run (gpumlp.sweep.run_job) is train_to_target on load_split's data,
    with every setting of its spec passed on, in this process as in an MPI worker."""
    from gpumlp.sweep import load_split, run_job
    X, y = random_problem([5, 7, 3], 60, 0, "ce")
    np.savez(tmp_path / "d.npz", X=X, y=y)
    spec = {"data": str(tmp_path / "d.npz"), "test_fraction": 0.25, "sizes": [5, 7, 3], "dtype": "float64",
            "device": "cpu", "threads": 1, "batch_size": 8, "lr": 0.3, "seed": 4, "momentum": 0.5,
            "weight_decay": 0.01, "target": 0.9, "max_epochs": 3, "eval_every": 16, "loss": "hinge",
            "warmup_samples": 24, "micro_batch": 3}
    got = run_job(spec)
    Xtr, ytr, Xte, yte, K, _ = load_split(spec["data"], 0.25)
    assert K == 3 and Xtr.shape[1] == 45
    net = gpumlp.MLP([5, 7, 3], dtype="float64", device="cpu", seed=4)
    want = train_to_target(net, Xtr, ytr, Xte, yte, gpumlp.SGD(0.3, 0.5, 0.01), 8, target=0.9, max_epochs=3,
                           eval_every=16, seed=4, loss="hinge", warmup_samples=24, noise_scale=True, micro_batch=3)
    assert (got["batch_size"], got["lr"], got["seed"]) == (8, 0.3, 4)

    def untimed(r):
        return {k: v for k, v in r.items() if "seconds" not in k and k != "evaluations"}
    assert untimed(got) == {**untimed(want), "batch_size": 8, "lr": 0.3, "seed": 4}
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in got["evaluations"]] == \
        [{k: v for k, v in e.items() if k != "seconds"} for e in want["evaluations"]]
