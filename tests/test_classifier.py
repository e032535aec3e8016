"""gpumlp.Classifier beyond the CLI's default runs: evaluate with another loss and margin
against a hand computation, class names that must be sorted and distinct, and scaling
vectors stored 1-D in model.npz."""
import numpy as np
import pytest

from gpumlp import MLP, Classifier, io
from gpumlp.data import Standardizer

D0, H, K = 3, 4, 3
RNG = np.random.default_rng(3)
W1, B1 = RNG.normal(size=(H, D0)), RNG.normal(size=(H, 1))
W2, B2 = 2 * RNG.normal(size=(K, H)), RNG.normal(size=(K, 1))
MEAN = np.array([[10.0], [-5.0], [0.5]])
SCALE = np.array([[2.0], [0.5], [4.0]])
CLASSES = np.array(["cat", "dog", "emu"])


def _classifier(meta=None, classes=CLASSES):
    net = MLP([D0, H, K], activation="tanh", dtype="float64", device="cpu", seed=0)
    net.set_params([W1, W2], [B1, B2])
    return Classifier(net, Standardizer(MEAN, SCALE), classes, meta)


def _outputs_by_hand(X):
    Z = (X - MEAN) / SCALE
    return W2 @ np.tanh(W1 @ Z + B1) + B2


def _data(n, seed=5):
    rng = np.random.default_rng(seed)
    X = MEAN + SCALE * rng.normal(size=(D0, n))
    return X, CLASSES[rng.integers(0, K, n)]


def _hinge_by_hand(Y, idx, margin):
    total = 0.0
    for n in range(Y.shape[1]):
        p = np.exp(Y[:, n] - Y[:, n].max())
        p /= p.sum()
        total += sum(max(0.0, p[j] - p[idx[n]] + margin) for j in range(K) if j != idx[n])
    return total / Y.shape[1]


def test_outputs_and_predict_use_the_scaling_and_the_class_names():
    X, _ = _data(7)
    clf = _classifier()
    Y = _outputs_by_hand(X)
    np.testing.assert_allclose(clf.outputs(X), Y, rtol=1e-12)
    assert clf.predict(X).tolist() == CLASSES[Y.argmax(axis=0)].tolist()


@pytest.mark.parametrize("margin", [0.5, 0.05])
def test_evaluate_with_the_hinge_and_its_margin_by_hand(margin):
    X, y = _data(40)
    clf = _classifier({"loss": "hinge", "margin": margin})
    Y = _outputs_by_hand(X)
    idx = np.searchsorted(CLASSES, y)
    loss, acc = clf.evaluate(X, y)
    assert loss == pytest.approx(_hinge_by_hand(Y, idx, margin), rel=1e-12)
    assert acc == pytest.approx(np.mean(Y.argmax(axis=0) == idx), abs=1e-15)
    assert 0 < acc < 1                                      # the accuracy is not trivially right
    assert loss != pytest.approx(_hinge_by_hand(Y, idx, 1.0), rel=1e-3)     # the margin matters here


def test_evaluate_defaults_to_cross_entropy_without_a_recorded_loss():
    X, y = _data(30)
    Y = _outputs_by_hand(X)
    idx = np.searchsorted(CLASSES, y)
    logp = Y - Y.max(axis=0) - np.log(np.exp(Y - Y.max(axis=0)).sum(axis=0))
    loss, acc = _classifier().evaluate(X, y)
    assert loss == pytest.approx(-logp[idx, np.arange(30)].mean(), rel=1e-12)
    assert acc == pytest.approx(np.mean(Y.argmax(axis=0) == idx), abs=1e-15)


def test_evaluate_refuses_a_label_it_does_not_know():
    X, y = _data(5)
    y = y.astype(object)
    y[2] = "cow"                                             # between "cat" and "dog"
    with pytest.raises(ValueError, match="cow"):
        _classifier().evaluate(X, y.astype(str))


@pytest.mark.parametrize("classes", [["cat", "cat", "dog"], ["cat", "dog", "dog"], [1, 1, 2], ["dog", "cat", "emu"]])
def test_duplicate_or_unsorted_class_names_are_refused(classes):
    with pytest.raises(ValueError, match="sorted and distinct"):
        _classifier(classes=classes)


def test_a_saved_file_with_duplicate_class_names_is_refused_as_damaged(tmp_path):
    clf = _classifier()
    path = tmp_path / "model.npz"
    io.save(str(path), clf.net, {}, x_mean=MEAN, x_scale=SCALE, classes=np.array(["cat", "dog", "dog"]))
    with pytest.raises(ValueError, match=r"model\.npz is damaged.*sorted and distinct"):
        Classifier.load(str(path), device="cpu")


@pytest.mark.parametrize("n", [D0, 8])             # N = d0: a 1-D mean broadcast along the wrong axis still runs
def test_scaling_vectors_stored_1d_load_and_predict_the_same(tmp_path, n):
    clf = _classifier({"loss": "hinge", "margin": 0.5})
    clf.save(str(tmp_path / "model.npz"))
    flat = tmp_path / "flat"
    flat.mkdir()
    io.save(str(flat / "model.npz"), clf.net, clf.meta, x_mean=MEAN.ravel(), x_scale=SCALE.ravel(), classes=CLASSES)
    X, y = _data(n)
    two, one = Classifier.load(str(tmp_path), device="cpu"), Classifier.load(str(flat), device="cpu")
    assert one.scaler.mean.shape == one.scaler.scale.shape == (D0, 1)
    np.testing.assert_array_equal(one.scaler.mean, MEAN)
    np.testing.assert_array_equal(one.scaler.scale, SCALE)
    np.testing.assert_allclose(one.outputs(X), _outputs_by_hand(X), rtol=1e-12)
    assert one.predict(X).tolist() == two.predict(X).tolist() == clf.predict(X).tolist()
    assert one.evaluate(X, y) == two.evaluate(X, y) == clf.evaluate(X, y)
    assert one.meta == {"loss": "hinge", "margin": 0.5}


def test_a_saved_classifier_round_trips(tmp_path):
    clf = _classifier({"loss": "hinge", "margin": 0.5})
    clf.save(str(tmp_path / "model.npz"))
    back = Classifier.load(str(tmp_path / "model.npz"), device="cpu")
    assert back.classes.tolist() == CLASSES.tolist() and back.meta == clf.meta
    X, y = _data(9)
    np.testing.assert_array_equal(back.outputs(X), clf.outputs(X))


@pytest.mark.parametrize("key, value, what", [("x_mean", np.zeros(D0 + 1), "x_mean"),
                                               ("x_scale", np.zeros((1, D0)), "x_scale"),
                                               ("x_scale", np.array([1.0, 0.0, 1.0]), "<= 0"),
                                               ("x_mean", np.array([1.0, np.nan, 1.0]), "x_mean")])
def test_misshapen_or_bad_scaling_is_refused(tmp_path, key, value, what):
    arrays = {"x_mean": MEAN, "x_scale": SCALE, "classes": CLASSES, key: value}
    io.save(str(tmp_path / "model.npz"), _classifier().net, {}, **arrays)
    with pytest.raises(ValueError, match=what):
        Classifier.load(str(tmp_path), device="cpu")
