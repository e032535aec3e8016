"""The sweep's own data path: gpumlp.sweep.load_split fits its scaling on the training split
alone, and train_to_target scores at exactly the documented points (after the first step at
or past every eval_every examples, and after the last step)."""
import numpy as np
import pytest

import gpumlp
from gpumlp import data
from gpumlp.sweep import load_split, train_to_target


def _standardize_by_hand(Xfit, X, max_z=5.0):
    mean = Xfit.mean(axis=1, keepdims=True)
    scale = np.maximum(Xfit.std(axis=1, keepdims=True), np.abs(Xfit - mean).max(axis=1, keepdims=True) / max_z)
    return (X - mean) / np.where(scale > 1e-12, scale, 1.0)          # a constant feature keeps scale 1


@pytest.mark.parametrize("test_fraction", [0.2, 0.5])
def test_load_split_fits_the_scaling_on_the_training_columns_alone(tmp_path, test_fraction):
    rng = np.random.default_rng(11)
    N = 60
    y = np.array(["b", "a", "c"] * (N // 3))
    idx, _ = data.encode_labels(y)
    train, test = data.split(idx, test_fraction, 0)
    X = rng.normal(size=(4, N)) * np.array([[1.0], [3.0], [0.1], [10.0]])
    X[:, test] += np.array([[50.0], [-20.0], [5.0], [300.0]])     # the held-out columns lie far away
    path = tmp_path / f"d{test_fraction}.npz"
    np.savez(path, X=X, y=y)
    Xtr, ytr, Xte, yte, K, source = load_split(str(path), test_fraction)
    assert (K, source) == (3, str(path))
    assert ytr.tolist() == idx[train].tolist() and yte.tolist() == idx[test].tolist()
    assert Xtr.shape == (4, len(train)) and Xte.shape == (4, len(test))
    # the training columns are centred by their own mean: x_mean is theirs, not the whole data's
    np.testing.assert_allclose(Xtr.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(Xtr, _standardize_by_hand(X[:, train], X[:, train]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Xte, _standardize_by_hand(X[:, train], X[:, test]), rtol=1e-12, atol=1e-12)
    assert np.abs(Xte.mean(axis=1)).min() > 5                       # the shift is kept, not scaled away
    assert load_split(str(path), test_fraction)[0] is Xtr            # kept per process,
    other = load_split(str(path), 0.3)                                # per data and fraction
    assert other[0].shape == (4, len(data.split(idx, 0.3, 0)[0])) != Xtr.shape


def test_load_split_of_the_digits():
    X, y = data.load_digits()
    train, test = data.split(y, 0.2, 0)
    Xtr, ytr, Xte, yte, K, source = load_split(None, 0.2)
    assert (K, source, Xtr.shape, Xte.shape) == (10, "digits", (64, len(train)), (64, len(test)))
    np.testing.assert_allclose(Xtr, _standardize_by_hand(X[:, train], X[:, train]), atol=1e-12)
    np.testing.assert_allclose(Xte, _standardize_by_hand(X[:, train], X[:, test]), atol=1e-12)
    assert ytr.tolist() == y[train].tolist()


def _scoring_points(N, B, eval_every, max_epochs):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(3, N)), rng.integers(0, 2, N)
    net = gpumlp.MLP([3, 2], dtype="float64", device="cpu", seed=0)
    r = train_to_target(net, X, y, X, y, gpumlp.SGD(1e-300), batch_size=B, target=1.0, max_epochs=max_epochs,
                        eval_every=eval_every)
    assert not r["reached"] and not r["diverged"]
    return r


@pytest.mark.parametrize("N, B, eval_every, max_epochs, samples, steps", [
    # 7 steps an epoch (the last of 2): 8 16 24 32 40 48 50 | 58 66 74 82 90 98 100 | 108 116 124 ... 150
    (50, 8, 20, 3, [24, 40, 66, 82, 100, 124, 140, 150], [3, 5, 9, 11, 14, 17, 19, 21]),
    # a step that passes two multiples is scored once; the epoch's end is scored only in the last epoch
    (50, 16, 20, 2, [32, 48, 66, 82, 100], [2, 3, 5, 6, 8]),
    (50, 8, 64, 2, [66, 100], [9, 14]),
    (50, 8, 8, 1, [8, 16, 24, 32, 40, 48, 50], [1, 2, 3, 4, 5, 6, 7]),
])
def test_train_to_target_scores_at_the_first_step_past_every_eval_every_and_after_the_last(
        N, B, eval_every, max_epochs, samples, steps):
    r = _scoring_points(N, B, eval_every, max_epochs)
    assert [ev["samples"] for ev in r["evaluations"]] == samples
    assert [ev["step"] for ev in r["evaluations"]] == steps
    assert r["samples_run"] == N * max_epochs and r["steps_run"] == steps[-1]
