"""The scikit-learn adapter's numerics: predict_log_proba stays finite and exact for logits of
±1000 (a log of predict_proba would give -inf, an unshifted exp inf), predict_proba of the
hinge loss is the softmax of the network's outputs, and labels outside classes are refused.

Then what the estimators train to, against independent oracles: SGD steps with momentum and
scikit-learn's L2 penalty computed by hand in float64, one full-batch step of scikit-learn's
own MLPRegressor, and gpumlp's fit on X.T with every setting passed on (loss, margin,
epochs, batch size, 'auto' batch, micro-batches, seeds, the TrainState that partial_fit
continues); the regressor's 1-D and 2-D targets; integer X converted to float64 first."""
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPRegressor as SklearnRegressor  # noqa: E402

import gpumlp  # noqa: E402
from gpumlp.optim import L2Penalty  # noqa: E402
from gpumlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402
from gpumlp.train import TrainState  # noqa: E402
from gpumlp.train import fit as gpumlp_fit  # noqa: E402

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


# -- what the estimators train to -----------------------------------------------------------------
_rng = np.random.default_rng(5)
XP = _rng.standard_normal((30, 4))                                  # N × d0, scikit-learn's layout
YP = _rng.integers(0, 3, 30)
TP = np.stack([np.sin(XP[:, 0]) + XP[:, 1], XP[:, 2] * XP[:, 3]], axis=1)      # N × 2 real targets


def _softmax_cols(Y):
    E = np.exp(Y - Y.max(axis=0, keepdims=True))
    return E / E.sum(axis=0, keepdims=True)


def test_classifier_steps_equal_hand_computed_sgd_with_momentum_and_alpha():
    """Three full-batch epochs of a linear ce classifier, from MLP(seed=random_state)'s initial
    weights: g = (P − onehot) Xᵀ/N + alpha·W/N (no penalty on b), v ← μv + g, W ← W − lr·v."""
    lr, mu, alpha, n = 0.3, 0.8, 2.5, len(XP)
    clf = MLPClassifier(hidden_layer_sizes=(), alpha=alpha, learning_rate_init=lr, momentum=mu, batch_size=n,
                        max_iter=3, random_state=9).fit(XP, YP)
    (W,), (b,) = gpumlp.MLP([4, 3], dtype="float64", device="cpu", seed=9).get_params()
    X, onehot = XP.T, np.eye(3)[:, YP]
    vW = vb = 0.0
    losses = []
    for _ in range(3):
        Y = W @ X + b
        P = _softmax_cols(Y)
        losses.append(-np.mean(np.log(P[YP, np.arange(n)])))
        dY = (P - onehot) / n
        vW, vb = mu * vW + dY @ X.T + alpha * W / n, mu * vb + dY.sum(axis=1, keepdims=True)
        W, b = W - lr * vW, b - lr * vb
    np.testing.assert_allclose(clf.coefs_[0], W.T, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(clf.intercepts_[0], b.ravel(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(clf.loss_curve_, losses, rtol=1e-12)
    assert clf.n_iter_ == 3 and clf.loss_ == clf.loss_curve_[2] and len(set(clf.loss_curve_)) == 3
    assert np.abs(alpha * W / n).max() > 1e-2 and mu * np.abs(vW).max() > 1e-2       # both terms matter


def test_regressor_steps_equal_hand_computed_sgd():
    """Two full-batch epochs on 2-D targets through a tanh layer: squared_error is ½ the mean over
    samples and outputs, so dY = (Y − T)/(N·K)."""
    lr, mu, alpha, n, k = 0.2, 0.5, 1.5, len(XP), 2
    reg = MLPRegressor(hidden_layer_sizes=(5,), activation="tanh", alpha=alpha, learning_rate_init=lr, momentum=mu,
                       batch_size="auto", max_iter=2, random_state=4).fit(XP, TP)
    (W1, W2), (b1, b2) = gpumlp.MLP([4, 5, 2], activation="tanh", dtype="float64", device="cpu",
                                   seed=4).get_params()
    X, Tt = XP.T, TP.T
    v = [0.0] * 4
    losses = []
    for _ in range(2):
        Z = np.tanh(W1 @ X + b1)
        Y = W2 @ Z + b2
        losses.append(0.5 * np.mean((Y - Tt) ** 2))
        dY = (Y - Tt) / (n * k)
        dS = (W2.T @ dY) * (1 - Z ** 2)
        g = [dS @ X.T + alpha * W1 / n, dY @ Z.T + alpha * W2 / n, dS.sum(axis=1, keepdims=True),
             dY.sum(axis=1, keepdims=True)]
        v = [mu * vi + gi for vi, gi in zip(v, g, strict=True)]
        W1, W2, b1, b2 = (p - lr * vi for p, vi in zip((W1, W2, b1, b2), v, strict=True))
    for got, want in zip(reg.coefs_ + reg.intercepts_, [W1.T, W2.T, b1.ravel(), b2.ravel()], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(reg.loss_curve_, losses, rtol=1e-12)
    pred = reg.predict(XP)
    assert pred.shape == (30, 2)
    np.testing.assert_allclose(pred, (W2 @ np.tanh(W1 @ X + b1) + b2).T, rtol=1e-12, atol=1e-14)


def test_regressor_step_equals_sklearns_own():
    """One full-batch SGD step from the same weights equals scikit-learn's MLPRegressor's
    (solver='sgd', no momentum), its L2 penalty included, for 1-D targets."""
    y = TP[:, 0]
    lr, alpha, n = 0.1, 4.0, len(XP)
    ref = SklearnRegressor(hidden_layer_sizes=(6,), activation="tanh", solver="sgd", alpha=alpha, momentum=0.0,
                           learning_rate_init=lr, nesterovs_momentum=False, batch_size=n, shuffle=False, max_iter=1,
                           warm_start=True)
    rng = np.random.default_rng(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(XP, y)
        W = [rng.standard_normal(c.shape[::-1]) for c in ref.coefs_]
        b = [rng.standard_normal(i.shape) for i in ref.intercepts_]
        ref.coefs_, ref.intercepts_ = [w.T.copy() for w in W], [v.copy() for v in b]
        ref.fit(XP, y)
    est = MLPRegressor(hidden_layer_sizes=(6,), activation="tanh", alpha=alpha, learning_rate_init=lr, momentum=0.0,
                       batch_size=n, random_state=0).partial_fit(XP[:3], y[:3])
    est.net_.set_params(W, b)
    est.partial_fit(XP, y)
    for ours, theirs in zip(est.coefs_ + est.intercepts_, ref.coefs_ + ref.intercepts_, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    assert min(np.abs(c - w.T).max() for c, w in zip(est.coefs_, W, strict=True)) > 1e-2
    np.testing.assert_allclose(est.predict(XP), ref.predict(XP), rtol=1e-12)


@pytest.mark.parametrize("loss, margin", [("ce", 1.0), ("hinge", 0.4), ("mse", 1.0)])
def test_classifier_fit_passes_every_setting_to_gpumlp_fit(loss, margin):
    """Bit for bit gpumlp's fit on X.T and the label codes, with this loss, margin, rate,
    momentum, alpha, batch size, epoch count, activation and both seeds."""
    names = np.array(["pear", "apple", "fig"])[YP]                  # codes: apple 0, fig 1, pear 2
    kw = dict(hidden_layer_sizes=(6,), activation="tanh", loss=loss, margin=margin, alpha=0.2, batch_size=7,
              learning_rate_init=0.05, momentum=0.6, max_iter=3, random_state=12)
    clf = MLPClassifier(**kw).fit(XP, names)
    net = gpumlp.MLP([4, 6, 3], activation="tanh", dtype="float64", device="cpu", seed=12)
    codes = np.searchsorted(["apple", "fig", "pear"], names)
    history = gpumlp_fit(net, XP.T, codes, gpumlp.SGD(0.05, momentum=0.6, hooks=[L2Penalty(0.2)]), loss=loss,
                         margin=margin, epochs=3, batch_size=7, seed=12, progress=False)
    np.testing.assert_array_equal(clf.net_.params, net.params)
    assert clf.loss_curve_ == [h["loss"] for h in history] and clf.n_iter_ == 3 and clf.loss_ == history[-1]["loss"]
    assert clf.classes_.tolist() == ["apple", "fig", "pear"] and clf.n_features_in_ == 4
    np.testing.assert_array_equal(clf.predict(XP), np.array(["apple", "fig", "pear"])[net.predict(XP.T)])
    if loss == "hinge":                                            # the margin is not the default's
        other = MLPClassifier(**dict(kw, margin=1.0)).fit(XP, names)
        assert not np.array_equal(other.net_.params, clf.net_.params)


def test_batch_size_auto_is_min_200_n():
    kw = dict(hidden_layer_sizes=(3,), max_iter=2, random_state=1)
    auto = MLPClassifier(batch_size="auto", **kw).fit(XP, YP)
    np.testing.assert_array_equal(auto.net_.params, MLPClassifier(batch_size=30, **kw).fit(XP, YP).net_.params)
    assert not np.array_equal(auto.net_.params, MLPClassifier(batch_size=4, **kw).fit(XP, YP).net_.params)
    rng = np.random.default_rng(8)
    Xl, yl = rng.standard_normal((230, 2)), rng.standard_normal(230)
    fits = {b: MLPRegressor(batch_size=b, **kw).fit(Xl, yl).net_.params for b in ("auto", 200, 201, 230)}
    np.testing.assert_array_equal(fits["auto"], fits[200])
    assert not np.array_equal(fits[200], fits[201]) and not np.array_equal(fits[200], fits[230])


def test_micro_batch_is_passed_to_gpumlp_fit():
    kw = dict(hidden_layer_sizes=(5,), batch_size=10, max_iter=2, random_state=3)
    reg = MLPRegressor(micro_batch=3, **kw).fit(XP, TP)
    net = gpumlp.MLP([4, 5, 2], dtype="float64", device="cpu", seed=3)
    gpumlp_fit(net, XP.T, TP.T, gpumlp.SGD(0.003, momentum=0.9, hooks=[L2Penalty(1e-4)]), loss="squared_error",
               epochs=2, batch_size=10, seed=3, micro_batch=3, progress=False)
    np.testing.assert_array_equal(reg.net_.params, net.params)
    whole = MLPRegressor(**kw).fit(XP, TP).net_.params
    np.testing.assert_allclose(reg.net_.params, whole, rtol=1e-12, atol=1e-15)


def test_classifier_partial_fit_continues_gpumlp_fit_binary():
    """From scratch, each partial_fit is one more epoch of gpumlp's fit with the same network,
    optimizer and TrainState; a binary problem has two outputs; fit afterwards starts afresh."""
    yb = (YP > 0).astype(int) * 5 + 1                               # labels 1 and 6
    kw = dict(hidden_layer_sizes=(4,), alpha=0.1, batch_size=8, momentum=0.7, random_state=6)
    clf = MLPClassifier(**kw)
    net = gpumlp.MLP([4, 4, 2], dtype="float64", device="cpu", seed=6)
    opt, state = gpumlp.SGD(0.1, momentum=0.7, hooks=[L2Penalty(0.1)]), TrainState(6)
    curve = []
    for epochs in (1, 2, 3):
        clf.partial_fit(XP, yb, classes=[6, 1] if epochs == 1 else None)
        curve += [h["loss"] for h in gpumlp_fit(net, XP.T, (yb == 6).astype(int), opt, epochs=epochs, batch_size=8,
                                                 state=state, progress=False)]
        np.testing.assert_array_equal(clf.net_.params, net.params)
        assert clf.loss_curve_ == curve and clf.loss_ == curve[-1] and clf.n_iter_ == 1
    assert len(set(curve)) == 3 and clf.classes_.tolist() == [1, 6] and clf.n_features_in_ == 4
    assert clf.predict_proba(XP).shape == (30, 2)
    refit = clf.set_params(max_iter=2).fit(XP, yb)
    fresh = MLPClassifier(max_iter=2, **kw).fit(XP, yb)
    np.testing.assert_array_equal(refit.net_.params, fresh.net_.params)
    assert refit.loss_curve_ == fresh.loss_curve_ and refit.n_iter_ == 2


def test_regressor_partial_fit_continues_gpumlp_fit():
    kw = dict(hidden_layer_sizes=(4,), alpha=0.1, batch_size=8, learning_rate_init=0.02, random_state=2)
    reg = MLPRegressor(**kw)
    net = gpumlp.MLP([4, 4, 2], dtype="float64", device="cpu", seed=2)
    opt, state = gpumlp.SGD(0.02, momentum=0.9, hooks=[L2Penalty(0.1)]), TrainState(2)
    curve = []
    for epochs in (1, 2, 3):
        reg.partial_fit(XP, TP)
        curve += [h["loss"] for h in gpumlp_fit(net, XP.T, TP.T, opt, loss="squared_error", epochs=epochs,
                                                 batch_size=8, state=state, progress=False)]
        np.testing.assert_array_equal(reg.net_.params, net.params)
        assert reg.loss_curve_ == curve and reg.loss_ == curve[-1] and reg.n_iter_ == 1
    assert len(set(curve)) == 3 and reg.predict(XP).shape == (30, 2) and reg.n_features_in_ == 4


def test_regressor_fit_loss_is_the_last_epochs():
    reg = MLPRegressor(hidden_layer_sizes=(3,), max_iter=4, batch_size=10, random_state=0).fit(XP, TP)
    assert reg.n_iter_ == 4 and len(set(reg.loss_curve_)) == 4 and reg.loss_ == reg.loss_curve_[3]


def test_regressor_1d_and_2d_targets():
    """y of shape (N,) trains the same network as (N, 1), and predict gives back y's shape;
    a refit with another shape (and another X width) starts afresh."""
    kw = dict(hidden_layer_sizes=(3,), max_iter=2, batch_size=8, random_state=5)
    flat = MLPRegressor(**kw).fit(XP, TP[:, 1])
    column = MLPRegressor(**kw).fit(XP, TP[:, 1:])
    np.testing.assert_array_equal(flat.net_.params, column.net_.params)
    assert flat.net_.sizes == (4, 3, 1) and flat.loss_curve_ == column.loss_curve_
    assert flat.predict(XP).shape == (30,) and column.predict(XP).shape == (30, 1)
    np.testing.assert_array_equal(flat.predict(XP), column.predict(XP).ravel())
    assert flat.partial_fit(XP, TP[:, 1]).predict(XP[:3]).shape == (3,)
    assert column.partial_fit(XP, TP[:, 1:]).predict(XP[:3]).shape == (3, 1)
    np.testing.assert_array_equal(flat.net_.params, column.net_.params)

    flat.fit(XP[:, :3], TP)                                         # now 3 features and 2 targets
    assert flat.net_.sizes == (3, 3, 2) and flat.n_features_in_ == 3 and flat.predict(XP[:5, :3]).shape == (5, 2)
    assert len(flat.loss_curve_) == 2
    fresh = MLPRegressor(**kw).partial_fit(XP, TP)                  # partial_fit from scratch, 2-D targets
    assert fresh.net_.sizes == (4, 3, 2) and fresh.predict(XP[:4]).shape == (4, 2)
    np.testing.assert_array_equal(fresh.net_.params, MLPRegressor(**dict(kw, max_iter=1)).fit(XP, TP).net_.params)


# integers beyond 2**53 that float64 rounds before float32 does: scikit-learn's conversion to
# float64 first gives 2**53 in float32, a direct cast to float32 gives 2**53 + 2**30
BIG = 2**53 + 2**29 + 1
X_INT = np.array([[BIG, 1], [-BIG, 2], [BIG, -1], [-BIG, 0], [BIG, 3], [-BIG, -2]], dtype=np.int64)


def test_integer_X_is_converted_to_float64_first():
    """fit, partial_fit and predict on int64 X are those on X.astype(float64), also for a
    float32 network (a direct cast to float32 rounds these values differently)."""
    as64, as32 = X_INT.astype(np.float64), X_INT.astype(np.float32)
    assert not np.array_equal(as64.astype(np.float32), as32)
    y, t = np.array([0, 1, 0, 1, 1, 0]), np.array([0.5, -1.0, 0.25, 2.0, 0.0, 1.0])
    kw = dict(hidden_layer_sizes=(), dtype="float32", momentum=0.0, batch_size=6, max_iter=2, random_state=0)
    for make, target in ((lambda: MLPClassifier(learning_rate_init=1e-17, **kw), y),
                         (lambda: MLPRegressor(learning_rate_init=1e-32, **kw), t)):
        fits = {}
        for name, Xin in (("int", X_INT), ("64", as64), ("32", as32)):
            est = make().fit(Xin, target)
            est.partial_fit(Xin, target)
            fits[name] = est
            assert np.isfinite(est.loss_curve_).all()
        np.testing.assert_array_equal(fits["int"].net_.params, fits["64"].net_.params)
        assert fits["int"].loss_curve_ == fits["64"].loss_curve_
        assert not np.array_equal(fits["32"].net_.params, fits["64"].net_.params)
        est = fits["64"]                                    # outputs x_1 itself: (x_1, 0), or x_1
        k = est.net_.sizes[-1]
        est.net_.set_params([np.eye(k, 2)], [np.zeros(k)])
        out = est.predict_log_proba if k == 2 else est.predict
        np.testing.assert_array_equal(out(X_INT), out(as64))
        assert np.abs(out(as32) - out(as64)).max() == 2**30


def test_integer_targets_are_converted_to_float64_first():
    """The regressor's int64 targets are those targets as float64, also for a float32 network."""
    t_int = np.array([BIG, -BIG, BIG, 3, -BIG, BIG], dtype=np.int64)
    assert not np.array_equal(t_int.astype(np.float64).astype(np.float32), t_int.astype(np.float32))
    kw = dict(hidden_layer_sizes=(), dtype="float32", momentum=0.0, batch_size=6, max_iter=2,
              learning_rate_init=1e-17, random_state=0)
    fits = {name: MLPRegressor(**kw).fit(XP[:6], t).partial_fit(XP[:6], t)
            for name, t in (("int", t_int), ("64", t_int.astype(np.float64)), ("32", t_int.astype(np.float32)))}
    assert all(np.isfinite(f.loss_curve_).all() for f in fits.values())
    np.testing.assert_array_equal(fits["int"].net_.params, fits["64"].net_.params)
    assert fits["int"].loss_curve_ == fits["64"].loss_curve_
    assert not np.array_equal(fits["32"].net_.params, fits["64"].net_.params)
    assert fits["int"].predict(XP[:2]).shape == (2,)
