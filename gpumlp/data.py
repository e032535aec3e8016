"""Data sets on the host: the embedded digits, the user's own .npz, splits and scaling.

Everything here returns gpumlp's layout: X is d0 × N (one sample per column),
y holds N integer class indices.
"""
from __future__ import annotations

import hashlib
import os
from importlib import resources
from typing import Any, cast

import numpy as np

__all__ = ["load_digits", "load_npz", "encode_labels", "split", "Standardizer", "fingerprint", "prepare",
           "Prepared", "SPLIT_SEED", "SPLIT_VERSION"]

SPLIT_SEED = 0             # the held-out split's seed, the same for every run
SPLIT_VERSION = 2          # 2: the split depends only on the sample order and the seed (gpumlp 0.3)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8×8 handwritten digits shipped inside gpumlp: X (64 × 1797, float64, 0..16), y (1797,)."""
    with resources.files("gpumlp").joinpath("datasets/digits.npz").open("rb") as f, \
            np.load(f, allow_pickle=False) as z:
        return z["images"].T.astype(np.float64), z["labels"].astype(np.int64)


def load_npz(path: str | os.PathLike, labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The user's data set: a .npz with ``X`` (d0 × N, one sample per column) and ``y`` (N labels).

    Labels may be integers or strings; they are returned as they are (see
    :func:`encode_labels`).  With ``labels=False`` (prediction) ``y`` may be absent, and
    is None then.  Files are read without pickle.

    A file with one sample per row is recognised when its number of rows equals the
    number of labels, or (without labels) when it does not fit the model; a square X
    (N = d0) cannot be told from the right layout and is taken as d0 × N.
    """
    from .io import read_npz

    def take(z):
        missing = ({"X", "y"} if labels else {"X"}) - set(z.files)
        if missing:
            raise ValueError(f"{path} must hold arrays named 'X' (d0 × N)" + (" and 'y' (N labels)" if labels else "")
                             + f"; missing {sorted(missing)}, found {sorted(z.files)}")
        return z["X"], (z["y"] if "y" in z.files else None)
    X, y = read_npz(path, ".npz file", take)
    if X.ndim != 2:
        raise ValueError(f"X in {path} must be 2-D (d0 × N); got shape {X.shape}")
    if y is not None and y.ndim != 1:
        raise ValueError(f"y in {path} must be 1-D (one label per sample); got shape {y.shape}")
    if y is not None and X.shape[1] != y.shape[0]:
        if X.shape[0] == y.shape[0]:
            raise ValueError(f"X in {path} has shape {X.shape}: one sample per row (N × d0), but gpumlp "
                             f"wants one sample per column (d0 × N); save X.T instead")
        raise ValueError(f"X in {path} has {X.shape[1]} columns (samples) but y has {y.shape[0]} labels")
    if not np.isdtype(X.dtype, ("real floating", "integral", "bool")):
        raise ValueError(f"X in {path} must hold real numbers; got dtype {X.dtype}")
    if not np.isfinite(X).all():
        raise ValueError(f"X in {path} contains NaN or inf values")
    if X.shape[1] == 0:
        raise ValueError(f"{path} holds no samples (X has 0 columns)")
    if X.shape[0] == 0:
        raise ValueError(f"{path} holds no features (X has 0 rows)")
    return X.astype(np.float64), y


def encode_labels(y: Any, classes: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Class indices 0..K-1 for labels ``y``; ``classes`` (sorted) defaults to the labels seen.

    A label not in ``classes`` is an error, never a silent wrong index.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, one label per sample; got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise ValueError("labels must be whole numbers or strings; got non-integer floats")
        y = y.astype(np.int64)
    if classes is None:
        classes = np.unique(y)
    classes = np.asarray(classes)
    if classes.ndim != 1 or len(classes) == 0:
        raise ValueError(f"classes must be a non-empty 1-D array of the class labels; got shape {classes.shape}")
    if len(classes) > 1 and not np.all(classes[:-1] < classes[1:]):
        raise ValueError(f"classes must be sorted and distinct; got {classes[:20].tolist()}")
    idx = np.searchsorted(classes, y)
    unknown = (idx >= len(classes)) | (classes[np.minimum(idx, len(classes) - 1)] != y)
    if unknown.any():
        raise ValueError(f"labels {np.unique(y[unknown])[:10].tolist()} are not among the model's "
                         f"classes {classes[:20].tolist()}")
    return idx.astype(np.int64), classes


def split(y: Any, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices: the same fraction of every class is held out.

    Deterministic for a given ``seed``, so a saved model can be scored again on
    exactly its held-out samples.  It depends only on the order of the samples, which
    of them share a class, and the seed: the same labels spelled as integers or as
    strings hold out the same samples.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    y = np.asarray(y)
    order = np.random.default_rng(seed).permutation(len(y))   # one draw over the samples:
    trains, tests = [], []                                     # the classes' names play no part
    for c in np.unique(y):
        idx = order[y[order] == c]                             # class c's samples, in that order
        n_test = int(round(test_fraction * len(idx)))
        tests.append(idx[:n_test])
        trains.append(idx[n_test:])
    train, test = np.sort(np.concatenate(trains)), np.sort(np.concatenate(tests))
    if len(train) == 0 or len(test) == 0:
        largest = int(np.max(np.unique(y, return_counts=True)[1]))
        raise ValueError(f"a {test_fraction} test split of {len(y)} samples leaves an empty "
                         f"{'test' if len(test) == 0 else 'training'} side: it holds out that share of each "
                         f"class, and the largest class has {largest} sample{'s' if largest != 1 else ''}")
    return train, test


class Standardizer:
    """Per-feature (per-row) centring and scaling, fitted on the training columns only.

    The scale of feature j is its standard deviation, raised where needed so that
    no training value lands more than ``max_z`` scales from the mean: a feature
    that is nearly constant (the corner pixels of the digits, say) is not blown up
    into huge outliers that would wreck the first layer.
    """

    def __init__(self, mean: Any, scale: Any) -> None:
        self.mean, self.scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)

    @classmethod
    def fit(cls, X: Any, max_z: float = 5.0) -> Standardizer:
        X = np.asarray(X, np.float64)
        try:
            with np.errstate(over="raise", invalid="raise"):
                mean = X.mean(axis=1, keepdims=True)
                spread = np.abs(X - mean).max(axis=1, keepdims=True) / max_z
                scale = np.maximum(X.std(axis=1, keepdims=True), spread)
        except FloatingPointError:
            raise ValueError(f"X's values are too large to centre and scale in float64 (the largest is "
                             f"{np.abs(X).max():.3g}); divide X by a constant first") from None
        return cls(mean, np.where(scale > 1e-12, scale, 1.0))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if X.shape[0] != self.mean.shape[0]:
            raise ValueError(f"X has {X.shape[0]} features (rows); the model was trained on {self.mean.shape[0]}")
        return (X - self.mean) / self.scale

    def within(self, X: np.ndarray, dtype: Any, what: str = "X's values") -> np.ndarray:
        """X scaled, after checking that the result is finite in ``dtype``: a value far outside
        the training range can overflow float32 once scaled (``what`` names it in the error)."""
        Z = self(X)
        if Z.size and (not np.isfinite(Z).all() or np.abs(Z).max() >= np.finfo(dtype).max):
            raise ValueError(f"{what} lie too far outside the training data's range: scaled, some exceed what "
                             f"{np.dtype(dtype).name} holds (the largest raw value is {np.abs(X).max():.3g})")
        return Z


def fingerprint(X: Any, y: Any) -> str:
    """A short SHA-256 of a data set, to tell whether a model is scored on its own data."""
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(X), np.ascontiguousarray(y)):
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


class Prepared:
    """What :func:`prepare` returns: the training and test columns (``X_train``, ``X_test``,
    raw, d0 × N) and their class indices (``y_train``, ``y_test``), the sorted ``classes``,
    the ``scaler`` fitted on the training columns only, the data's ``source`` name
    ("digits" or the file's absolute path) and ``record``: what a run saves to find the same
    data and split again (data, data_sha256, test_fraction, split_seed, split_version, and
    test_data, test_data_sha256 when the test data is a file of its own)."""

    def __init__(self, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 classes: np.ndarray, scaler: Standardizer, source: str, record: dict[str, Any]) -> None:
        self.X_train, self.y_train, self.X_test, self.y_test = X_train, y_train, X_test, y_test
        self.classes, self.scaler, self.source, self.record = classes, scaler, source, record

    def scaled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(scaler(X_train), y_train, scaler(X_test), y_test)``."""
        return self.scaler(self.X_train), self.y_train, self.scaler(self.X_test), self.y_test


class _About:
    """Errors raised while preparing data name the data file."""

    def __init__(self, source):
        self.source = source

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if kind is ValueError and self.source != "digits" and self.source not in str(e):
            raise ValueError(f"{self.source}: {e}") from None
        return False


def _read(source):
    y: np.ndarray | None
    if source is None or source == "digits":
        X, y = load_digits()
        return X, y, "digits"
    X, y = load_npz(source)
    return X, y, os.path.abspath(source)


def prepare(source: Any = None, test_fraction: float | None = None, test_file: Any = None, classes: Any = None,
            scaler: Standardizer | None = None, dtype: Any = None) -> Prepared:
    """A classification data set as ``gpumlp train`` uses it (see :class:`Prepared`).

    ``source`` is a .npz path (``X`` d0 × N, ``y``) or None (or "digits") for the embedded
    digits.  Its test samples are either the stratified ``test_fraction`` of every class
    (default 0.2), held out with the fixed seed ``SPLIT_SEED``, or, with ``test_file``, all
    of that file's samples while every sample of ``source`` trains; not both.  ``classes``
    (a run's saved classes) fixes the label encoding, and ``scaler`` (a run's saved
    scaling) replaces the one fitted on the training columns.  With ``dtype`` the scaled
    test data is checked to fit it.  Errors name the file they are about.
    """
    if test_file is not None and test_fraction is not None:
        raise ValueError("give a test fraction or a test file, not both: a test file is the whole test set")
    if test_file is None:
        test_fraction = 0.2 if test_fraction is None else float(test_fraction)
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    X, y, name = _read(source)
    record: dict[str, Any] = {"data": name, "data_sha256": fingerprint(X, y), "test_fraction": test_fraction,
                              "split_seed": SPLIT_SEED, "split_version": SPLIT_VERSION}
    with _About(name):
        idx, classes = encode_labels(y, classes)
        if len(classes) < 2:
            raise ValueError(f"{name} has {len(classes)} class{'es' if len(classes) != 1 else ''} in y; "
                             "classification needs at least 2")
        if test_file is None:
            train, test = split(idx, cast(float, test_fraction), SPLIT_SEED)      # set above when no test_file
            Xtr, ytr, Xte, yte = X[:, train], idx[train], X[:, test], idx[test]
        else:
            Xtr, ytr = X, idx
        if scaler is None:
            scaler = Standardizer.fit(Xtr)
    if test_file is not None:
        Xte, labels, test_name = _read(test_file)
        record.update(test_data=test_name, test_data_sha256=fingerprint(Xte, labels))
        with _About(test_name):
            if Xte.shape[0] != X.shape[0]:
                raise ValueError(f"X has {Xte.shape[0]} features (rows) but the training data {name} has "
                                 f"{X.shape[0]}")
            yte, _ = encode_labels(labels, classes)
    if dtype is not None:
        with _About(record.get("test_data", name)):
            scaler.within(Xte, dtype, "some test values")
    return Prepared(Xtr, ytr, Xte, yte, classes, scaler, name, record)
