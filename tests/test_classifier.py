"""gpumlp.Classifier beyond the CLI's default runs: evaluate with another loss and margin
against a hand computation, class names that must be sorted and distinct, and scaling
vectors stored 1-D in model.npz."""
import numpy as np
import pytest

from gpumlp import MLP, Classifier, io
from gpumlp.data import Standardizer
from gpumlp.testing import exact, strict_backend

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


# -- construction, one check at a time --------------------------------------------------------

def _net(sizes=(D0, H, K), dtype="float64"):
    net = MLP(list(sizes), activation="tanh", dtype=dtype, device="cpu", seed=0)
    if tuple(sizes) == (D0, H, K):
        net.set_params([W1, W2], [B1, B2])
    return net


def test_the_classifier_keeps_its_parts_and_a_copy_of_meta():
    meta = {"loss": "hinge"}
    scaler = Standardizer(MEAN, SCALE)
    clf = Classifier(_net(), scaler, ["cat", "dog", "emu"], meta)
    meta["loss"] = "ce"
    assert clf.meta == {"loss": "hinge"} and clf.scaler is scaler
    assert type(clf.classes) is np.ndarray and clf.classes.tolist() == ["cat", "dog", "emu"]
    assert Classifier(_net(), scaler, CLASSES).meta == {}


@pytest.mark.parametrize("classes, shape", [(["cat", "dog"], "(2,)"), ([["cat", "dog", "emu"]], "(1, 3)"),
                                            (["a", "b", "c", "d"], "(4,)")])
def test_classes_of_the_wrong_shape_are_refused(classes, shape):
    with pytest.raises(ValueError, match=exact(f"classes must name the model's 3 outputs; got {shape}")):
        Classifier(_net(), Standardizer(MEAN, SCALE), classes)


def test_two_classes_out_of_order_are_refused_and_one_class_is_fine():
    scaler = Standardizer(MEAN, SCALE)
    with pytest.raises(ValueError, match=exact(
            "classes must be sorted and distinct (output j names the j-th smallest label, as np.unique gives "
            "them); got ['dog', 'cat']")):
        Classifier(_net((D0, 2)), scaler, ["dog", "cat"])
    assert Classifier(_net((D0, 1)), scaler, ["only"]).classes.tolist() == ["only"]


def test_unsorted_classes_are_named_ten_at_most():
    classes = list(range(12))[::-1]
    with pytest.raises(ValueError, match=exact(
            "classes must be sorted and distinct (output j names the j-th smallest label, as np.unique gives "
            "them); got [11, 10, 9, 8, 7, 6, 5, 4, 3, 2]")):
        Classifier(_net((D0, 12)), Standardizer(MEAN, SCALE), classes)


def test_a_scaler_for_other_features_is_refused():
    with pytest.raises(ValueError, match=exact("the scaler is for 4 features; the model takes 3")):
        Classifier(_net(), Standardizer(np.zeros((4, 1)), np.ones((4, 1))), CLASSES)


def test_repr_names_the_net_and_ten_classes_at_most():
    clf = _classifier()
    assert repr(clf) == f"Classifier({clf.net!r}, classes=['cat', 'dog', 'emu'])"
    many = Classifier(_net((D0, 12)), Standardizer(MEAN, SCALE), list(range(12)))
    assert repr(many) == f"Classifier({many.net!r}, classes=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9])"


# -- from_arrays: what a file must hold ---------------------------------------------------------

PATH = "runs/a/model.npz"


def _arrays(**change):
    arrays = {"x_mean": MEAN, "x_scale": SCALE, "classes": CLASSES}
    arrays.update(change)
    return {k: v for k, v in arrays.items() if v is not None}


def test_from_arrays_takes_the_scaling_as_a_column_and_the_meta():
    clf = Classifier.from_arrays(_net(), _arrays(x_mean=MEAN.ravel()), {"loss": "hinge", "margin": 0.5}, PATH)
    assert clf.scaler.mean.shape == clf.scaler.scale.shape == (D0, 1)
    np.testing.assert_array_equal(clf.scaler.mean, MEAN)
    np.testing.assert_array_equal(clf.scaler.scale, SCALE)
    assert clf.classes.tolist() == CLASSES.tolist() and clf.meta == {"loss": "hinge", "margin": 0.5}
    X, _ = _data(4)
    np.testing.assert_allclose(clf.outputs(X), _outputs_by_hand(X), rtol=1e-12)


@pytest.mark.parametrize("drop, named", [({"classes": None}, "['classes']"),
                                         ({"x_mean": None, "x_scale": None}, "['x_mean', 'x_scale']"),
                                         ({"x_scale": None, "classes": None}, "['classes', 'x_scale']")])
def test_a_file_without_its_scaling_or_classes_is_named(drop, named):
    with pytest.raises(ValueError, match=exact(
            f"{PATH} lacks {named}: it holds a network without its scaling and class names "
            "(save one with Classifier.save or gpumlp train --out)")):
        Classifier.from_arrays(_net(), _arrays(**drop), {}, PATH)


@pytest.mark.parametrize("key, value, got", [
    ("x_mean", np.zeros(D0 + 1), "float64 of shape (4,)"),
    ("x_scale", np.ones((1, D0)), "float64 of shape (1, 3)"),
    ("x_scale", np.ones((D0, 2)), "float64 of shape (3, 2)"),
    ("x_mean", np.zeros(D0, dtype=np.int64), "int64 of shape (3,)"),
    ("x_scale", np.ones(D0, dtype=bool), "bool of shape (3,)"),
    ("x_mean", np.array([0.0, np.inf, 0.0]), "float64 of shape (3,)"),
    ("x_scale", np.array([[1.0], [np.nan], [1.0]]), "float64 of shape (3, 1)"),
])
def test_damaged_scaling_is_named_with_what_it_holds(key, value, got):
    with pytest.raises(ValueError, match=exact(
            f"{PATH} is damaged: its {key} must be {D0} finite numbers for the model's {D0} inputs; got {got}")):
        Classifier.from_arrays(_net(), _arrays(**{key: value}), {}, PATH)


@pytest.mark.parametrize("scale", [[1.0, 0.0, 2.0], [1.0, -2.0, 2.0]])
def test_a_scale_that_is_not_positive_is_damage(scale):
    with pytest.raises(ValueError, match=exact(f"{PATH} is damaged: its x_scale has values <= 0")):
        Classifier.from_arrays(_net(), _arrays(x_scale=np.array(scale)), {}, PATH)


def test_float32_scaling_is_taken():
    clf = Classifier.from_arrays(_net(), _arrays(x_mean=MEAN.astype(np.float32)), {}, PATH)
    np.testing.assert_array_equal(clf.scaler.mean, MEAN.astype(np.float32))


def test_classes_a_file_gets_wrong_are_damage_naming_the_file():
    with pytest.raises(ValueError, match=exact(
            f"{PATH} is damaged: classes must name the model's 3 outputs; got (2,)")):
        Classifier.from_arrays(_net(), _arrays(classes=np.array(["a", "b"])), {}, PATH)


def test_load_names_the_file_it_read(tmp_path):
    path = tmp_path / "model.npz"
    io.save(str(path), _net(), {}, x_mean=MEAN, x_scale=SCALE)
    with pytest.raises(ValueError, match=exact(
            f"{path} lacks ['classes']: it holds a network without its scaling and class names "
            "(save one with Classifier.save or gpumlp train --out)")):
        Classifier.load(tmp_path, device="cpu")


def test_load_puts_the_network_on_the_device_asked_for(tmp_path):
    _classifier({"loss": "ce"}).save(str(tmp_path / "model.npz"))
    device = strict_backend()
    clf = Classifier.load(tmp_path, device=device)
    assert clf.net.backend is device
    X, y = _data(6)
    assert clf.evaluate(X, y) == pytest.approx(_classifier().evaluate(X, y), rel=1e-12)


@pytest.mark.parametrize("batch_size", [4096, 4, 3])
def test_predict_and_outputs_on_an_array_api_device_with_a_short_last_batch(batch_size):
    """N = 6 columns, fewer than a batch or not a whole number of batches: each batch's slice
    must stop at N (the array API leaves a slice past the end unspecified, and the strict
    backend refuses it, as a device library may)."""
    X, _ = _data(6)
    clf = _classifier()
    strict = Classifier(_net(), Standardizer(MEAN, SCALE), CLASSES)
    strict.net = MLP([D0, H, K], activation="tanh", dtype="float64", device=strict_backend(), seed=0)
    strict.net.set_params([W1, W2], [B1, B2])
    assert strict.predict(X, batch_size).tolist() == clf.predict(X).tolist()
    np.testing.assert_allclose(strict.outputs(X, batch_size), _outputs_by_hand(X), rtol=1e-12)


def test_load_defaults_to_the_automatic_device(tmp_path):
    _classifier({"loss": "ce"}).save(str(tmp_path / "model.npz"))
    clf = Classifier.load(tmp_path)
    X, _ = _data(6)
    assert clf.predict(X).tolist() == _classifier().predict(X).tolist()


# -- features, outputs, predictions ------------------------------------------------------------

@pytest.mark.parametrize("shape, hint", [((5, D0), " — one sample per row? pass X.T"), ((D0,), ""), ((4, 5), ""),
                                         ((D0, 2, 1), "")])
def test_features_of_the_wrong_shape_are_refused_with_a_hint_for_rows(shape, hint):
    with pytest.raises(ValueError, match=exact(
            f"X must be {D0} × N (one sample per column); got shape {shape}{hint}")):
        _classifier().predict(np.zeros(shape))


def test_a_float32_model_refuses_features_that_overflow_float32_once_scaled():
    net = _net(dtype="float32")
    clf = Classifier(net, Standardizer(MEAN, SCALE), CLASSES)
    X = np.array([[1e39], [0.0], [0.0]])                       # finite in float64, not in float32
    with pytest.raises(ValueError, match=exact(
            "X's values lie too far outside the training data's range: scaled, some exceed what float32 holds "
            "(the largest raw value is 1e+39)")):
        clf.outputs(X)


def test_integer_features_are_scaled_as_floats():
    X = np.array([[10, 12], [-5, -4], [0, 1]])
    np.testing.assert_allclose(_classifier().outputs(X), _outputs_by_hand(X.astype(float)), rtol=1e-12)


def test_outputs_and_predict_pass_their_batch_size_on(monkeypatch):
    clf = _classifier()
    seen = []
    monkeypatch.setattr(clf.net, "outputs", lambda Z, batch_size: seen.append(("outputs", batch_size)) or Z)
    monkeypatch.setattr(clf.net, "predict", lambda Z, batch_size: seen.append(("predict", batch_size)) or
                        np.zeros(Z.shape[1], dtype=np.int64))
    X, _ = _data(2)
    clf.outputs(X)
    clf.outputs(X, 7)
    clf.predict(X)
    clf.predict(X, batch_size=5)
    assert seen == [("outputs", 4096), ("outputs", 7), ("predict", 4096), ("predict", 5)]


def test_the_hinge_without_a_recorded_margin_uses_margin_1():
    X, y = _data(25)
    Y = _outputs_by_hand(X)
    loss, _ = _classifier({"loss": "hinge"}).evaluate(X, y)
    assert loss == pytest.approx(_hinge_by_hand(Y, np.searchsorted(CLASSES, y), 1.0), rel=1e-12)
