"""The fused element-wise kernels of a training step, each with its NumPy twin.

A step needs, besides its GEMMs, only these element-wise passes:

* ``bias_act``   S_k += b_k, then Z_k = f_k(S_k)                  (forward, per layer)
* ``act_grad``   D ⊙= f'(S)                                       (the ⊙ f_k'(S_k) of the Δ recursion)
* ``ce``, ``hinge``, ``mse``   one pass over Y that writes ∂L/∂Y straight into Δ_L, plus each
                 column's loss and whether its argmax hit the label (one thread per column);
                 ``squared_error`` the same on real targets (no hit)
* ``sgd``        v ← momentum·v + g + weight_decay·θ;  θ ← θ − lr·v   (over the flat buffer)

and, only when per-example gradient norms are asked for (the gradient noise scale):

* ``sample_sq``  s_n (+)= ‖Δ_k[:,n]‖² (‖Z_{k-1}[:,n]‖² + 1)           (per layer)

Each kernel has two forms with the same semantics:

* the **twin**, array-module code (``xp`` is NumPy, CuPy or an array-API namespace)
  that writes only into buffers it is given (``out=``), so a step allocates nothing.
  The CPU runs it, and the CPU tests check it against the float64 oracle;
* the **compiled** form: one CUDA kernel of ``fused.cu`` (:data:`CUDA_SOURCE`), built with
  NVRTC through ``cupy.RawModule`` the first time it is used (:mod:`.launch`).

Which runs is the backend's choice (:meth:`gpumlp.backend.Backend.kernel`), by
``$GPUMLP_FUSED`` (:func:`fused_mode`): ``auto`` (the default) runs the compiled kernels on
CuPy, each (kernel, dtype) checked against its twin at its first launch in the process
(:mod:`gpumlp.kernels.check`); ``1`` runs them unchecked; ``0`` runs the twins, one CuPy kernel
per call.  CPU CI builds ``fused.cu`` as host C++ and runs every instance through the
launchers against the twins (``tests/test_cuda_host.py``), and compiles it with nvcc.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from . import launch
from .source import CUDA_SOURCE, TYPES, instantiations

if TYPE_CHECKING:                         # the backend and the activations import this package
    from ..activations import Activation
    from ..backend import Backend

__all__ = ["Kernel", "bias_act", "act_grad", "LOSS_KERNELS", "TARGET_LOSS_KERNELS", "SGD_KERNEL", "SAMPLE_SQ_KERNEL",
           "LossScratch", "CUDA_SOURCE", "fused_mode", "instantiations"]

_MODES = {"auto": "auto", "": "auto", "1": "on", "true": "on", "yes": "on", "on": "on",
          "0": "off", "false": "off", "no": "off", "off": "off"}


def fused_mode(value: bool | str | None = None) -> str:
    """``"auto"``, ``"on"`` or ``"off"``: ``value``, or ``$GPUMLP_FUSED`` when it is None
    (unset means ``auto``).  ``auto`` runs the compiled kernels behind a first-launch check
    against their twins, ``on`` (``1``, ``true``, ``yes``) runs them unchecked, ``off``
    (``0``, ``false``, ``no``) runs the twins.  Anything else is a ValueError."""
    source = "fused"
    if value is None:
        value, source = os.environ.get("GPUMLP_FUSED", "auto"), "$GPUMLP_FUSED"
    if isinstance(value, bool):
        return "on" if value else "off"
    mode = _MODES.get(str(value).strip().lower())
    if mode is None:
        raise ValueError(f"{source} must be auto, 1 (compiled kernels, unchecked) or 0 (the twins); got {value!r}")
    return mode


class Kernel:
    """One fused unit: a ``name`` (it counts as one kernel), the ``twin`` function
    ``twin(xp, *args)``, and the CUDA template ``cuda`` it compiles to (None when the
    unit does no work, as ``f'`` of the identity), with ``launch(cupy, kernel)`` binding
    its launcher.  ``host``, where given, is a NumPy-only spelling of the twin with the
    same arguments and results that plain NumPy runs instead, where NumPy has a faster
    way (tests hold it to the twin).

    ``outputs`` are the positions of the arguments the kernel writes (its results), and
    ``scratch(backend, args)`` returns ``args`` with the twin's scratch arguments, which the
    compiled form does not need and callers on the fused path pass as None, allocated.
    ``variant(args)`` gives the values of the template's other parameters (``{M}``, ``{D}``,
    ``{B}``, ``{F}``) that a call selects, in the template's order."""

    def __init__(self, name: str, twin: Callable[..., Any], cuda: str | None = None,
                 launch: Callable[..., Any] | None = None, host: Callable[..., Any] | None = None,
                 outputs: Sequence[int] = (), scratch: Callable[[Any, tuple], tuple] | None = None,
                 variant: Callable[[tuple], tuple] | None = None) -> None:
        self.name, self.twin, self.cuda, self.launch, self.host = name, twin, cuda, launch, host
        self.outputs, self.scratch = outputs, scratch or (lambda backend, args: args)
        self.variant = variant or (lambda args: ())

    def template(self, values: Sequence[int]) -> str:
        """``cuda`` with its parameters other than ``{T}`` set, in order, to ``values`` (a
        :meth:`variant`): the template the launcher compiles for ``T``."""
        name = cast(str, self.cuda)       # only a kernel with a CUDA template is compiled
        for value in values:
            at = name.index("{", name.index("{T}") + 3)
            name = name[:at] + str(int(value)) + name[name.index("}", at) + 1:]
        return name

    def instance(self, args: tuple, dtype: Any) -> str:
        """The name expression of the instance a call with ``args`` at ``dtype`` launches."""
        return self.template(self.variant(args)).replace("{T}", TYPES[np.dtype(dtype).name])

    def lend(self, backend: Backend, twin: Callable[..., Any]) -> Callable[..., None]:
        """``twin`` (which takes the kernel's arguments and needs its scratch) for callers that
        pass no scratch, as the fused path's do: the scratch is made on ``backend`` once per
        shape of the call's arguments, and lent after."""
        lent: dict = {}

        def run(*args):
            key = tuple(getattr(a, "shape", a is None) for a in args)
            scratch = lent.get(key)
            if scratch is None:
                filled = self.scratch(backend, args)
                scratch = lent[key] = {i: filled[i] for i, a in enumerate(args) if a is None}
            twin(*(scratch.get(i, a) for i, a in enumerate(args)))
        return run

    def __repr__(self):
        return f"<gpumlp kernel {self.name}>"


def _nothing(*args):
    """The identity's f' = 1: nothing to do, no kernel."""


# -- a layer: forward S += b, Z = f(S); backward D ⊙= f'(S) ---------------------------------
def bias_act(f: Activation, bias: bool) -> Kernel:
    """The forward kernel of a layer with activation ``f``: ``k(S, b, Z)``; Z is S for the identity."""
    def twin(xp, S, b, Z):
        if bias:
            xp.add(S, b, out=S)                     # S_k = W_k Z_{k-1} + b_k
        f.forward(xp, S, Z)                         # Z_k = f_k(S_k)

    if f.identity and not bias:
        return Kernel("linear", _nothing)
    name = "bias" if f.identity else ("bias+" if bias else "") + f.name
    return Kernel(name, twin, f"bias_act<{{T}}, {f.code}, {int(bias)}>", launch.bias_act, outputs=(0, 2))


def act_grad(f: Activation) -> Kernel:
    """``k(S, Z, D, mask, tmp)``: D ⊙= f'(S), with the twin's scratch ``mask`` or ``tmp``."""
    if f.identity:
        return Kernel("linear'", _nothing)

    def twin(xp, S, Z, D, mask, tmp):
        f.scale(xp, S, Z, D, mask, tmp)

    def scratch(backend, args):
        S, Z, D, mask, tmp = args
        return (S, Z, D, backend.empty(D.shape, backend.dtype("bool")) if mask is None else mask,
                backend.empty(D.shape, D.dtype) if tmp is None else tmp)
    return Kernel(f.name + "'", twin, f"act_grad<{{T}}, {f.code}>", launch.act_grad, outputs=(2,), scratch=scratch)


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


def _ce_twin(xp, Y, labels, D, loss, hit, inv_norm, margin, s):
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


def _hinge_twin(xp, Y, labels, D, loss, hit, inv_norm, margin, s):
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


def _mse_twin(xp, Y, labels, D, loss, hit, inv_norm, margin, s):
    """L_n = ½ Σ_k (Y_kn − onehot_kn)²; ∂L/∂Y = (Y − onehot) / N."""
    _one_hot(xp, labels, s)
    xp.subtract(Y, s.onehot, out=D)
    xp.multiply(D, D, out=s.a)
    xp.sum(s.a, axis=0, out=loss)
    xp.multiply(loss, 0.5 * inv_norm, out=loss)
    xp.multiply(D, inv_norm, out=D)
    _hits(xp, Y, labels, hit, s)


def _squared_error_twin(xp, Y, TT, D, loss, hit, inv_norm, margin, s):
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
def _sgd_twin(xp, p, g, v, lr, momentum, weight_decay, tmp):
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
def _sample_sq_twin(xp, D, Z, bias, first, out, tmp, dn, zn):
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


def _sample_sq_host(D, Z, bias, first, out, tmp, dn, zn):
    """The twin on NumPy, with einsum's fused multiply-and-sum: no pass through ``tmp``,
    and Z_0 (an F-contiguous view of the data) read in place."""
    np.einsum("ij,ij->j", D, D, out=dn)
    np.einsum("ij,ij->j", Z, Z, out=zn)
    _sample_sq_combine(np, bias, first, out, dn, zn)


# -- the kernels ------------------------------------------------------------------------------
def _loss_scratch(backend, args):
    Y, s = args[0], args[7]
    return args if s is not None else args[:7] + (LossScratch(backend, Y.shape[0], Y.shape[1], Y.dtype),)


def _sgd_scratch(backend, args):
    p, tmp = args[0], args[6]
    return args if tmp is not None else args[:6] + (backend.empty(p.shape, p.dtype),)


def _sample_sq_scratch(backend, args):
    D, Z, bias, first, out, tmp, dn, zn = args
    if tmp is None:
        n = D.shape[1]
        tmp, dn, zn = (backend.empty((max(D.shape[0], Z.shape[0]), n), D.dtype), backend.empty((n,), D.dtype),
                       backend.empty((n,), D.dtype))
    return D, Z, bias, first, out, tmp, dn, zn


LOSS_KERNELS = {name: Kernel(name, twin, f"{name}_loss<{{T}}>", launch.label_loss, outputs=(2, 3, 4),
                             scratch=_loss_scratch)
                for name, twin in (("ce", _ce_twin), ("hinge", _hinge_twin), ("mse", _mse_twin))}
TARGET_LOSS_KERNELS = {"squared_error": Kernel("squared_error", _squared_error_twin, "squared_error_loss<{T}>",
                                               launch.target_loss, outputs=(2, 3), scratch=_loss_scratch)}
SGD_KERNEL = Kernel("sgd", _sgd_twin, "sgd<{T}, {M}, {D}>", launch.sgd, outputs=(0, 2), scratch=_sgd_scratch,
                    variant=lambda args: (args[2] is not None, args[5] != 0))       # momentum, weight decay
SAMPLE_SQ_KERNEL = Kernel("sample_sq", _sample_sq_twin, "sample_sq<{T}, {B}, {F}>", launch.sample_sq,
                          host=_sample_sq_host, outputs=(4,), scratch=_sample_sq_scratch,
                          variant=lambda args: (bool(args[2]), bool(args[3])))       # bias, first layer
