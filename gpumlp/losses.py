"""Losses: each returns ``(loss, dY)`` with dY = ∂L/∂Y, ready for ``net.backward``.

Y is the network output, K × N (one column per sample).  Everything is computed
with the array module of Y, on Y's device; ``loss`` is a 0-d array there, so a
training step need not wait for the device (``float(loss)`` does).

* :func:`mse`            L = ½‖Y − T‖²_F / N   (``reduction="sum"``: without /N)
* :func:`hinge`          exercise 3: L = mean_n Σ_{j≠y_n} max(0, p_jn − p_{y_n n} + C),
                         p = softmax(Y) over the K rows
* :func:`cross_entropy`  L = −mean_n log p_{y_n n}

The mean divides by ``normalizer``, by default the N of Y: a batch split into
chunks (or over processes) passes the whole batch's N, so the chunks' gradients add
up to the whole batch's.

:data:`LOSSES` is the one table of losses on class labels that training, the tests
and the scripts use: ``LOSSES["mse"]`` takes labels and uses their one-hot columns
as targets.  Its entries run the fused loss kernels of :mod:`gpumlp.kernels`,
which write ∂L/∂Y straight into the Δ_L buffer during training.
"""
from __future__ import annotations

from typing import Any

from .backend import Array, Backend, backend_of
from .checks import isdtype, number, shape_of, to_device, to_labels
from .kernels import LOSS_KERNELS, TARGET_LOSS_KERNELS, LossScratch

__all__ = ["mse", "hinge", "cross_entropy", "squared_error", "softmax", "one_hot", "LOSSES", "get_loss", "Loss",
           "targets"]


def _output(Y, min_rows=1):
    """The backend of Y, after checking that Y is a 2-D float array (K × N)."""
    backend = backend_of(Y)
    shape = tuple(getattr(Y, "shape", ()))
    if len(shape) != 2 or shape[1] == 0 or not hasattr(Y, "dtype"):
        raise ValueError(f"Y must be a 2-D array of shape (K, N), one column per sample; got "
                         f"{type(Y).__name__} of shape {shape}")
    if not isdtype(backend, Y.dtype, "real floating"):
        raise ValueError(f"Y must be a float array (the network output); got dtype {Y.dtype}")
    if shape[0] < min_rows:
        raise ValueError(f"this loss needs at least {min_rows} classes (rows of Y); got Y of shape {shape}")
    return backend


def _inverse(normalizer, N):
    """1 / the N a mean divides by (the batch's own N by default)."""
    if normalizer is None:
        return 1.0 / N
    return 1.0 / number(normalizer, "normalizer", lambda v: v > 0, "a finite number > 0 (the N to divide by)")


def check_margin(margin: float) -> float:
    """The hinge margin C as a float, after checking that it is a finite number >= 0."""
    return number(margin, "margin", lambda v: v >= 0, "a finite number >= 0")


def softmax(xp: Any, Y: Array) -> Array:
    """Column-wise softmax p = exp(Y) / Σ_rows exp(Y), shifted by the column max for stability."""
    E = xp.exp(Y - xp.max(Y, axis=0, keepdims=True))
    return E / xp.sum(E, axis=0, keepdims=True)


def one_hot(backend: Backend, labels: Array, k: int, dtype: Any) -> Array:
    """K × N matrix with a 1 in row labels[n] of column n."""
    return backend.xp.astype(backend.arange(k)[:, None] == labels[None, :], dtype)


def mse(Y: Array, T: Any, reduction: str = "mean", normalizer: float | None = None) -> tuple[Array, Array]:
    """½‖Y − T‖²_F / N and dY = (Y − T) / N for targets T of Y's shape (exercises 1 and 2);
    ``reduction="sum"`` drops the /N.  Training takes class labels instead: ``LOSSES["mse"](Y,
    labels)`` is this loss on their one-hot columns, ``mse(Y, one_hot(labels))``, to the bit
    (tests/test_losses.py holds the two to it); on real targets it is ``squared_error``,
    which also divides by K."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
    if reduction == "sum" and normalizer is not None:
        raise ValueError("normalizer divides a mean: it cannot be combined with reduction='sum'")
    backend = _output(Y)
    shape = shape_of(T)
    if shape != tuple(Y.shape):
        raise ValueError(f"targets T must have the shape of Y, {tuple(Y.shape)} (K × N, one column "
                         f"per sample); got {shape}"
                         + (" — use T.reshape(1, -1)" if shape == (Y.shape[1],) and Y.shape[0] == 1 else ""))
    T = to_device(backend, T, "T", Y.dtype)
    R = Y - T
    scale = _inverse(normalizer, Y.shape[1]) if reduction == "mean" else 1.0
    return 0.5 * scale * backend.xp.sum(R * R), R * scale


class Loss:
    """A loss for training: ``loss(Y, labels, margin=1.0, normalizer=None) -> (loss, dY)``.

    ``kind`` is "labels" (class indices; ce, hinge, mse on one-hot targets) or "targets"
    (real targets T of Y's shape, K × N: squared_error, for regression).  ``kernel`` is
    its fused kernel (∂L/∂Y, each column's loss and, for labels, hit in one pass).
    (Default learning rates are the command line's and the estimators' own, not the loss's.)
    """

    def __init__(self, name: str, doc: str, kind: str = "labels") -> None:
        self.name, self.kind, self.__doc__ = name, kind, doc
        self.kernel = (LOSS_KERNELS if kind == "labels" else TARGET_LOSS_KERNELS)[name]

    def __call__(self, Y: Array, labels: Any, margin: float = 1.0,
                 normalizer: float | None = None) -> tuple[Array, Array]:
        backend = _output(Y, min_rows=1 if self.name in ("mse", "squared_error") else 2)
        K, N = Y.shape
        if self.kind == "labels":
            labels = to_labels(backend, labels, N, K)
        else:
            labels = backend.transposed(targets(backend, labels, K, N, Y.dtype))     # N × K, C-contiguous
        C = check_margin(margin)
        inv_norm = _inverse(normalizer, N)
        xp, new = backend.xp, backend.empty
        if backend.fused:
            Y = xp.ascontiguousarray(Y)              # the compiled kernels index rows and columns
        D, loss, hit = new((K, N), Y.dtype), new((N,), Y.dtype), new((N,), backend.dtype("bool"))
        scratch = None if backend.fused else LossScratch(backend, K, N, Y.dtype)
        backend.kernel(self.kernel)(Y, labels, D, loss, hit, inv_norm, C, scratch)
        return xp.sum(loss), D

    def __repr__(self):
        return f"<gpumlp loss {self.name}>"


def targets(backend: Backend, T: Any, K: int, N: int, dtype: Any) -> Array:
    """Real targets as a K × N array of ``dtype`` on ``backend`` (a vector of N is taken as
    1 × N when K = 1), checked: real, finite, of the right shape."""
    T = to_device(backend, T, "targets", dtype)
    if tuple(T.shape) == (N,) and K == 1:
        T = backend.xp.reshape(T, (1, N))
    if tuple(T.shape) != (K, N):
        raise ValueError(f"targets must have shape ({K}, {N}), one column per sample (K × N); "
                         f"got {tuple(T.shape)}")
    return T


LOSSES = {
    "ce": Loss("ce", "Softmax cross-entropy −mean_n log p_{y_n}; dY = (p − onehot) / N."),
    "hinge": Loss("hinge", "Exercise 3's multi-class hinge loss on p = softmax(Y), averaged over N."),
    "mse": Loss("mse", "½‖Y − onehot(labels)‖²_F / N; dY = (Y − onehot) / N: mse(Y, one_hot(labels))."),
    "squared_error": Loss("squared_error", "Regression on real targets T (K × N): "
                          "½‖Y − T‖²_F / (N K), the mean over samples and outputs; dY = (Y − T) / (N K).",
                          kind="targets"),
}


def get_loss(name: str) -> Loss:
    """The entry of :data:`LOSSES` called ``name`` (``cross_entropy`` is ``ce``)."""
    entry = LOSSES.get("ce" if name == "cross_entropy" else name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"unknown loss {name!r}; expected one of mse, hinge, ce (class labels) "
                         "or squared_error (real targets)")
    return entry


def hinge(Y: Array, labels: Any, margin: float = 1.0, normalizer: float | None = None) -> tuple[Array, Array]:
    """Exercise 3's multi-class hinge loss on p = softmax(Y), averaged over the N columns.

    A false class j is penalised unless p_y − p_j > C:  L_n = Σ_{j≠y} max(0, p_j − p_y + C).
    ∂L/∂p_j = a_j (a_j = 1 where that hinge is active), ∂L/∂p_y = −Σ_j a_j, and the
    softmax Jacobian gives ∂L/∂Y_j = p_j (∂L/∂p_j − Σ_k p_k ∂L/∂p_k).
    """
    return LOSSES["hinge"](Y, labels, margin, normalizer)


def cross_entropy(Y: Array, labels: Any, normalizer: float | None = None) -> tuple[Array, Array]:
    """Softmax cross-entropy −mean_n log p_{y_n}, via log-sum-exp; dY = (p − onehot) / N."""
    return LOSSES["ce"](Y, labels, normalizer=normalizer)


def squared_error(Y: Array, T: Any, normalizer: float | None = None) -> tuple[Array, Array]:
    """Regression: ½‖Y − T‖²_F / (N K) for real targets T (K × N); dY = (Y − T) / (N K)."""
    return LOSSES["squared_error"](Y, T, normalizer=normalizer)
