"""The scikit-learn adapter's numerics: predict_log_proba stays finite and exact for logits of
±1000 (a log of predict_proba would give -inf, an unshifted exp inf), predict_proba of the
hinge loss is the softmax of the network's outputs, and labels outside classes are refused."""
import numpy as np
import pytest

pytest.importorskip("sklearn")
from gpumlp.sklearn import MLPClassifier  # noqa: E402

X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5], [0.2, -0.3], [0.0, 0.0]])
Y_LABELS = np.array(["a", "b", "c", "a", "b", "c"])
# logits W x + b up to ±1500, with ties: [1000, -1000, 0], [-1000, 1000, 1000], ..., [0, 0, 0]
W = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0]])      # scikit-learn's layout: d0 × K
B = np.array([0.0, 0.0, 0.0])


def _log_softmax(Y):
    """Row-wise log-softmax of N × K logits, stably: Y − max − log Σ exp(Y − max)."""
    Z = Y - Y.max(axis=1, keepdims=True)
    return Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))


def _linear(dtype="float64", loss="ce"):
    clf = MLPClassifier(hidden_layer_sizes=(), max_iter=1, random_state=0, dtype=dtype, loss=loss).fit(X, Y_LABELS)
    clf.net_.set_params([W.T], [B])
    return clf


def test_predict_log_proba_with_logits_of_a_thousand_is_finite_and_exact():
    clf = _linear()
    logits = X @ W + B
    assert np.abs(logits).max() == 1500 and np.abs(logits[0]).max() == 1000
    got = clf.predict_log_proba(X)
    assert got.shape == (6, 3) and np.isfinite(got).all()
    np.testing.assert_allclose(got, _log_softmax(logits), rtol=1e-13, atol=1e-13)
    assert got[0].tolist() == pytest.approx([0.0, -2000.0, -1000.0], rel=1e-15, abs=1e-300)
    # a tie at the top: log ½ each, the third far below
    assert got[1].tolist() == pytest.approx([-2000 - np.log(2), -np.log(2), -np.log(2)], rel=1e-15)
    assert got[5].tolist() == pytest.approx([-np.log(3)] * 3, rel=1e-15)       # all logits 0


def test_predict_proba_with_logits_of_a_thousand_matches_the_log():
    clf = _linear()
    p = clf.predict_proba(X)
    assert np.isfinite(p).all() and p.shape == (6, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(p, np.exp(_log_softmax(X @ W + B)), rtol=1e-13, atol=1e-300)
    big = p > 1e-300                                           # where the probability is representable
    np.testing.assert_allclose(np.log(p[big]), clf.predict_log_proba(X)[big], rtol=1e-13, atol=1e-15)
    assert clf.predict(X).tolist() == clf.classes_[p.argmax(axis=1)].tolist()


def test_predict_log_proba_in_float32_is_finite():
    clf = _linear(dtype="float32")
    got = clf.predict_log_proba(X)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _log_softmax(X @ W + B), rtol=1e-6, atol=1e-4)


def test_predict_proba_of_the_hinge_is_the_softmax_of_the_outputs():
    rng = np.random.default_rng(2)
    Xr, yr = rng.normal(size=(40, 4)), rng.integers(0, 3, 40) * 10 + 5
    clf = MLPClassifier(hidden_layer_sizes=(6,), activation="tanh", loss="hinge", margin=0.5, max_iter=3,
                        random_state=1).fit(Xr, yr)
    (W1, W2), (b1, b2) = clf.coefs_, clf.intercepts_
    Y = np.tanh(Xr @ W1 + b1) @ W2 + b2                        # the outputs by hand, N × K
    E = np.exp(Y - Y.max(axis=1, keepdims=True))
    p = clf.predict_proba(Xr)
    np.testing.assert_allclose(p, E / E.sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(Xr), _log_softmax(Y), rtol=1e-12, atol=1e-14)
    assert clf.classes_.tolist() == [5, 15, 25]
    assert clf.predict(Xr).tolist() == clf.classes_[p.argmax(axis=1)].tolist()
    assert p.min() > 0 and p.std() > 1e-3                      # not a degenerate (uniform) output


def test_the_squared_error_loss_has_no_probabilities():
    clf = MLPClassifier(hidden_layer_sizes=(), loss="mse", max_iter=1, random_state=0).fit(X, Y_LABELS)
    assert not hasattr(clf, "predict_proba") and not hasattr(clf, "predict_log_proba")


@pytest.mark.parametrize("y, unknown", [([1, 2], 2), ([0, 1], 0), ([3, 4], 4)])
def test_partial_fit_refuses_labels_outside_its_classes(y, unknown):
    clf = MLPClassifier(hidden_layer_sizes=(), random_state=0)
    with pytest.raises(ValueError, match=rf"not in classes.*\b{unknown}\b"):
        clf.partial_fit(X[:2], np.array(y), classes=[1, 3])
    assert not hasattr(clf, "net_")
