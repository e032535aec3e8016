"""The NumPy twins of the fused kernels: array-module code (``xp`` is NumPy, CuPy or an
array-API namespace) that writes only into the buffers it is given, and the scratch each
needs (:class:`LossScratch`, and the ``*_scratch`` functions that make it where a caller
gives none).  :mod:`gpumlp.kernels` pairs each with its compiled CUDA form."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:                         # the backend imports the kernels package
    from ..backend import Backend

__all__ = ["ce", "hinge", "mse", "squared_error", "LossScratch", "sgd", "sample_sq", "sample_sq_host",
           "loss_scratch", "sgd_scratch", "sample_sq_scratch"]


# -- the losses: ∂L/∂Y into Δ_L, per-column loss and hit ------------------------------------
# Arguments: Y (K × n), labels (n,), D (K × n, receives ∂L/∂Y), loss (n,), hit (n, bool),
# inv_norm (1 / the normaliser), margin, and the twin's scratch ``s`` (see LossScratch).

def _shifted(xp, Y, D, s):
    """D = Y − m, with s.m the column max."""
    xp.max(Y, axis=0, keepdims=True, out=s.m)
    xp.subtract(Y, s.m, out=D)


def _softmax_from_shifted(xp, D, s):
    """D = exp(D) / Σ exp(D) = p, keeping s.sum = Σ exp(Y − m)."""
    xp.exp(D, out=D)
    xp.sum(D, axis=0, keepdims=True, out=s.sum)
    xp.divide(D, s.sum, out=D)


def _one_hot(xp, labels, s):
    xp.equal(s.rows, labels[None, :], out=s.onehot)


def _hits(xp, Y, labels, hit, s):
    xp.argmax(Y, axis=0, out=s.argmax)
    xp.equal(s.argmax, labels, out=hit)


def ce(xp: Any, Y: Any, labels: Any, D: Any, loss: Any, hit: Any, inv_norm: Any, margin: Any, s: Any) -> None:
    """L_n = log Σ_j exp(Y_jn) − Y_{y_n n} (shifted by the column max); ∂L/∂Y = (p − onehot) / N."""
    _one_hot(xp, labels, s)
    _shifted(xp, Y, D, s)
    xp.multiply(labels, Y.shape[1], out=s.at)                    # the flat index of (y_n, n)
    xp.add(s.at, s.cols, out=s.at)
    xp.take(xp.reshape(D, (-1,)), s.at, out=s.py[0, :])          # Y_y − m, exactly (a gather, as the kernel reads it)
    _softmax_from_shifted(xp, D, s)
    xp.log(s.sum, out=s.sum)
    xp.subtract(s.sum, s.py, out=s.sum)                          # −log p_y = log Σ exp(Y − m) − (Y_y − m)
    xp.multiply(s.sum[0, :], inv_norm, out=loss)
    xp.subtract(D, s.onehot, out=D)
    xp.multiply(D, inv_norm, out=D)
    _hits(xp, Y, labels, hit, s)


def hinge(xp: Any, Y: Any, labels: Any, D: Any, loss: Any, hit: Any, inv_norm: Any, margin: Any, s: Any) -> None:
    """Exercise 3: L_n = Σ_{j≠y} max(0, p_j − p_y + C).  With a_j = 1 where that hinge is
    active, ∂L/∂p = a − onehot·Σa =: G and ∂L/∂Y = p ⊙ (G − Σ_k p_k G_k)."""
    _shifted(xp, Y, D, s)
    _softmax_from_shifted(xp, D, s)                              # D = p
    _one_hot(xp, labels, s)
    xp.multiply(D, s.onehot, out=s.a)
    xp.sum(s.a, axis=0, keepdims=True, out=s.py)                 # p_y
    xp.subtract(D, s.py, out=s.a)
    xp.add(s.a, margin, out=s.a)                                 # M = p_j − p_y + C
    xp.greater_equal(s.a, 0, out=s.b)
    xp.subtract(s.b, s.onehot, out=s.b)                          # a: M_y = C >= 0, so the label row drops out
    xp.multiply(s.a, s.b, out=s.a)
    xp.sum(s.a, axis=0, out=loss)
    xp.multiply(loss, inv_norm, out=loss)
    xp.sum(s.b, axis=0, keepdims=True, out=s.sum)                # Σ_j a_j
    xp.multiply(s.onehot, s.sum, out=s.a)
    xp.subtract(s.b, s.a, out=s.a)                               # G
    xp.multiply(D, s.a, out=s.b)
    xp.sum(s.b, axis=0, keepdims=True, out=s.sum)                # Σ_k p_k G_k
    xp.subtract(s.a, s.sum, out=s.a)
    xp.multiply(D, s.a, out=D)
    xp.multiply(D, inv_norm, out=D)
    _hits(xp, Y, labels, hit, s)


def mse(xp: Any, Y: Any, labels: Any, D: Any, loss: Any, hit: Any, inv_norm: Any, margin: Any, s: Any) -> None:
    """L_n = ½ Σ_k (Y_kn − onehot_kn)²; ∂L/∂Y = (Y − onehot) / N."""
    _one_hot(xp, labels, s)
    xp.subtract(Y, s.onehot, out=D)
    xp.multiply(D, D, out=s.a)
    xp.sum(s.a, axis=0, out=loss)
    xp.multiply(loss, 0.5 * inv_norm, out=loss)
    xp.multiply(D, inv_norm, out=D)
    _hits(xp, Y, labels, hit, s)


def squared_error(xp: Any, Y: Any, TT: Any, D: Any, loss: Any, hit: Any, inv_norm: Any, margin: Any, s: Any) -> None:
    """A loss on real targets (regression): L_n = ½ Σ_k (Y_kn − T_kn)² / K, the mean over the K
    outputs as scikit-learn's squared error; ∂L/∂Y = (Y − T) / K.  ``TT`` holds the targets
    one column per row (n × K, the training data's stored layout), so T is ``TT.T``.  No hit."""
    K = Y.shape[0]
    xp.subtract(Y, TT.T, out=D)
    xp.multiply(D, D, out=s.a)
    xp.sum(s.a, axis=0, out=loss)
    xp.multiply(loss, 0.5 * inv_norm / K, out=loss)
    xp.multiply(D, inv_norm / K, out=D)


class LossScratch:
    """The loss twins' scratch for K classes and n columns (the compiled kernels need none)."""

    def __init__(self, backend: Backend, K: int, n: int, dtype: Any) -> None:
        xp, new = backend.xp, backend.empty
        self.rows = xp.reshape(backend.arange(K), (K, 1))          # the row index of each class
        self.onehot, self.a, self.b = (new((K, n), dtype) for _ in range(3))
        self.m, self.sum, self.py = (new((1, n), dtype) for _ in range(3))
        self.argmax, self.at = new((n,), backend.dtype("int64")), new((n,), backend.dtype("int64"))
        self.cols = backend.arange(n)                                 # the column index of each sample


# -- SGD over the flat buffer ---------------------------------------------------------------
def sgd(xp: Any, p: Any, g: Any, v: Any, lr: Any, momentum: Any, weight_decay: Any, tmp: Any) -> None:
    """θ ← θ − lr·v,  v ← momentum·v + g + weight_decay·θ (v is g without momentum).

    On the host the buffer is walked in chunks of ``tmp``'s length, so the products
    need no temporary the size of the parameters (and each chunk stays in cache)."""
    c = tmp.shape[0]
    for i in range(0, p.shape[0], c):
        j = min(i + c, p.shape[0])
        ps, t = p[i:j], tmp[:j - i]
        d = g[i:j]
        if weight_decay:
            xp.multiply(ps, weight_decay, out=t)
            xp.add(t, d, out=t)
            d = t
        if v is not None:
            vs = v[i:j]
            xp.multiply(vs, momentum, out=vs)
            xp.add(vs, d, out=vs)
            d = vs
        xp.multiply(d, lr, out=t)
        xp.subtract(ps, t, out=ps)


# -- per-example gradient norms -------------------------------------------------------------
def sample_sq(xp: Any, D: Any, Z: Any, bias: Any, first: Any, out: Any, tmp: Any, dn: Any, zn: Any) -> None:
    """Layer k's share of each column's squared gradient norm: column n's term of
    dW_k = Δ_k Z_{k-1}^T is the outer product Δ_k[:,n] Z_{k-1}[:,n]^T, whose squared
    Frobenius norm is ‖Δ_k[:,n]‖² ‖Z_{k-1}[:,n]‖²; its term of db_k is Δ_k[:,n].  So
    out = (or += unless ``first``) dn ⊙ (zn + bias), dn and zn the column sums of squares.
    ``tmp`` is scratch with at least max(d_k, d_{k-1}) rows."""
    t = tmp[:D.shape[0], :]
    xp.multiply(D, D, out=t)
    xp.sum(t, axis=0, out=dn)
    t = tmp[:Z.shape[0], :]
    xp.multiply(Z, Z, out=t)
    xp.sum(t, axis=0, out=zn)
    _sample_sq_combine(xp, bias, first, out, dn, zn)


def _sample_sq_combine(xp, bias, first, out, dn, zn):
    """out (+)= dn ⊙ (zn + bias), from the column sums of squares dn of Δ and zn of Z."""
    if bias:
        xp.add(zn, 1.0, out=zn)
    if first:
        xp.multiply(dn, zn, out=out)
    else:
        xp.multiply(dn, zn, out=dn)
        xp.add(out, dn, out=out)


def sample_sq_host(D: Any, Z: Any, bias: Any, first: Any, out: Any, tmp: Any, dn: Any, zn: Any) -> None:
    """The twin on NumPy, with einsum's fused multiply-and-sum: no pass through ``tmp``,
    and Z_0 (an F-contiguous view of the data) read in place."""
    np.einsum("ij,ij->j", D, D, out=dn)
    np.einsum("ij,ij->j", Z, Z, out=zn)
    _sample_sq_combine(np, bias, first, out, dn, zn)


# -- the twins' scratch, made where the caller gives none ---------------------------------------
def loss_scratch(backend: Any, args: Any) -> tuple:
    Y, s = args[0], args[7]
    return args if s is not None else args[:7] + (LossScratch(backend, Y.shape[0], Y.shape[1], Y.dtype),)


def sgd_scratch(backend: Any, args: Any) -> tuple:
    p, tmp = args[0], args[6]
    return args if tmp is not None else args[:6] + (backend.empty(p.shape, p.dtype),)


def sample_sq_scratch(backend: Any, args: Any) -> tuple:
    D, Z, bias, first, out, tmp, dn, zn = args
    if tmp is None:
        n = D.shape[1]
        tmp, dn, zn = (backend.empty((max(D.shape[0], Z.shape[0]), n), D.dtype), backend.empty((n,), D.dtype),
                       backend.empty((n,), D.dtype))
    return D, Z, bias, first, out, tmp, dn, zn
