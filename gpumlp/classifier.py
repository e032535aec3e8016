"""A trained classifier as a user holds it: the network with the scaling of its inputs
and the names of its classes, as `gpumlp train --out` saves them.

    clf = gpumlp.Classifier.load("run")          # run/ or run/model.npz
    clf.predict(X)                               # X: d0 × N raw features -> N class names
    clf.evaluate(X, y)                           # (mean loss, accuracy) against named labels

Without this, a loaded network scores raw features it was never trained on, and its
class indices are not the user's labels.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import data, io
from .backend import Backend
from .model import MLP
from .train import evaluate

__all__ = ["Classifier"]


class Classifier:
    """``net`` (a :class:`gpumlp.MLP`), ``scaler`` (a :class:`gpumlp.data.Standardizer`
    fitted on the training columns), ``classes`` (the label of each output row) and
    ``meta`` (what the run recorded: loss, margin, data, split)."""

    def __init__(self, net: MLP, scaler: data.Standardizer, classes: Any, meta: dict[str, Any] | None = None) -> None:
        classes = np.asarray(classes)
        if classes.ndim != 1 or len(classes) != net.sizes[-1]:
            raise ValueError(f"classes must name the model's {net.sizes[-1]} outputs; got {classes.shape}")
        if len(classes) > 1 and not np.all(classes[:-1] < classes[1:]):
            raise ValueError("classes must be sorted and distinct (output j names the j-th smallest label, "
                             f"as np.unique gives them); got {classes.tolist()[:10]}")
        if scaler.mean.shape[0] != net.sizes[0]:
            raise ValueError(f"the scaler is for {scaler.mean.shape[0]} features; the model takes {net.sizes[0]}")
        self.net, self.scaler, self.classes, self.meta = net, scaler, classes, dict(meta or {})

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | Backend | None = "auto") -> Classifier:
        """The classifier in ``path`` (a folder from ``gpumlp train --out``, or its model.npz)."""
        path = os.path.join(path, "model.npz") if os.path.isdir(path) else path
        net, meta, arrays = io.load(path, device=device)
        return cls.from_arrays(net, arrays, meta, str(path))

    @classmethod
    def from_arrays(cls, net: MLP, arrays: dict[str, Any], meta: dict[str, Any], path: str) -> Classifier:
        """The classifier of ``net`` with the scaling and class names a file at ``path`` holds in
        ``arrays`` (a model.npz's, or a checkpoint's), each checked; errors name ``path``."""
        missing = {"x_mean", "x_scale", "classes"} - set(arrays)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}: it holds a network without its scaling "
                             "and class names (save one with Classifier.save or gpumlp train --out)")
        d0 = net.sizes[0]
        for key in ("x_mean", "x_scale"):
            a = arrays[key]
            if a.shape not in ((d0, 1), (d0,)) or not np.isdtype(a.dtype, "real floating") or not np.isfinite(a).all():
                raise ValueError(f"{path} is damaged: its {key} must be {d0} finite numbers for the model's "
                                 f"{d0} inputs; got {a.dtype} of shape {a.shape}")
        if not (arrays["x_scale"] > 0).all():
            raise ValueError(f"{path} is damaged: its x_scale has values <= 0")
        scaler = data.Standardizer(arrays["x_mean"].reshape(d0, 1), arrays["x_scale"].reshape(d0, 1))
        try:
            return cls(net, scaler, arrays["classes"], meta)
        except ValueError as e:
            raise ValueError(f"{path} is damaged: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the classifier (network, scaling, classes, meta) to ``path``, atomically."""
        io.save(path, self.net, self.meta, x_mean=self.scaler.mean, x_scale=self.scaler.scale, classes=self.classes)

    def _features(self, X):
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] != self.net.sizes[0]:
            hint = (" — one sample per row? pass X.T" if X.ndim == 2 and X.shape[1] == self.net.sizes[0] else "")
            raise ValueError(f"X must be {self.net.sizes[0]} × N (one sample per column); got shape {X.shape}{hint}")
        return self.scaler.within(X.astype(np.float64), self.net.dtype)

    def outputs(self, X: Any, batch_size: int = 4096) -> np.ndarray:
        """The network's outputs (K × N, NumPy) for raw features X (d0 × N)."""
        return self.net.outputs(self._features(X), batch_size)

    def predict(self, X: Any, batch_size: int = 4096) -> np.ndarray:
        """The predicted label of each column of raw features X (d0 × N), as the training
        data spelled them."""
        return self.classes[self.net.predict(self._features(X), batch_size)]

    def evaluate(self, X: Any, y: Any) -> tuple[float, float | None]:
        """``(mean loss, accuracy)`` on raw features X (d0 × N) and labels y as the training
        data spelled them (with the run's loss and margin)."""
        idx, _ = data.encode_labels(y, self.classes)
        return evaluate(self.net, self._features(X), idx, self.meta.get("loss", "ce"), self.meta.get("margin", 1.0))

    def __repr__(self):
        return f"Classifier({self.net!r}, classes={self.classes.tolist()[:10]})"
