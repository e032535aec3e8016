"""Losses: each returns ``(loss, dY)`` with dY = ∂L/∂Y, ready for ``net.backward``.

Y is the network output, K × N (one column per sample).  Everything is computed
with the array module of Y, on Y's device; ``loss`` is a 0-d array there, so a
training step need not wait for the device (``float(loss)`` does).

* :func:`mse`            L = ½‖Y − T‖²_F / N   (``reduction="sum"``: without /N)
* :func:`hinge`          exercise 3: L = mean_n Σ_{j≠y_n} max(0, p_jn − p_{y_n n} + C),
                         p = softmax(Y) over the K rows
* :func:`cross_entropy`  L = −mean_n log p_{y_n n}
"""
from ._checks import isdtype, number, shape_of, to_device, to_labels
from .backend import backend_of

__all__ = ["mse", "hinge", "cross_entropy", "softmax", "one_hot", "LOSSES"]


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


def softmax(xp, Y):
    """Column-wise softmax p = exp(Y) / Σ_rows exp(Y), shifted by the column max for stability."""
    E = xp.exp(Y - xp.max(Y, axis=0, keepdims=True))
    return E / xp.sum(E, axis=0, keepdims=True)


def one_hot(backend, labels, k, dtype):
    """K × N matrix with a 1 in row labels[n] of column n."""
    return backend.xp.astype(backend.arange(k)[:, None] == labels[None, :], dtype)


def mse(Y, T, reduction="mean", check=True):
    """½‖Y − T‖²_F / N and dY = (Y − T) / N; ``reduction="sum"`` drops the /N (exercise 1)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
    backend = _output(Y)
    xp = backend.xp
    shape = shape_of(T)
    if shape != tuple(Y.shape):
        raise ValueError(f"targets T must have the shape of Y, {tuple(Y.shape)} (K × N, one column "
                         f"per sample); got {shape}" + (" — use T.reshape(1, -1)" if shape == (Y.shape[1],) else ""))
    T = to_device(backend, T, "T", Y.dtype, check)
    R = Y - T
    scale = 1.0 / Y.shape[1] if reduction == "mean" else 1.0
    return 0.5 * scale * xp.sum(R * R), R * scale


def hinge(Y, labels, margin=1.0, check=True):
    """Exercise 3's multi-class hinge loss on p = softmax(Y), averaged over the N columns.

    A false class j is penalised unless p_y − p_j > C:  L_n = Σ_{j≠y} max(0, p_j − p_y + C).
    ∂L/∂p_j = a_j (a_j = 1 where that hinge is active), ∂L/∂p_y = −Σ_j a_j, and the
    softmax Jacobian gives ∂L/∂Y_j = p_j (∂L/∂p_j − Σ_k p_k ∂L/∂p_k).
    """
    C = number(margin, "margin", lambda v: v >= 0, "a finite number >= 0")
    backend = _output(Y, min_rows=2)
    xp = backend.xp
    K, N = Y.shape
    labels = to_labels(backend, labels, N, K, check)
    P = softmax(xp, Y)
    onehot = one_hot(backend, labels, K, Y.dtype)
    p_y = xp.sum(P * onehot, axis=0, keepdims=True)
    M = P - p_y + C                                           # p_j − p_y + C
    active = xp.astype(M >= 0, Y.dtype) * (1 - onehot)        # j ≠ y, not yet beyond the margin
    loss = xp.sum(M * active) / N
    G = active - onehot * xp.sum(active, axis=0, keepdims=True)   # ∂L_n/∂p
    dY = P * (G - xp.sum(P * G, axis=0, keepdims=True)) / N
    return loss, dY


def cross_entropy(Y, labels, check=True):
    """Softmax cross-entropy −mean_n log p_{y_n}, via log-sum-exp; dY = (p − onehot) / N."""
    backend = _output(Y, min_rows=2)
    xp = backend.xp
    K, N = Y.shape
    labels = to_labels(backend, labels, N, K, check)
    onehot = one_hot(backend, labels, K, Y.dtype)
    shifted = Y - xp.max(Y, axis=0, keepdims=True)
    E = xp.exp(shifted)
    total = xp.sum(E, axis=0, keepdims=True)
    log_p_y = xp.sum(shifted * onehot, axis=0) - xp.log(total[0, :])
    loss = -xp.sum(log_p_y) / N
    dY = (E / total - onehot) / N
    return loss, dY


LOSSES = {"mse": mse, "hinge": hinge, "ce": cross_entropy, "cross_entropy": cross_entropy}
