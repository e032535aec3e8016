"""The scikit-learn estimators' parameters, line by line: every default and every stored value
(get_params), each check's message as a user reads it, random_state's three forms, the
device and dtype the network is built with, pickling (unfitted, fitted, float32, on a
machine whose $GPUMLP_DEVICE says otherwise), and what verbose prints.

The numbers the estimators train to are in tests/test_sklearn_numerics.py; scikit-learn's
own estimator checks are in tests/test_sklearn.py."""
import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.utils import get_tags  # noqa: E402

import gpumlp  # noqa: E402
from gpumlp.backend import DeviceUnavailableError, probe_cupy  # noqa: E402
from gpumlp.optim import L2Penalty  # noqa: E402
from gpumlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402
from gpumlp.testing import exact  # noqa: E402
from gpumlp.train import fit as gpumlp_fit  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.standard_normal((24, 3))
Y = RNG.integers(0, 3, 24)                       # every class present
T = np.stack([X[:, 0] - X[:, 1], X[:, 2] ** 2], axis=1)
FAST = dict(hidden_layer_sizes=(4,), max_iter=2, batch_size=8, random_state=0)

DEFAULTS = {"hidden_layer_sizes": (100,), "activation": "relu", "alpha": 1e-4, "batch_size": 32,
            "learning_rate_init": "auto", "momentum": 0.9, "max_iter": 30, "random_state": None,
            "device": "cpu", "dtype": "float64", "verbose": False, "micro_batch": None}


# -- the parameters as scikit-learn sees them -----------------------------------------------
def test_default_parameters():
    assert MLPClassifier().get_params() == dict(DEFAULTS, loss="ce", margin=1.0)
    assert MLPRegressor().get_params() == DEFAULTS
    for est in (MLPClassifier(), MLPRegressor()):      # the types too: 30 is not 30.0, False is not 0
        params = est.get_params()
        assert [type(params[k]) for k in ("batch_size", "max_iter", "verbose")] == [int, int, bool]


def test_every_parameter_is_stored_as_given():
    rs = np.random.RandomState(3)
    given = {"hidden_layer_sizes": (7, 2), "activation": "tanh", "alpha": 0.5, "batch_size": 5,
             "learning_rate_init": 0.25, "momentum": 0.3, "max_iter": 4, "random_state": rs, "device": "auto",
             "dtype": "float32", "verbose": True, "micro_batch": 2}
    assert MLPRegressor(**given).get_params() == given
    assert MLPClassifier(loss="hinge", margin=0.5, **given).get_params() == dict(given, loss="hinge", margin=0.5)
    assert MLPClassifier(**given).get_params()["random_state"] is rs


def test_regressor_loss_and_tags():
    """The regressor's loss is fixed (squared_error, margin unused) and it declares 2-D targets."""
    reg = MLPRegressor()
    assert (reg.loss, reg.margin) == ("squared_error", 1.0)
    assert get_tags(reg).target_tags.multi_output is True
    assert get_tags(MLPClassifier()).target_tags.multi_output is False


# -- hidden_layer_sizes and activation --------------------------------------------------------
@pytest.mark.parametrize("hidden, sizes", [(5, (3, 5, 3)), ((1,), (3, 1, 3)), ((), (3, 3)), ([2, 6], (3, 2, 6, 3)),
                                           ((np.int64(2),), (3, 2, 3))])
def test_hidden_layer_sizes_accepted(hidden, sizes):
    clf = MLPClassifier(**dict(FAST, hidden_layer_sizes=hidden)).fit(X, Y)
    assert clf.net_.sizes == sizes
    assert [c.shape for c in clf.coefs_] == [(a, b) for a, b in zip(sizes, sizes[1:], strict=False)]


@pytest.mark.parametrize("hidden", [(0,), (True,), (3, 0), (-2,), (2.0,), ("3",), 0, True])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_hidden_layer_sizes_refused(Est, hidden):
    est = Est(**dict(FAST, hidden_layer_sizes=hidden))
    with pytest.raises(ValueError, match=exact("hidden_layer_sizes must be a positive int or a sequence of them; "
                                               f"got {hidden!r}")):
        est.fit(X, Y if Est is MLPClassifier else T)
    assert not hasattr(est, "net_")


@pytest.mark.parametrize("activation", ["foo", 3, "Relu", None])
def test_activation_refused(activation):
    with pytest.raises(ValueError, match=exact(
            "activation must be one of scikit-learn's identity, logistic, tanh, relu or gpumlp's "
            f"leaky_relu, linear, relu, sigmoid, tanh; got {activation!r}")):
        MLPClassifier(**dict(FAST, activation=activation)).fit(X, Y)


@pytest.mark.parametrize("name, same", [("identity", "linear"), ("logistic", "sigmoid"), ("tanh", "tanh"),
                                        ("relu", "relu"), ("leaky_relu", "leaky_relu"), ("sigmoid", "sigmoid")])
def test_activation_names(name, same):
    """scikit-learn's names are gpumlp's activations: the same network, bit for bit."""
    a = MLPRegressor(**dict(FAST, activation=name)).fit(X, T)
    b = MLPRegressor(**dict(FAST, activation=same)).fit(X, T)
    assert a.net_.activation == same and a.net_.output == "linear" and a.net_.bias is True
    np.testing.assert_array_equal(a.net_.params, b.net_.params)
    other = "tanh" if same != "tanh" else "relu"
    assert not np.array_equal(MLPRegressor(**dict(FAST, activation=other)).fit(X, T).net_.params, a.net_.params)


# -- loss, learning_rate_init, batch_size, max_iter, micro_batch --------------------------------
def test_loss_checks():
    with pytest.raises(ValueError, match=exact("loss must be one of ce, hinge, mse for a classifier; "
                                               "got 'squared_error'")):
        MLPClassifier(**dict(FAST, loss="squared_error")).fit(X, Y)
    with pytest.raises(ValueError, match=exact("unknown loss 'bogus'; expected one of mse, hinge, ce (class labels) "
                                               "or squared_error (real targets)")):
        MLPClassifier(**dict(FAST, loss="bogus")).fit(X, Y)


@pytest.mark.parametrize("lr", [0, 0.0, -0.1, float("nan"), float("inf"), "fast", "AUTO", None])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_learning_rate_init_refused(Est, lr):
    with pytest.raises(ValueError, match=exact(f"learning_rate_init must be a finite number > 0 or 'auto'; "
                                               f"got {lr!r}")):
        Est(**dict(FAST, learning_rate_init=lr)).fit(X, Y if Est is MLPClassifier else T)


@pytest.mark.parametrize("loss, rate", [("ce", 0.1), ("hinge", 0.01), ("mse", 0.02)])
def test_learning_rate_auto_is_the_losss_rate(loss, rate):
    kw = dict(FAST, loss=loss)
    auto = MLPClassifier(**kw).fit(X, Y)
    np.testing.assert_array_equal(auto.net_.params, MLPClassifier(**kw, learning_rate_init=rate).fit(X, Y).net_.params)
    assert not np.array_equal(auto.net_.params,
                              MLPClassifier(**kw, learning_rate_init=rate / 2).fit(X, Y).net_.params)
    assert auto._optimizer.lr == rate and type(auto._optimizer.lr) is float


def test_regressor_learning_rate_auto():
    auto = MLPRegressor(**FAST).fit(X, T)
    explicit = MLPRegressor(**FAST, learning_rate_init=0.003).fit(X, T)
    np.testing.assert_array_equal(auto.net_.params, explicit.net_.params)
    assert auto._optimizer.lr == 0.003


@pytest.mark.parametrize("name, value", [("batch_size", 0), ("batch_size", "big"), ("batch_size", 2.0),
                                         ("batch_size", None), ("batch_size", True), ("max_iter", 0),
                                         ("max_iter", -1), ("max_iter", 1.5), ("micro_batch", 0)])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_counts_refused(Est, name, value):
    est = Est(**dict(FAST, **{name: value}))
    with pytest.raises(ValueError, match=exact(f"{name} must be a positive integer; got {value!r}")):
        est.fit(X, Y if Est is MLPClassifier else T)
    assert not hasattr(est, "net_")


def test_partial_fit_checks_batch_size_and_micro_batch_too():
    with pytest.raises(ValueError, match=exact("batch_size must be a positive integer; got 'big'")):
        MLPRegressor(**dict(FAST, batch_size="big")).partial_fit(X, T)
    with pytest.raises(ValueError, match=exact("micro_batch must be a positive integer; got -1")):
        MLPClassifier(**dict(FAST, micro_batch=-1)).partial_fit(X, Y, classes=[0, 1, 2])


# -- labels and classes ---------------------------------------------------------------------
def test_one_class_refused():
    with pytest.raises(ValueError, match=exact("MLPClassifier needs samples of at least 2 classes; "
                                               "got 1 class (np.str_('a'))")):
        MLPClassifier(**FAST).fit(X, ["a"] * len(X))
    with pytest.raises(ValueError, match=exact("MLPClassifier needs samples of at least 2 classes; "
                                               "got 1 class (np.int64(3))")):
        MLPClassifier(**FAST).fit(X, [3] * len(X))
    with pytest.raises(ValueError, match=exact("MLPClassifier needs at least 2 classes; got classes=array([1])")):
        MLPClassifier(**FAST).partial_fit(X, [1] * len(X), classes=[1, 1])


def test_partial_fit_classes_messages():
    clf = MLPClassifier(**FAST)
    with pytest.raises(ValueError, match=exact("classes must be passed on the first call to partial_fit "
                                               "(every label of the problem, e.g. np.unique(y_all))")):
        clf.partial_fit(X, Y)
    assert not hasattr(clf, "net_")
    clf.partial_fit(X, Y, classes=[2, 0, 1])
    clf.partial_fit(X, Y, classes=np.array([0, 1, 2]))               # the same classes again: fine
    clf.partial_fit(X, Y, classes=[1, 2, 0, 2])
    assert clf.classes_.tolist() == [0, 1, 2] and len(clf.loss_curve_) == 3
    with pytest.raises(ValueError, match=exact("classes=array([0, 1]) is not the same as in the first call to "
                                               "partial_fit or fit, array([0, 1, 2])")):
        clf.partial_fit(X, Y, classes=[0, 1])
    with pytest.raises(ValueError, match=exact("y has labels not in classes array([0, 1, 2]): array([-1,  7])")):
        clf.partial_fit(X[:5], [0, 7, 1, -1, 7])
    assert len(clf.loss_curve_) == 3


def test_wrong_feature_count_is_scikit_learns_message():
    """predict and partial_fit after fit check n_features_in_ and leave it as it was."""
    clf, reg = MLPClassifier(**FAST).fit(X, Y), MLPRegressor(**FAST).fit(X, T)
    for est in (clf, reg):
        name = type(est).__name__
        with pytest.raises(ValueError, match=exact(f"X has 2 features, but {name} is expecting 3 features as input.")):
            est.predict(X[:, :2])
        y = Y if est is clf else T
        with pytest.raises(ValueError, match=exact(f"X has 4 features, but {name} is expecting 3 features as input.")):
            est.partial_fit(np.hstack([X, X[:, :1]]), y)
        assert est.n_features_in_ == 3 and est.net_.sizes[0] == 3
    with pytest.raises(ValueError, match=exact("X has 2 features, but MLPClassifier is expecting 3 features as "
                                               "input.")):
        clf.predict_proba(X[:, :2])


def test_regressor_partial_fit_refuses_another_target_count():
    reg = MLPRegressor(**FAST).fit(X, T)
    with pytest.raises(ValueError, match=exact("y has 1 targets per sample; the network was fitted on 2")):
        reg.partial_fit(X, T[:, 0])
    with pytest.raises(ValueError, match=exact("y has 3 targets per sample; the network was fitted on 2")):
        reg.partial_fit(X, np.hstack([T, T[:, :1]]))
    one = MLPRegressor(**dict(FAST, hidden_layer_sizes=(6, 5))).fit(X, T[:, 0])
    with pytest.raises(ValueError, match=exact("y has 2 targets per sample; the network was fitted on 1")):
        one.partial_fit(X, T)
    assert len(reg.loss_curve_) == 2 and len(one.loss_curve_) == 2


# -- random_state ---------------------------------------------------------------------------
def _reference(seeds, n_out=3):
    """gpumlp's own network and fit for FAST with (initial-weights seed, shuffle seed)."""
    net = gpumlp.MLP([3, 4, n_out], activation="relu", output="linear", dtype="float64", device="cpu", seed=seeds[0])
    opt = gpumlp.SGD(0.1, momentum=0.9, hooks=[L2Penalty(1e-4)])
    gpumlp_fit(net, X.T, Y, opt, loss="ce", epochs=2, batch_size=8, seed=seeds[1], progress=False)
    return net.params


def test_random_state_int_is_both_seeds():
    for rs in (11, np.int64(11)):
        np.testing.assert_array_equal(MLPClassifier(**dict(FAST, random_state=rs)).fit(X, Y).net_.params,
                                      _reference((11, 11)))


def test_random_state_generator_draws_two_seeds():
    """A RandomState (and None: NumPy's global one, and a bool, which is no int seed here) gives
    two draws below 2**31: the initial weights' seed, then the shuffling's."""
    seeds = [int(s) for s in np.random.RandomState(4).randint(2**31, size=2)]
    assert seeds[0] != seeds[1] and max(seeds) >= 62
    est = MLPClassifier(**dict(FAST, random_state=np.random.RandomState(4))).fit(X, Y)
    np.testing.assert_array_equal(est.net_.params, _reference(seeds))
    assert not np.array_equal(est.net_.params, _reference(seeds[::-1]))

    true_seeds = [int(s) for s in np.random.RandomState(1).randint(2**31, size=2)]
    np.testing.assert_array_equal(MLPClassifier(**dict(FAST, random_state=True)).fit(X, Y).net_.params,
                                  _reference(true_seeds))

    state = np.random.get_state()
    try:
        np.random.seed(5)
        none_seeds = [int(s) for s in np.random.RandomState(5).randint(2**31, size=2)]
        np.testing.assert_array_equal(MLPClassifier(**FAST).set_params(random_state=None).fit(X, Y).net_.params,
                                      _reference(none_seeds))
    finally:
        np.random.set_state(state)


def test_partial_fit_seeds_like_fit():
    """The first partial_fit builds the network fit would, from the same seeds."""
    seeds = [int(s) for s in np.random.RandomState(4).randint(2**31, size=2)]
    kw = dict(FAST, max_iter=1, random_state=np.random.RandomState(4))
    est = MLPClassifier(**kw).partial_fit(X, Y, classes=[0, 1, 2])
    net = gpumlp.MLP([3, 4, 3], dtype="float64", device="cpu", seed=seeds[0])
    gpumlp_fit(net, X.T, Y, gpumlp.SGD(0.1, momentum=0.9, hooks=[L2Penalty(1e-4)]), epochs=1, batch_size=8,
               seed=seeds[1], progress=False)
    np.testing.assert_array_equal(est.net_.params, net.params)
    reg = MLPRegressor(**dict(FAST, random_state=7)).partial_fit(X, T)
    np.testing.assert_array_equal(reg.net_.params, MLPRegressor(**dict(FAST, random_state=7, max_iter=1))
                                  .fit(X, T).net_.params)


# -- device and dtype -------------------------------------------------------------------------
def test_device_cpu_ignores_gpumlp_device(monkeypatch):
    """device='cpu' is passed on: the network never asks $GPUMLP_DEVICE (which a device=None
    network would read, and here refuses), in fit, partial_fit or unpickling."""
    monkeypatch.setenv("GPUMLP_DEVICE", "nowhere")
    with pytest.raises(ValueError, match=r"^\$GPUMLP_DEVICE must be one of"):
        gpumlp.MLP([2, 2], device=None)
    for est, y in ((MLPClassifier(**FAST), Y), (MLPRegressor(**FAST), T)):
        est.fit(X, y).partial_fit(X, y)
        copy = pickle.loads(pickle.dumps(est))
        assert copy.net_.backend.name == "numpy" and est.net_.backend.name == "numpy"
        np.testing.assert_array_equal(copy.predict(X), est.predict(X))


def test_device_is_the_networks(monkeypatch):
    with pytest.raises(ValueError, match=exact("device must be one of auto, cpu, gpu or a Backend; got 'tpu'")):
        MLPClassifier(**dict(FAST, device="tpu")).fit(X, Y)
    if probe_cupy()[0] is None:                   # no GPU here: asking for one fails loudly
        with pytest.raises(DeviceUnavailableError, match=r"^device='gpu' cannot be used"):
            MLPRegressor(**dict(FAST, device="gpu")).fit(X, T)
        # a model pickled with device='gpu' refuses to load on a machine without one
        est = MLPClassifier(**FAST).fit(X, Y).set_params(device="gpu")
        blob = pickle.dumps(est)
        with pytest.raises(DeviceUnavailableError):
            pickle.loads(blob)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dtype_is_the_networks(dtype):
    clf = MLPClassifier(**dict(FAST, dtype=dtype)).fit(X, Y)
    assert clf.net_.dtype == dtype
    assert {c.dtype.name for c in clf.coefs_ + clf.intercepts_} == {dtype}
    assert clf.predict_proba(X).dtype.name == dtype
    reg = MLPRegressor(**dict(FAST, dtype=dtype)).fit(X, T)
    assert reg.net_.dtype == dtype and reg.predict(X).dtype.name == dtype


# -- pickling --------------------------------------------------------------------------------
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_unfitted_estimator_pickles(Est):
    est = Est(**FAST)
    copy = pickle.loads(pickle.dumps(est))
    assert copy.get_params() == est.get_params()
    assert not hasattr(copy, "net_") and not hasattr(copy, "_optimizer") and not hasattr(copy, "_net_state")
    assert "_net_state" not in vars(copy)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pickle_keeps_the_network_and_the_optimizer(dtype):
    """Every part of the network and the optimizer comes back: the activation, the dtype, the
    weights, lr, momentum, alpha and the velocity (the next partial_fit is bit for bit the same)."""
    kw = dict(hidden_layer_sizes=(5, 4), activation="tanh", alpha=0.3, momentum=0.7, learning_rate_init=0.05,
              batch_size=6, max_iter=2, random_state=1, dtype=dtype)
    for est, y in ((MLPClassifier(loss="hinge", margin=0.5, **kw), Y), (MLPRegressor(**kw), T)):
        est.fit(X, y)
        blob = pickle.dumps(est)
        assert "net_" in vars(est) and "_optimizer" in vars(est)         # the original keeps its network
        copy = pickle.loads(blob)
        assert "_net_state" not in vars(copy)
        net = copy.net_
        assert (net.sizes, net.activation, net.output, net.bias, net.dtype) == (est.net_.sizes, "tanh", "linear",
                                                                                True, dtype)
        np.testing.assert_array_equal(net.params, est.net_.params)
        opt = copy._optimizer
        assert (opt.lr, opt.momentum, [repr(h) for h in opt.hooks]) == (0.05, 0.7, ["L2Penalty(alpha=0.3)"])
        np.testing.assert_array_equal(opt.state_dict(net)["velocity"], est._optimizer.state_dict(est.net_)["velocity"])
        assert copy.loss_curve_ == est.loss_curve_ and copy.n_features_in_ == 3
        np.testing.assert_array_equal(copy.predict(X), est.predict(X))
        est.partial_fit(X, y)
        copy.partial_fit(X, y)
        np.testing.assert_array_equal(copy.net_.params, est.net_.params)
        assert copy.loss_curve_ == est.loss_curve_


# -- verbose ----------------------------------------------------------------------------------
def test_quiet_by_default(capsys):
    MLPClassifier(**FAST).fit(X, Y).partial_fit(X, Y)
    MLPRegressor(**FAST).fit(X, T).partial_fit(X, T)
    assert capsys.readouterr() == ("", "")


def test_verbose_prints_each_epoch(capsys):
    reg = MLPRegressor(**dict(FAST, max_iter=3, verbose=True)).fit(X, T)
    c = reg.loss_curve_
    assert capsys.readouterr() == ("".join(f"epoch   {i + 1}/3  loss {c[i]:.4f}\n" for i in range(3)), "")
    reg.partial_fit(X, T)
    assert capsys.readouterr() == (f"epoch   4/4  loss {reg.loss_:.4f}\n", "")
    clf = MLPClassifier(**dict(FAST, verbose=True)).fit(X, Y)
    lines = capsys.readouterr().out.splitlines()
    assert [line[:24] for line in lines] == [f"epoch   {i + 1}/2  loss {clf.loss_curve_[i]:.4f}" for i in range(2)]
    assert all(line[24:31] == "  acc 0" and len(line) == 36 for line in lines)
