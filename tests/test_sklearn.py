"""gpumlp.sklearn.MLPClassifier: scikit-learn's estimator checks, and the adapter's numbers.

The adapter must be thin: the same parameters, bit for bit, as gpumlp's own fit on
X.T; scikit-learn's ``alpha`` to the last digit, against a hand-computed step and
against scikit-learn's own MLPClassifier; probabilities that are softmax of the
network's output; partial_fit that carries SGD's momentum; a pickle that resumes.
"""
import importlib
import pickle
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install -e '.[sklearn]')")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SklearnMLP  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks  # noqa: E402

import gpumlp  # noqa: E402
from gpumlp.losses import cross_entropy, softmax  # noqa: E402
from gpumlp.optim import L2Penalty  # noqa: E402
from gpumlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402
from gpumlp.train import TrainState  # noqa: E402
from gpumlp.train import fit as gpumlp_fit  # noqa: E402

SMALL = dict(hidden_layer_sizes=(16,), max_iter=10, random_state=0)
REGRESSOR = dict(hidden_layer_sizes=(16,), max_iter=30, random_state=0)   # check_regressors_train wants R² > 0.5
CHECKED = [MLPClassifier(**SMALL), MLPClassifier(loss="hinge", **SMALL),
           # mse at its default rate 0.02 diverges on the checks' unscaled blobs (features up to ~10)
           MLPClassifier(loss="mse", learning_rate_init=0.005, **SMALL), MLPRegressor(**REGRESSOR)]


@pytest.fixture(scope="module")
def iris():
    """Iris standardised, N × d0 as scikit-learn has it, integer labels."""
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


# -- scikit-learn's conventions ------------------------------------------------------------
@parametrize_with_checks(CHECKED)
def test_sklearn_estimator_checks(estimator, check):
    """Every check of scikit-learn's check_estimator, one test each; a skip is scikit-learn's own."""
    check(estimator)


def test_check_estimator_passes_with_no_expected_failures():
    """The whole suite at once: no failure and nothing marked as expected to fail; the only
    skips are scikit-learn's for what this environment lacks (pandas, SCIPY_ARRAY_API)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(MLPClassifier(**SMALL), on_fail=None, on_skip=None)
    assert [(r["check_name"], r["exception"]) for r in results if r["status"] not in ("passed", "skipped")] == []
    assert not any(r["expected_to_fail"] for r in results)
    for r in results:
        if r["status"] == "skipped":
            assert "not installed" in str(r["exception"]) or "SCIPY_ARRAY_API" in str(r["exception"]), r
    assert sum(r["status"] == "passed" for r in results) >= 53      # of 55 with scikit-learn 1.9.1


def test_import_without_sklearn_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)        # None in sys.modules: "not installed"
    monkeypatch.delitem(sys.modules, "gpumlp.sklearn")
    with pytest.raises(ImportError, match=r"pip install -e '\.\[sklearn\]' \(in the gpumlp checkout\)"):
        importlib.import_module("gpumlp.sklearn")


def test_clone_and_params_round_trip(iris):
    X, y = iris
    est = MLPClassifier(hidden_layer_sizes=(8, 4), activation="tanh", loss="hinge", alpha=0.01, batch_size="auto",
                        learning_rate_init=0.02, momentum=0.5, max_iter=3, random_state=5, dtype="float32")
    params = est.get_params()
    assert params["hidden_layer_sizes"] == (8, 4) and params["loss"] == "hinge" and params["dtype"] == "float32"
    twin = clone(est.fit(X, y))
    assert twin.get_params() == params
    assert not hasattr(twin, "net_") and not hasattr(twin, "classes_")
    with pytest.raises(NotFittedError):
        twin.predict(X)
    assert twin.set_params(alpha=0.5, max_iter=2).get_params()["alpha"] == 0.5
    assert MLPClassifier(**params).get_params() == params
    # the clone, refitted with the same parameters, is the same model
    np.testing.assert_array_equal(clone(est).fit(X, y).net_.params, est.net_.params)
    assert est.net_.sizes == (4, 8, 4, 3) and est.net_.dtype == "float32" and est.net_.activation == "tanh"


# -- the adapter is gpumlp's fit -----------------------------------------------------------
@pytest.mark.parametrize("loss", ["ce", "hinge", "mse"])
def test_fit_equals_gpumlp_fit_on_the_transpose(iris, loss):
    """fit(X) with X N × d0 trains exactly gpumlp's own fit on X.T with the same seed."""
    X, y = iris
    est = MLPClassifier(hidden_layer_sizes=(7,), loss=loss, margin=0.5, alpha=0.0, batch_size=16,
                        learning_rate_init=0.05, momentum=0.9, max_iter=4, random_state=11).fit(X, y)
    net = gpumlp.MLP([4, 7, 3], activation="relu", output="linear", dtype="float64", device="cpu", seed=11)
    history = gpumlp_fit(net, X.T, y, gpumlp.SGD(0.05, momentum=0.9), loss=loss, margin=0.5, epochs=4,
                         batch_size=16, seed=11, progress=False)
    np.testing.assert_array_equal(est.net_.params, net.params)
    assert est.loss_curve_ == [h["loss"] for h in history]
    assert est.n_iter_ == 4 and est.loss_ == est.loss_curve_[-1]
    np.testing.assert_array_equal(est.predict(X), net.predict(X.T))


def test_random_state_conventions(iris):
    X, y = iris
    a, b = (MLPClassifier(**dict(SMALL, random_state=3)).fit(X, y) for _ in range(2))
    np.testing.assert_array_equal(a.net_.params, b.net_.params)
    c, d = (MLPClassifier(**dict(SMALL, random_state=None)).fit(X, y) for _ in range(2))
    assert not np.array_equal(c.net_.params, d.net_.params)
    e, f = (MLPClassifier(**dict(SMALL, random_state=np.random.RandomState(4))).fit(X, y) for _ in range(2))
    np.testing.assert_array_equal(e.net_.params, f.net_.params)     # a fresh RandomState(4) each time


# -- alpha is scikit-learn's alpha -------------------------------------------------------------
def test_alpha_step_equals_hand_computed_step():
    """Two steps with momentum: v ← μv + (dW + alpha·W/n), W ← W − lr·v; biases get no penalty."""
    rng = np.random.default_rng(0)
    n, lr, mu, alpha = 9, 0.3, 0.9, 0.7
    net = gpumlp.MLP([4, 5, 3], activation="relu", dtype="float64", device="cpu", seed=0)
    W, b = net.get_params()
    net.set_params(W, [rng.standard_normal(v.shape) for v in b])          # non-zero biases
    X, y = rng.standard_normal((4, n)), rng.integers(0, 3, n)
    opt = gpumlp.SGD(lr, momentum=mu, hooks=[L2Penalty(alpha)])
    vW = vb = None
    for _ in range(2):
        W0, b0 = net.get_params()
        net.backward(cross_entropy(net.forward(X), y)[1])
        dW, db = [np.array(g) for g in net.dW], [np.array(g) for g in net.db]
        opt.step(net)
        gW = [g + alpha * w / n for g, w in zip(dW, W0, strict=True)]
        vW = gW if vW is None else [mu * v + g for v, g in zip(vW, gW, strict=True)]
        vb = db if vb is None else [mu * v + g for v, g in zip(vb, db, strict=True)]
        W1, b1 = net.get_params()
        for k in range(2):
            np.testing.assert_allclose(W1[k], W0[k] - lr * vW[k], rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(b1[k], b0[k] - lr * vb[k], rtol=1e-13, atol=1e-15)
    assert np.abs(alpha * W0[0] / n).max() > 1e-2                      # the penalty is not negligible


def test_alpha_step_equals_sklearns_own_mlp(iris):
    """One full-batch SGD step from the same weights equals scikit-learn's MLPClassifier's
    (solver='sgd', momentum 0): same loss gradient, same L2 penalty on the weights only."""
    X, y = iris
    X, y = X[::3], y[::3]
    lr, alpha = 0.2, 3.0
    est = MLPClassifier(hidden_layer_sizes=(6,), alpha=alpha, learning_rate_init=lr, momentum=0.0,
                        batch_size=len(X), max_iter=1, random_state=1)
    rng = np.random.default_rng(2)
    ref = SklearnMLP(hidden_layer_sizes=(6,), solver="sgd", alpha=alpha, learning_rate_init=lr, momentum=0.0,
                     nesterovs_momentum=False, batch_size=len(X), shuffle=False, max_iter=1, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X, y)                                                  # allocates coefs_; then set them
        W = [rng.standard_normal(c.shape[::-1]) for c in ref.coefs_]
        b = [rng.standard_normal(i.shape) for i in ref.intercepts_]
        ref.coefs_, ref.intercepts_ = [w.T.copy() for w in W], [v.copy() for v in b]
        ref.fit(X, y)                                                  # warm start: one step from W, b
    est.partial_fit(X[:2], y[:2], classes=[0, 1, 2])                   # builds net_ and the optimizer
    est.net_.set_params(W, b)
    net = est.net_
    net.backward(cross_entropy(net.forward(X.T), y)[1])
    est._optimizer.step(net)
    for ours, theirs in zip(est.coefs_ + est.intercepts_, ref.coefs_ + ref.intercepts_, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    moved = [np.abs(c - w.T).max() for c, w in zip(est.coefs_, W, strict=True)]
    assert min(moved) > 1e-2


# -- predictions -------------------------------------------------------------------------
def test_digits_accuracy_and_probabilities():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    est = MLPClassifier(hidden_layer_sizes=(64,), max_iter=15, random_state=0).fit(X_train, y_train)
    assert est.score(X_test, y_test) > 0.95
    assert est.n_features_in_ == 64 and list(est.classes_) == list(range(10))
    assert len(est.loss_curve_) == 15 and est.loss_curve_[-1] < 0.2 * est.loss_curve_[0]
    P = est.predict_proba(X_test)
    assert P.shape == (len(X_test), 10)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(P, softmax(np, est.net_.forward(X_test.T)).T, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(est.predict_log_proba(X_test), np.log(P), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(est.predict(X_test), est.classes_[P.argmax(axis=1)])
    assert [c.shape for c in est.coefs_] == [(64, 64), (64, 10)]
    assert [i.shape for i in est.intercepts_] == [(64,), (10,)]


def test_string_labels_and_binary(iris):
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    est = MLPClassifier(**SMALL).fit(X, names)
    assert list(est.classes_) == ["setosa", "versicolor", "virginica"]
    assert est.score(X, names) > 0.9 and est.predict(X[:3]).dtype == names.dtype
    two = names != "setosa"
    binary = MLPClassifier(**SMALL).fit(X[two], names[two])
    assert binary.net_.sizes[-1] == 2 and binary.predict_proba(X[two]).shape == (two.sum(), 2)
    assert binary.score(X[two], names[two]) > 0.85


def test_mse_has_no_probabilities(iris):
    X, y = iris
    est = MLPClassifier(loss="mse", **SMALL).fit(X, y)
    assert not hasattr(est, "predict_proba") and not hasattr(est, "predict_log_proba")
    assert est.score(X, y) > 0.85


# -- partial_fit -------------------------------------------------------------------------
def test_partial_fit_carries_network_and_momentum(iris):
    """Full-batch partial_fit steps equal a hand loop with one optimizer: SGD's velocity
    (momentum 0.9) carries from call to call.  Resetting it would give other weights."""
    X, y = iris
    kw = dict(hidden_layer_sizes=(5,), alpha=0.1, learning_rate_init=0.1, momentum=0.9, batch_size=1000, random_state=7)
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier(**kw).partial_fit(X, y)
    est = MLPClassifier(**kw)
    est.partial_fit(X, y, classes=[0, 1, 2])
    net, opt = est.net_, est._optimizer
    for _ in range(2):
        est.partial_fit(X, y)
    assert est.net_ is net and est._optimizer is opt and len(est.loss_curve_) == 3 and est.n_iter_ == 1

    hand = gpumlp.MLP([4, 5, 3], activation="relu", dtype="float64", device="cpu", seed=7)
    hand_opt = gpumlp.SGD(0.1, momentum=0.9, hooks=[L2Penalty(0.1)])
    for _ in range(3):
        hand.backward(cross_entropy(hand.forward(X.T), y)[1])
        hand_opt.step(hand)
    np.testing.assert_allclose(est.net_.params, hand.params, rtol=1e-12, atol=1e-14)

    fresh = MLPClassifier(**kw).partial_fit(X, y, classes=[0, 1, 2])
    for _ in range(2):
        fresh._optimizer = gpumlp.SGD(0.1, momentum=0.9, hooks=[L2Penalty(0.1)])   # momentum forgotten each call
        fresh.partial_fit(X, y)
    assert np.abs(fresh.net_.params - est.net_.params).max() > 1e-3


def test_partial_fit_continues_gpumlp_fit(iris):
    """partial_fit is one more epoch of gpumlp's fit with the same network, optimizer and
    TrainState: after fit for 3 epochs, it equals fit for 4, bit for bit; from scratch,
    three calls equal fit continued one epoch at a time."""
    X, y = iris
    kw = dict(hidden_layer_sizes=(6,), alpha=0.05, batch_size=16, max_iter=3, random_state=4)
    once = MLPClassifier(**dict(kw, max_iter=4)).fit(X, y)
    twice = MLPClassifier(**kw).fit(X, y).partial_fit(X, y)
    np.testing.assert_array_equal(twice.net_.params, once.net_.params)
    assert twice.loss_curve_ == once.loss_curve_

    est = MLPClassifier(**kw)
    net = gpumlp.MLP([4, 6, 3], activation="relu", dtype="float64", device="cpu", seed=4)
    opt, state = gpumlp.SGD(0.1, momentum=0.9, hooks=[L2Penalty(0.05)]), TrainState(4)
    for epochs in (1, 2, 3):
        est.partial_fit(X, y, classes=[0, 1, 2])
        gpumlp_fit(net, X.T, y, opt, epochs=epochs, batch_size=16, state=state, progress=False)
        np.testing.assert_array_equal(est.net_.params, net.params)


def test_partial_fit_classes(iris):
    X, y = iris
    est = MLPClassifier(**SMALL).partial_fit(X[y < 2], y[y < 2], classes=np.array([2, 0, 1]))
    assert list(est.classes_) == [0, 1, 2] and est.predict_proba(X).shape == (150, 3)
    est.partial_fit(X, y)
    with pytest.raises(ValueError, match="not in classes"):
        est.partial_fit(X[:4], np.array([0, 1, 5, 1]))
    with pytest.raises(ValueError, match="not the same"):
        est.partial_fit(X, y, classes=[0, 1])
    fitted = MLPClassifier(**SMALL).fit(X, y)
    net = fitted.net_
    assert fitted.partial_fit(X, y).net_ is net and len(fitted.loss_curve_) == SMALL["max_iter"] + 1


# -- pickle ----------------------------------------------------------------------------------
def test_pickle_round_trip_predicts_and_resumes(iris):
    X, y = iris
    est = MLPClassifier(hidden_layer_sizes=(8,), alpha=0.01, max_iter=3, random_state=2).fit(X, y)
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy.predict(X), est.predict(X))
    np.testing.assert_array_equal(copy.predict_proba(X), est.predict_proba(X))
    assert copy.get_params() == est.get_params() and copy.loss_curve_ == est.loss_curve_
    assert "net_" in vars(est)                                         # pickling did not strip the original
    est.partial_fit(X, y)
    copy.partial_fit(X, y)                                             # the velocity came along
    np.testing.assert_array_equal(copy.net_.params, est.net_.params)


# -- inside scikit-learn's tools ------------------------------------------------------------
def test_pipeline_and_grid_search():
    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier(max_iter=20, random_state=0))])
    assert pipe.fit(X_train, y_train).score(X_test, y_test) > 0.9
    grid = GridSearchCV(pipe, {"mlp__hidden_layer_sizes": [(4,), (16,)], "mlp__alpha": [1e-4, 10.0]}, cv=3)
    grid.fit(X_train, y_train)
    assert grid.best_score_ > 0.85 and grid.score(X_test, y_test) > 0.85
    assert grid.best_params_["mlp__alpha"] == 1e-4                     # alpha=10 is far too strong
    best = grid.best_estimator_.named_steps["mlp"]
    assert best.net_.sizes[1] == best.hidden_layer_sizes[0]
    assert grid.cv_results_["mean_test_score"].min() < grid.best_score_


# -- the regressor --------------------------------------------------------------------------
def test_regressor_passes_check_estimator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(MLPRegressor(**REGRESSOR), on_fail=None, on_skip=None)
    assert [(r["check_name"], r["exception"]) for r in results if r["status"] not in ("passed", "skipped")] == []
    assert sum(r["status"] == "passed" for r in results) >= 51      # of 53 with scikit-learn 1.9.1


def test_regressor_equals_gpumlp_fit_on_real_targets():
    """fit(X, y) with y N × 2 is gpumlp's fit on X.T and y.T with loss squared_error, bit for
    bit, and its loss is scikit-learn's: ½ the mean of (y − ŷ)² over samples and outputs."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 3))
    y = np.stack([np.sin(X[:, 0]) + X[:, 1], X[:, 2] ** 2], axis=1)
    est = MLPRegressor(hidden_layer_sizes=(16,), activation="tanh", max_iter=8, alpha=0.0, random_state=3).fit(X, y)
    net = gpumlp.MLP([3, 16, 2], activation="tanh", dtype="float64", device="cpu", seed=3)
    history = gpumlp_fit(net, X.T, y.T, gpumlp.SGD(0.003, 0.9), loss="squared_error", epochs=8, batch_size=32,
                         seed=3, progress=False)
    assert np.array_equal(est.net_.params, net.params)
    assert est.loss_curve_ == [h["loss"] for h in history]
    pred = est.predict(X)
    assert pred.shape == (120, 2)
    loss, acc = gpumlp.evaluate(net, X.T, y.T, "squared_error")
    assert acc is None and loss == pytest.approx(0.5 * np.mean((pred - y) ** 2), rel=1e-12)


def test_regressor_learns_and_handles_1d_targets():
    from sklearn.datasets import make_regression
    X, y = make_regression(400, 5, noise=5.0, random_state=0)
    y = y / y.std()
    est = MLPRegressor(hidden_layer_sizes=(32,), max_iter=40, random_state=0).fit(X, y)
    assert est.predict(X).shape == (400,) and est.score(X, y) > 0.95
    again = MLPRegressor(hidden_layer_sizes=(32,), max_iter=39, random_state=0).fit(X, y).partial_fit(X, y)
    assert np.array_equal(again.net_.params, est.net_.params)          # partial_fit continues fit exactly
    back = pickle.loads(pickle.dumps(est))
    assert np.array_equal(back.predict(X), est.predict(X))


def test_squared_error_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    Y, T = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    loss, dY = gpumlp.losses.squared_error(Y, T)
    assert float(loss) == pytest.approx(0.5 * np.mean((Y - T) ** 2), rel=1e-14)
    h, num = 1e-6, np.zeros_like(Y)
    for i in np.ndindex(Y.shape):
        Yp, Ym = Y.copy(), Y.copy()
        Yp[i] += h
        Ym[i] -= h
        num[i] = (float(gpumlp.losses.squared_error(Yp, T)[0]) - float(gpumlp.losses.squared_error(Ym, T)[0])) / (2 * h)
    np.testing.assert_allclose(dY, num, rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match=r"targets must have shape \(3, 5\)"):
        gpumlp.losses.squared_error(Y, T[:2])


def test_micro_batch_trains_the_same_estimator(iris):
    X, y = iris
    a = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y)
    b = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0, micro_batch=5).fit(X, y)
    assert np.max(np.abs(a.net_.params - b.net_.params)) <= 1e-12 * np.max(np.abs(a.net_.params))
