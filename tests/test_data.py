"""The embedded digits, the user's .npz files, label encoding and the split."""
import numpy as np
import pytest

from gpumlp import data
from gpumlp.testing import exact


def test_embedded_digits_shape_and_layout():
    X, y = data.load_digits()
    assert X.shape == (64, 1797) and y.shape == (1797,)
    assert X.min() == 0 and X.max() == 16 and set(np.unique(y)) == set(range(10))
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_embedded_digits_equal_scikit_learns_copy():
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is not installed")
    d = datasets.load_digits()
    X, y = data.load_digits()
    np.testing.assert_array_equal(X, d.data.T)
    np.testing.assert_array_equal(y, d.target)


def test_split_is_stratified_disjoint_and_deterministic():
    _, y = data.load_digits()
    train, test = data.split(y, 0.2, seed=0)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(y)
    for c in range(10):
        assert abs((y[test] == c).sum() - 0.2 * (y == c).sum()) <= 0.5
    again = data.split(y, 0.2, seed=0)
    assert np.array_equal(again[1], test) and not np.array_equal(data.split(y, 0.2, seed=1)[1], test)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        data.split(y, 1.0)


def test_encode_labels_maps_to_sorted_classes_and_refuses_unknown_ones():
    idx, classes = data.encode_labels(np.array(["cat", "dog", "cat", "emu"]))
    assert classes.tolist() == ["cat", "dog", "emu"] and idx.tolist() == [0, 1, 0, 2]
    with pytest.raises(ValueError, match=r"labels \['fox'\] are not among"):
        data.encode_labels(np.array(["fox", "cat"]), classes)
    assert data.encode_labels(np.array([3.0, 7.0]))[0].tolist() == [0, 1]
    with pytest.raises(ValueError, match="whole numbers"):
        data.encode_labels(np.array([0.5, 1.0]))


def test_load_npz_checks_orientation_and_contents(tmp_path):
    X = np.random.default_rng(0).standard_normal((3, 10))
    y = np.arange(10) % 2
    good = tmp_path / "good.npz"
    np.savez(good, X=X, y=y)
    X2, y2 = data.load_npz(good)
    np.testing.assert_array_equal(X2, X)
    np.savez(tmp_path / "rows.npz", X=X.T, y=y)
    with pytest.raises(ValueError, match=r"one sample per row.*save X\.T"):
        data.load_npz(tmp_path / "rows.npz")
    np.savez(tmp_path / "names.npz", data=X, target=y)
    with pytest.raises(ValueError, match=r"arrays named 'X'.*missing \['X', 'y'\]"):
        data.load_npz(tmp_path / "names.npz")
    bad = X.copy()
    bad[0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", X=bad, y=y)
    with pytest.raises(ValueError, match="NaN or inf"):
        data.load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "obj.npz", X=X, y=np.array([object()] * 10))
    with pytest.raises(ValueError, match="no pickle"):
        data.load_npz(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        data.load_npz(tmp_path / "junk.npz")


def test_standardizer_uses_training_statistics_and_leaves_constant_features_alone():
    X = np.array([[1.0, 3.0, 5.0], [2.0, 2.0, 2.0]])
    s = data.Standardizer.fit(X)
    Z = s(X)
    np.testing.assert_allclose(Z[0].mean(), 0, atol=1e-15)
    np.testing.assert_allclose(Z[0].std(), 1)
    np.testing.assert_array_equal(Z[1], 0)


def test_standardizer_does_not_blow_up_nearly_constant_features():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.standard_normal(1000) * 3 + 1, np.r_[16.0, np.zeros(999)]])
    s = data.Standardizer.fit(X)
    assert s.scale[0, 0] == pytest.approx(X[0].std())          # an ordinary feature: its std
    assert np.abs(s(X)[1]).max() == pytest.approx(5.0)           # a rare spike: at most 5 scales out
    with pytest.raises(ValueError, match="3 features.*trained on 2"):
        s(np.ones((3, 2)))


# -- line by line: each check of load_npz, encode_labels, split, Standardizer and prepare, with its message ---

def save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_load_digits_types():
    X, y = data.load_digits()
    assert X.dtype == np.float64 and y.dtype == np.int64 and X[:, 0].tolist()[:10] == [0, 0, 5, 13, 9, 1, 0, 0, 0, 0]
    assert y[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_load_npz_returns_float_features_and_the_labels_as_they_are(tmp_path):
    p = save(tmp_path / "a.npz", X=np.array([[1, 2, 3], [4, 5, 6]], np.int32), y=np.array(["b", "a", "b"]))
    X, y = data.load_npz(p)
    assert X.dtype == np.float64 and X.tolist() == [[1, 2, 3], [4, 5, 6]] and y.tolist() == ["b", "a", "b"]
    X, y = data.load_npz(save(tmp_path / "b.npz", X=np.array([[True, False]]), y=np.array([0, 1])))
    assert X.tolist() == [[1.0, 0.0]] and X.dtype == np.float64
    X, y = data.load_npz(save(tmp_path / "c.npz", X=np.ones((2, 1))), labels=False)      # one sample, no labels
    assert X.shape == (2, 1) and y is None
    X, y = data.load_npz(save(tmp_path / "d.npz", X=np.ones((1, 2)), y=np.array([3, 4])), labels=False)
    assert y.tolist() == [3, 4]                                # labels given anyway are returned
    X, y = data.load_npz(save(tmp_path / "e.npz", X=np.ones((3, 3)), y=np.arange(3)))   # square: d0 x N
    assert X.shape == (3, 3)


@pytest.mark.parametrize("arrays, labels, message", [
    ({"data": np.ones((2, 2))}, True, "{p} must hold arrays named 'X' (d0 × N) and 'y' (N labels); missing ['X', 'y'], "
                                      "found ['data']"),
    ({"X": np.ones((2, 2))}, True, "{p} must hold arrays named 'X' (d0 × N) and 'y' (N labels); missing ['y'], "
                                   "found ['X']"),
    ({"y": np.ones(2), "x": np.ones(2)}, False, "{p} must hold arrays named 'X' (d0 × N); missing ['X'], found "
                                                "['x', 'y']"),
    ({"X": np.ones(3), "y": np.ones(3)}, True, "X in {p} must be 2-D (d0 × N); got shape (3,)"),
    ({"X": np.ones((2, 2, 2)), "y": np.ones(2)}, True, "X in {p} must be 2-D (d0 × N); got shape (2, 2, 2)"),
    ({"X": np.ones((2, 3)), "y": np.ones((1, 3))}, True, "y in {p} must be 1-D (one label per sample); got shape "
                                                         "(1, 3)"),
    ({"X": np.ones((2, 3)), "y": np.ones((3, 1))}, False, "y in {p} must be 1-D (one label per sample); got shape "
                                                          "(3, 1)"),
    ({"X": np.ones((5, 3)), "y": np.ones(5)}, True, "X in {p} has shape (5, 3): one sample per row (N × d0), but "
                                                    "gpumlp wants one sample per column (d0 × N); save X.T instead"),
    ({"X": np.ones((2, 3)), "y": np.ones(4)}, True, "X in {p} has 3 columns (samples) but y has 4 labels"),
    ({"X": np.ones((2, 3), complex), "y": np.ones(3)}, True, "X in {p} must hold real numbers; got dtype complex128"),
    ({"X": np.array([["a", "b"]]), "y": np.ones(2)}, True, "X in {p} must hold real numbers; got dtype <U1"),
    ({"X": np.array([[1.0, np.inf]]), "y": np.ones(2)}, True, "X in {p} contains NaN or inf values"),
    ({"X": np.array([[1.0, np.nan]])}, False, "X in {p} contains NaN or inf values"),
    ({"X": np.ones((3, 0)), "y": np.ones(0)}, True, "{p} holds no samples (X has 0 columns)"),
    ({"X": np.ones((0, 4)), "y": np.ones(4)}, True, "{p} holds no features (X has 0 rows)"),
])
def test_load_npz_names_each_problem(tmp_path, arrays, labels, message):
    p = save(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=exact(message.format(p=p))):
        data.load_npz(p, labels=labels)


def test_load_npz_file_errors_are_read_npzs(tmp_path):
    with pytest.raises(ValueError, match=exact(f"cannot read {tmp_path / 'no.npz'}: there is no such file")):
        data.load_npz(tmp_path / "no.npz")
    with pytest.raises(ValueError, match=exact(f"{tmp_path} is a folder, not a .npz file")):
        data.load_npz(tmp_path)


def test_encode_labels_line_by_line():
    idx, classes = data.encode_labels([3.0, 7.0, 3.0])
    assert idx.tolist() == [0, 1, 0] and idx.dtype == np.int64 and classes.dtype == np.int64
    assert classes.tolist() == [3, 7]
    idx, classes = data.encode_labels(np.array([5, 1, 9]), classes=[1, 5, 9, 12])
    assert idx.tolist() == [1, 0, 2] and classes.tolist() == [1, 5, 9, 12] and isinstance(classes, np.ndarray)
    assert data.encode_labels([0, 0], [0])[0].tolist() == [0, 0]                 # a single class is fine here
    assert data.encode_labels(np.array(["x"]))[1].tolist() == ["x"]
    for y, message in (([[1, 2]], "labels must be 1-D, one label per sample; got shape (1, 2)"),
                       ([1.5, 2.0], "labels must be whole numbers or strings; got non-integer floats"),
                       ([np.inf, 1.0], "labels must be whole numbers or strings; got non-integer floats"),
                       ([np.nan, 1.0], "labels must be whole numbers or strings; got non-integer floats")):
        with pytest.raises(ValueError, match=exact(message)):
            data.encode_labels(y)
    for classes, message in (([], "classes must be a non-empty 1-D array of the class labels; got shape (0,)"),
                             ([[1, 2]], "classes must be a non-empty 1-D array of the class labels; got shape (1, 2)"),
                             ([2, 1], "classes must be sorted and distinct; got [2, 1]"),
                             ([1, 3, 2], "classes must be sorted and distinct; got [1, 3, 2]"),
                             ([1, 1, 2], "classes must be sorted and distinct; got [1, 1, 2]"),
                             (list(range(30, 0, -1)), f"classes must be sorted and distinct; got "
                                                      f"{list(range(30, 10, -1))}")):
        with pytest.raises(ValueError, match=exact(message)):
            data.encode_labels([1], classes)
    for y, unknown in (([9, 1], [9]), ([0, 3], [0]), ([2, 3, 2, 1], [2]), ([9, 0, 2, 9], [0, 2, 9])):
        with pytest.raises(ValueError, match=exact(f"labels {unknown} are not among the model's classes [1, 3]")):
            data.encode_labels(y, [1, 3])
    many = list(range(100, 130))
    with pytest.raises(ValueError, match=exact(f"labels {many[:10]} are not among the model's classes "
                                               f"{list(range(25))[:20]}")):
        data.encode_labels(many, list(range(25)))


def test_split_holds_out_the_same_samples_every_time_and_names_an_empty_side():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 2, 2, 2, 2])
    train, test = data.split(y, 0.4, 0)
    assert train.tolist() == [1, 4, 5, 6, 8, 9, 12, 13, 14] and test.tolist() == [0, 2, 3, 7, 10, 11]
    assert data.split(y, 0.4, 1)[1].tolist() == [1, 4, 7, 8, 10, 12]
    assert data.split(y, 0.4)[1].tolist() == test.tolist()                       # seed 0 by default
    assert [s.tolist() for s in data.split(y)] == [s.tolist() for s in data.split(y, 0.2, 0)]   # and 0.2
    assert data.split(list(y), 0.2)[1].tolist() == data.split(y, 0.2)[1].tolist()
    assert [len(s) for s in data.split([0, 0, 1], 0.6)] == [1, 2]                 # one training sample: fine
    assert [len(s) for s in data.split([0, 0, 0, 1], 0.2)] == [3, 1]              # one test sample: fine
    for fraction in (0, 0.0, 1, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=exact(f"test_fraction must lie strictly between 0 and 1; got "
                                                   f"{fraction}")):
            data.split(y, fraction)
    with pytest.raises(ValueError, match=exact("a 0.2 test split of 3 samples leaves an empty test side: it holds "
                                               "out that share of each class, and the largest class has 2 samples")):
        data.split([0, 0, 1], 0.2)
    with pytest.raises(ValueError, match=exact("a 0.9 test split of 2 samples leaves an empty training side: it holds "
                                               "out that share of each class, and the largest class has 1 sample")):
        data.split(["a", "b"], 0.9)


def test_fingerprint_depends_on_the_values_the_dtype_and_the_shape():
    X, y = np.arange(6.0).reshape(2, 3), np.array([1, 2, 3])
    assert data.fingerprint(X, y) == "1d40415d609afdef"
    assert data.fingerprint(X.reshape(3, 2), y) == "5f1f54fcf45e351c"
    assert data.fingerprint(X.T.copy().T, y) == data.fingerprint(np.asfortranarray(X), y) == "1d40415d609afdef"
    assert len({data.fingerprint(X, y), data.fingerprint(X.astype(np.float32), y), data.fingerprint(X, y + 1),
                data.fingerprint(X, y.astype(np.int32)), data.fingerprint(X + 1, y)}) == 5


def test_standardizer_fit_exactly():
    X = np.array([[1.0, 3.0, 5.0, 7.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 8.0], [0.0, 2e-12, 0.0, 2e-12],
                  [0.0, 2e-11, 0.0, 2e-11]])
    s = data.Standardizer.fit(X)
    assert s.mean.shape == (5, 1) and s.scale.shape == (5, 1)
    assert s.mean.ravel().tolist() == [4.0, 2.0, 2.0, 1e-12, 1e-11]
    assert s.scale.ravel().tolist() == [np.sqrt(5.0), 1.0, np.sqrt(12.0), 1.0, 1e-11]   # std; 1 where ~constant
    s = data.Standardizer.fit(X[:3], max_z=1.0)            # no value more than max_z scales out
    assert s.scale.ravel().tolist() == [3.0, 1.0, 6.0]
    s = data.Standardizer.fit(X[2:3], max_z=1.5)
    assert s.scale.ravel().tolist() == [4.0]               # max |x - mean| / 1.5 = 4 > std
    spike = np.zeros((1, 100))
    spike[0, 0] = 16.0
    s = data.Standardizer.fit(spike)                       # max_z is 5 by default: 15.84 / 5 > std
    assert s.scale.tolist() == [[(16.0 - 0.16) / 5]] and np.abs(s(spike)).max() == pytest.approx(5.0)
    s = data.Standardizer.fit([[1, 3]])
    assert s.mean.dtype == np.float64 and s.scale.tolist() == [[1.0]]
    for X, largest in (([[np.inf, 1.0]], "inf"), ([[1e308, 1e308, -1e308]], "1e+308")):
        with pytest.raises(ValueError, match=exact(f"X's values are too large to centre and scale in float64 (the "
                                                   f"largest is {largest}); divide X by a constant first")):
            data.Standardizer.fit(X)


def test_standardizer_scales_and_checks_what_fits_the_dtype():
    s = data.Standardizer([[1], [2]], [[2], [4]])
    assert s.mean.dtype == np.float64 and s.scale.dtype == np.float64
    assert s(np.array([[3.0, 5.0], [2.0, 10.0]])).tolist() == [[1.0, 2.0], [0.0, 2.0]]
    with pytest.raises(ValueError, match=exact("X has 3 features (rows); the model was trained on 2")):
        s(np.ones((3, 2)))
    assert s.within(np.ones((2, 0)), "float32").shape == (2, 0)
    biggest = float(np.finfo(np.float32).max)
    unit = data.Standardizer(np.zeros((1, 1)), np.ones((1, 1)))
    assert unit.within(np.array([[np.nextafter(biggest, 0)]]), "float32").tolist() == [[np.nextafter(biggest, 0)]]
    for X, dtype, shown in (([[biggest]], "float32", "3.4e+38"), ([[1e45]], np.float32, "1e+45"),
                            ([[np.nan, 1.0]], "float64", "nan"), ([[-np.inf]], "float64", "inf")):
        with pytest.raises(ValueError, match=exact(f"X's values lie too far outside the training data's range: "
                                                   f"scaled, some exceed what {np.dtype(dtype).name} holds (the "
                                                   f"largest raw value is {shown})")):
            unit.within(np.array(X), dtype)
    with pytest.raises(ValueError, match=exact("new data lie too far outside the training data's range: scaled, some "
                                               "exceed what float32 holds (the largest raw value is 1e+45)")):
        unit.within(np.array([[1e45]]), "float32", "new data")
    assert unit.within(np.array([[1e45]]), "float64").tolist() == [[1e45]]


def test_about_names_the_file_in_value_errors_only():
    with pytest.raises(ValueError, match=exact("f.npz: bad")):
        with data._About("f.npz"):
            raise ValueError("bad")
    with pytest.raises(ValueError, match=exact("the file f.npz is bad")):     # already named: left as it is
        with data._About("f.npz"):
            raise ValueError("the file f.npz is bad")
    with pytest.raises(ValueError, match=exact("bad")):                       # the embedded digits: no file
        with data._About("digits"):
            raise ValueError("bad")
    with pytest.raises(TypeError, match=exact("bad")):
        with data._About("f.npz"):
            raise TypeError("bad")
    with data._About("f.npz") as about:
        pass
    assert about.source == "f.npz"


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(1)
    y = np.array(["cat", "dog"] * 10)
    X = rng.standard_normal((3, 20))
    return save(tmp_path / "tiny.npz", X=X, y=y), X, y


def test_prepare_splits_a_file_and_records_how(tiny, tmp_path, monkeypatch):
    path, X, y = tiny
    monkeypatch.chdir(tmp_path)
    p = data.prepare("tiny.npz", 0.25)
    idx = (y == "dog").astype(int)
    train, test = data.split(idx, 0.25, 0)
    assert p.source == str(path) and p.classes.tolist() == ["cat", "dog"]
    assert np.array_equal(p.X_train, X[:, train]) and np.array_equal(p.X_test, X[:, test])
    assert p.y_train.tolist() == idx[train].tolist() and p.y_test.tolist() == idx[test].tolist()
    assert p.record == {"data": str(path), "data_sha256": data.fingerprint(X, y), "test_fraction": 0.25,
                        "split_seed": 0, "split_version": 2}
    fitted = data.Standardizer.fit(X[:, train])
    assert np.array_equal(p.scaler.mean, fitted.mean) and np.array_equal(p.scaler.scale, fitted.scale)
    assert data.prepare(path).record["test_fraction"] == 0.2
    q = data.prepare(path, 1 / 2)
    assert q.record["test_fraction"] == 0.5 and type(q.record["test_fraction"]) is float and q.X_test.shape == (3, 10)
    d = data.prepare("digits")
    assert d.source == "digits" and d.X_test.shape == (64, 359) and d.record["data"] == "digits"


def test_prepare_refuses_bad_fractions_before_reading_the_file(tiny):
    path, _, _ = tiny
    for fraction in (0, 1, 2):
        with pytest.raises(ValueError, match=exact(f"test_fraction must lie strictly between 0 and 1; got "
                                                   f"{float(fraction)}")):
            data.prepare(path, fraction)
    with pytest.raises(ValueError, match=exact("give a test fraction or a test file, not both: a test file is the "
                                               "whole test set")):
        data.prepare(path, 0.2, path)
    with pytest.raises(ValueError, match=exact("give a test fraction or a test file, not both: a test file is the "
                                               "whole test set")):
        data.prepare(path, 0.2, "no such file")


def test_prepare_with_a_test_file_uses_the_training_classes(tiny, tmp_path):
    path, X, y = tiny
    test = save(tmp_path / "test.npz", X=X[:, :4] + 1.0, y=np.array(["dog"] * 4))
    p = data.prepare(path, test_file=test)
    assert np.array_equal(p.X_train, X) and p.y_train.tolist() == (y == "dog").astype(int).tolist()
    assert np.array_equal(p.X_test, X[:, :4] + 1.0) and p.y_test.tolist() == [1, 1, 1, 1]
    assert p.classes.tolist() == ["cat", "dog"] and p.source == str(path)
    assert p.record == {"data": str(path), "data_sha256": data.fingerprint(X, y), "test_fraction": None,
                        "split_seed": 0, "split_version": 2, "test_data": str(test),
                        "test_data_sha256": data.fingerprint(X[:, :4] + 1.0, np.array(["dog"] * 4))}
    assert np.array_equal(p.scaler.mean, data.Standardizer.fit(X).mean)
    wide = save(tmp_path / "wide.npz", X=np.ones((4, 2)), y=np.array(["cat", "dog"]))
    with pytest.raises(ValueError, match=exact(f"{wide}: X has 4 features (rows) but the training data {path} has 3")):
        data.prepare(path, test_file=wide)
    far = save(tmp_path / "far.npz", X=np.array([[0.0, 1e45], [0.0, 0.0], [0.0, 0.0]]), y=np.array(["cat", "dog"]))
    with pytest.raises(ValueError, match=exact(f"{far}: some test values lie too far outside the training data's "
                                               "range: scaled, some exceed what float32 holds (the largest raw value "
                                               "is 1e+45)")):
        data.prepare(path, test_file=far, dtype="float32")        # named after the test file, not the data
    emu = save(tmp_path / "emu.npz", X=np.ones((3, 2)), y=np.array(["cat", "emu"]))
    with pytest.raises(ValueError, match=exact(f"{emu}: labels ['emu'] are not among the model's classes "
                                               "['cat', 'dog']")):
        data.prepare(path, test_file=emu)
    with pytest.raises(ValueError, match=exact(f"cannot read {tmp_path / 'gone.npz'}: there is no such file")):
        data.prepare(path, test_file=tmp_path / "gone.npz")


def test_prepare_names_the_data_in_its_errors_but_not_the_digits(tiny, tmp_path):
    path, X, y = tiny
    one = save(tmp_path / "one.npz", X=X, y=np.array(["cat"] * 20))
    with pytest.raises(ValueError, match=exact(f"{one} has 1 class in y; classification needs at least 2")):
        data.prepare(one)
    few = save(tmp_path / "few.npz", X=X[:, :3], y=y[:3])
    with pytest.raises(ValueError, match=exact(f"{few}: a 0.2 test split of 3 samples leaves an empty test side: it "
                                               "holds out that share of each class, and the largest class has 2 "
                                               "samples")):
        data.prepare(few)
    with pytest.raises(ValueError, match=exact("labels [5, 6, 7, 8, 9] are not among the model's classes "
                                               "[0, 1, 2, 3, 4]")):
        data.prepare(None, classes=np.arange(5))
    with pytest.raises(ValueError, match=exact(f"{path}: labels ['cat', 'dog'] are not among the model's classes "
                                               "['ant', 'bee']")):
        data.prepare(path, classes=np.array(["ant", "bee"]))


def test_prepare_keeps_given_classes_and_scaling_and_checks_the_test_values(tiny, tmp_path):
    path, X, y = tiny
    scaler = data.Standardizer(np.zeros((3, 1)), np.full((3, 1), 3.0))
    p = data.prepare(path, classes=np.array(["ant", "cat", "dog"]), scaler=scaler)
    assert p.scaler is scaler and p.classes.tolist() == ["ant", "cat", "dog"]
    assert p.y_train.tolist() == [1 + int(v == "dog") for v in y[data.split((y == "dog").astype(int), 0.2)[0]]]
    _, test = data.split((y == "dog").astype(int), 0.2, 0)
    far = X.copy()
    far[1, test[0]] = 1e45
    farfile = save(tmp_path / "far.npz", X=far, y=y)
    with pytest.raises(ValueError, match=exact(f"{farfile}: some test values lie too far outside the training data's "
                                               "range: scaled, some exceed what float32 holds (the largest raw value "
                                               "is 1e+45)")):
        data.prepare(farfile, dtype="float32")
    assert data.prepare(farfile).X_test[1, 0] == 1e45                      # no dtype: not checked
    assert data.prepare(farfile, dtype="float64").X_test[1, 0] == 1e45
    Xtr, ytr, Xte, yte = p.scaled()
    assert np.array_equal(Xtr, p.X_train / 3.0) and np.array_equal(Xte, p.X_test / 3.0)
    assert ytr is p.y_train and yte is p.y_test
