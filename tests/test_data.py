"""The embedded digits, the user's .npz files, label encoding and the split."""
import numpy as np
import pytest

from gpumlp import data


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
