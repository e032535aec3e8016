"""The multilayer perceptron, in the homework's batched column-major form.

    X: d0 × N (one sample per column)     W_k: d_k × d_{k-1}     b_k: d_k × 1
    S_k = W_k Z_{k-1} + b_k               Z_k = f_k(S_k)          Z_0 = X,  Y = Z_L

Backward, from ∂L/∂Y:

    Δ_L = ∂L/∂Y ⊙ f_L'(S_L)               Δ_k = (W_{k+1}^T Δ_{k+1}) ⊙ f_k'(S_k)
    dW_k = Δ_k Z_{k-1}^T                  db_k = Δ_k 1

Python lists are 0-based, so ``W[k-1]`` is W_k, ``deltas[k-1]`` is Δ_k, and
``Z[k]`` is Z_k (``Z[0]`` is X).  All parameters live in one flat buffer
``params`` (W_1, b_1, W_2, b_2, ...) and all gradients in ``grads``, laid out
alike; ``W``, ``b``, ``dW`` and ``db`` are views into them.
"""
from __future__ import annotations

import itertools
import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import kernels
from .activations import get_activation
from .backend import Array, Backend, get_backend
from .checks import positive_int, shape_of, to_device
from .workspace import ParamList, Workspace

__all__ = ["MLP", "backprop", "weight_gradients"]


def backprop(xp: Any, W: Sequence[Array], S: Sequence[Array], Z: Sequence[Array],
             scale: Sequence[Callable[..., Any]], D: list[Array], scratch: Sequence[Sequence[Array]]) -> list[Array]:
    """The Δ recursion in the buffers ``D`` (``D[k-1]`` holds Δ_k; on entry ``D[L-1]``
    holds ∂L/∂Y).  ``scale[k-1](S, Z, D, *scratch[k-1])`` multiplies D by f_k'(S).

    Uses only the cached S_k and Z_k of the forward pass; never recomputes it.
    """
    L = len(W)
    scale[L - 1](S[L - 1], Z[L], D[L - 1], *scratch[L - 1])    # Δ_L = ∂L/∂Y ⊙ f_L'(S_L)
    for k in range(L - 1, 0, -1):                              # k = L-1, ..., 1
        xp.matmul(W[k].T, D[k], out=D[k - 1])                  # Δ_k = (W_{k+1}^T Δ_{k+1})
        scale[k - 1](S[k - 1], Z[k], D[k - 1], *scratch[k - 1])  #     ⊙ f_k'(S_k)
    return D


def weight_gradients(xp: Any, D: Sequence[Array], Z: Sequence[Array], dW: Sequence[Array],
                     db: Sequence[Array] | None, ones: Array, dot: Callable[..., Any] | None = None) -> None:
    """dW_k = Δ_k Z_{k-1}^T and db_k = Δ_k 1 (a GEMV with the ones column), into dW, db.

    ``dot(x, y, out)`` (the backend's) takes a product whose result is 1 × 1, a layer of
    width 1: on CuPy a 1 × 1 matmul would take a temporary the size of the batch."""
    for k in range(len(D)):
        if dot is not None and dW[k].shape == (1, 1):
            dot(xp.reshape(D[k], (-1,)), xp.reshape(Z[k], (-1,)), dW[k])
        else:
            xp.matmul(D[k], Z[k].T, out=dW[k])
        if db is None:
            continue
        if dot is not None and D[k].shape[0] == 1:
            dot(xp.reshape(D[k], (-1,)), xp.reshape(ones, (-1,)), db[k])
        else:
            xp.matmul(D[k], ones, out=db[k])


class MLP:
    """A multilayer perceptron with layer sizes ``sizes = [d0, d1, ..., dL]``.

    ``activation`` is f_1 .. f_{L-1}; ``output`` is f_L.  ``device`` is
    ``"auto"``, ``"cpu"``, ``"gpu"`` or a :class:`gpumlp.backend.Backend`.
    Weights are drawn on the host from ``numpy.random.default_rng(seed)`` (He
    scaling for ReLU-like layers, Glorot otherwise; biases zero) and copied to
    the device, so every device starts from the same parameters.
    """

    max_workspaces = 4      # cached buffer sets, one per batch size

    def __init__(self, sizes: Sequence[int], activation: str = "relu", output: str = "linear", bias: bool = True,
                 dtype: Any = "float32", device: str | Backend | None = "auto", seed: int | None = None) -> None:
        self.sizes = self._check_sizes(sizes)
        self.activation, self.output = activation, output
        L = len(self.sizes) - 1
        self.f = [get_activation(activation)] * (L - 1) + [get_activation(output)]
        self.dtype = np.dtype(dtype).name if _is_float_dtype(dtype) else None
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
        if not isinstance(bias, (bool, np.bool_)):
            raise ValueError(f"bias must be True or False; got {bias!r}")
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer or None; got {seed!r}")
        self.bias = bool(bias)
        self.backend = get_backend(device)
        self.xp = self.backend.xp

        shapes = [(d, d_prev) for d_prev, d in itertools.pairwise(self.sizes)]
        n = sum(r * c + (r if self.bias else 0) for r, c in shapes)
        dt = self.backend.dtype(self.dtype)
        self.params = self.backend.zeros((n,), dt)
        self.grads = self.backend.zeros((n,), dt)
        self._W, self._b = self._views(self.params, shapes)
        self._dW, self._db = self._views(self.grads, shapes)
        self.dW: Any = None               # filled by backward()
        self.db: Any = None
        self.S: Any = None
        self.Z: Any = None
        self.deltas: Any = None
        self._ws: Any = None              # the workspace of the last forward pass
        self._fresh = False               # grads come from a backward() after the last forward()
        self._workspaces: OrderedDict[int, Workspace] = OrderedDict()
        kernel = self.backend.kernel      # the fused kernels of each layer, bound once
        self._bias_act = [kernel(kernels.bias_act(f, self.bias)) for f in self.f]
        self._scale = [kernel(kernels.act_grad(f)) for f in self.f]
        self._sample_sq = kernel(kernels.SAMPLE_SQ_KERNEL)
        self._no_bias = [None] * L

        rng = np.random.default_rng(seed)
        W0 = [rng.standard_normal((r, c)) * _init_scale(f.name, r, c) for f, (r, c) in zip(self.f, shapes, strict=True)]
        self.set_params(W0, [np.zeros((r, 1)) for r, _ in shapes] if self.bias else None)

    # -- construction helpers ------------------------------------------------
    @staticmethod
    def _check_sizes(sizes):
        try:
            ok = not isinstance(sizes, (str, bytes, dict)) and not any(isinstance(s, bool) for s in sizes)
            sizes = [operator.index(s) for s in sizes]
            ok = ok and len(sizes) >= 2 and all(s >= 1 for s in sizes)
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"sizes must list at least two positive layer widths "
                             f"[d0, d1, ..., dL]; got {sizes!r}")
        return tuple(sizes)

    def _views(self, flat, shapes):
        """W_k and b_k as views into the flat buffer, in the order W_1, b_1, W_2, ..."""
        xp, W, b, at = self.xp, [], [], 0
        for r, c in shapes:
            W.append(xp.reshape(flat[at:at + r * c], (r, c)))
            at += r * c
            if self.bias:
                b.append(xp.reshape(flat[at:at + r], (r, 1)))
                at += r
        return W, (b if self.bias else None)

    # -- parameters ------------------------------------------------------------
    @property
    def W(self) -> list[Array]:
        return ParamList(self._W)

    @property
    def b(self) -> list[Array] | None:
        return None if self._b is None else ParamList(self._b)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def set_params(self, W: Sequence[Any], b: Sequence[Any] | None = None) -> None:
        """Copy W_1..W_L (and b_1..b_L, each d_k × 1 or of length d_k) onto the device.

        ``b=None`` leaves the biases as they are.  Shapes are checked before anything
        is written, so a bad call changes nothing.
        """
        if b is not None and not self.bias:
            raise ValueError("this model was built with bias=False; set_params got biases")
        new_W = self._check_list(W, "W", self._W)
        new_b = None if b is None else self._check_list(b, "b", self._b)
        for k in range(self.n_layers):
            self._W[k][...] = new_W[k]
            if new_b is not None:
                self._b[k][...] = new_b[k]

    def _check_list(self, arrays, name, targets):
        """The arrays on the device, after checking there is one per layer of the right shape
        (a bias may also be given as a vector of length d_k)."""
        if not isinstance(arrays, (list, tuple)) or len(arrays) != len(targets):
            length = len(arrays) if hasattr(arrays, "__len__") else "?"
            raise ValueError(f"{name} must be a list of {len(targets)} arrays, one per layer; "
                             f"got {type(arrays).__name__} of length {length}")
        out = []
        for k, (a, target) in enumerate(zip(arrays, targets, strict=True), start=1):
            label = f"{name}[{k - 1}] ({name}_{k})"
            a = to_device(self.backend, a, label, self.dtype)
            if name == "b" and len(a.shape) == 1:
                a = self.xp.reshape(a, (-1, 1))
            if tuple(a.shape) != tuple(target.shape):
                raise ValueError(f"{label} must have shape {tuple(target.shape)}; got {tuple(a.shape)}")
            out.append(a)
        return out

    # -- forward and backward --------------------------------------------------
    def _workspace(self, n):
        """The buffers for batch size n, reused across batches; the least recently used
        of more than ``max_workspaces`` sizes is dropped."""
        ws = self._workspaces.get(n)
        if ws is None:
            while len(self._workspaces) >= self.max_workspaces:
                self._workspaces.popitem(last=False)
            ws = self._workspaces[n] = Workspace(self, n)
        else:
            self._workspaces.move_to_end(n)
        return ws

    def _input(self, X, copy=True):
        """X checked (shape, dtype, finite values) and on the device."""
        shape = shape_of(X)
        d0 = self.sizes[0]
        if len(shape) != 2:
            hint = " (for one sample use X.reshape(-1, 1))" if len(shape) == 1 else ""
            raise ValueError(f"X must be a 2-D array of shape (d0, N) = ({d0}, N), one sample "
                             f"per column; got shape {shape}{hint}")
        if shape[0] != d0:
            if shape[1] == d0:
                raise ValueError(f"X has shape {shape}: that looks like one sample per row (N × d0), "
                                 f"but gpumlp takes one sample per column (d0 × N = {d0} × N); pass X.T")
            raise ValueError(f"X must have d0 = {d0} rows (one feature per row, one sample per "
                             f"column); got shape {shape}")
        if shape[1] == 0:
            raise ValueError("X has no samples (0 columns)")
        return to_device(self.backend, X, "X", self.dtype, copy=copy)

    def forward(self, X: Any) -> Array:
        """Y = Z_L for a batch X (d0 × N, host or device array).

        Checks X, then caches S_1..S_L and Z_0..Z_L (``Z[0]`` is a copy of X) on the
        device for :meth:`backward`.  Their arrays are reused by the next forward pass
        with the same N; the returned Y is a fresh array.
        """
        Y = self._forward(self._input(X, copy=True))
        return self.xp.astype(Y, Y.dtype, copy=True)

    __call__ = forward

    def _forward(self, Z0):
        """The forward pass on a device batch Z0 (d0 × n, C- or F-contiguous, never checked).
        Returns Y, the cached Z_L itself."""
        xp, ws = self.xp, self._workspace(Z0.shape[1])
        S, Z, b = ws.S, ws.Z, self._b or self._no_bias
        Z[0] = Z0
        for k in range(self.n_layers):                    # layer k+1
            xp.matmul(self._W[k], Z[k], out=S[k])         # S_k = W_k Z_{k-1}
            self._bias_act[k](S[k], b[k], Z[k + 1])       # S_k += b_k;  Z_k = f_k(S_k)
        self._ws, self._fresh = ws, False
        self.S, self.Z, self.deltas = S, Z, None
        return Z[-1]

    def backward(self, dY: Any) -> list[Array]:
        """Run the Δ recursion from dY = ∂L/∂Y on the cached forward pass.

        Fills ``deltas`` (Δ_1..Δ_L), ``dW`` and ``db`` (None when bias=False).
        """
        if self._ws is None:
            raise RuntimeError("backward() needs the cache of a forward() pass; call net.forward(X) first")
        shape = (self.sizes[-1], self._ws.n)
        got = shape_of(dY)
        if got != shape:
            raise ValueError(f"dY must have the shape of the last forward output Y, {shape}; got {got}")
        self._ws.D[-1][...] = to_device(self.backend, dY, "dY", self.dtype)
        self._backward()
        return self.deltas

    def _backward(self):
        """The Δ recursion and the weight gradients, from ∂L/∂Y already in Δ_L's buffer."""
        ws = self._ws
        backprop(self.xp, self._W, ws.S, ws.Z, self._scale, ws.D, ws.scratch)
        weight_gradients(self.xp, ws.D, ws.Z, self._dW, self._db, ws.ones, self.backend.dot)
        self.deltas, self._fresh = ws.D, True
        if self.dW is None:
            self.dW = ParamList(self._dW)
            self.db = None if self._db is None else ParamList(self._db)

    def sample_grad_sq_norms(self) -> Array:
        """Each sample's squared gradient norm, from the last backward pass, without forming
        per-example gradients: the length-N device array s with

            s_n = Σ_k ‖Δ_k[:,n]‖² (‖Z_{k-1}[:,n]‖² + 1)      (the + 1 only with biases),

        the squared norm of column n's term in (dW, db), since dW_k = Σ_n Δ_k[:,n] Z_{k-1}[:,n]^T
        and db_k = Σ_n Δ_k[:,n].  It costs O(N Σ d_k) on the cached Δ and Z.

        Scaling: s_n is the norm of the term as it enters dW, so it carries the loss's
        normaliser.  With a mean loss over a batch of B columns Δ holds the 1/B, column n's
        term is g_n / B, and the per-example gradient g_n = ∇ℓ_n has ‖g_n‖² = B² s_n.
        """
        if not self._fresh:
            raise RuntimeError("sample_grad_sq_norms() needs the gradients of the last forward pass: "
                               "call net.backward(dY) after net.forward(X) first")
        s = self._sample_sq_norms()
        return self.xp.astype(s, s.dtype, copy=True)

    def _sample_sq_norms(self):
        """s (see :meth:`sample_grad_sq_norms`) into the workspace's buffer, which is returned
        and is overwritten by the next call for the same batch size."""
        ws = self._ws
        if ws.norms is None:
            new, n, dt = self.backend.empty, ws.n, self.params.dtype
            if self.backend.fused:                                      # the compiled kernel needs no scratch
                ws.norms = (new((n,), dt), None, None, None)
            else:
                host = self._sample_sq is kernels.SAMPLE_SQ_KERNEL.host     # NumPy's einsum needs no tmp
                ws.norms = (new((n,), dt), None if host else new((max(self.sizes), n), dt), new((n,), dt),
                            new((n,), dt))
        out, tmp, dn, zn = ws.norms
        for k in range(self.n_layers):
            self._sample_sq(ws.D[k], ws.Z[k], self.bias, k == 0, out, tmp, dn, zn)
        return out

    def _release_inputs(self):
        """Forget the batches the private path cached as Z_0 (views of the caller's data),
        so that a finished fit, evaluate or predict does not keep that data alive.  The
        cache of the last pass goes with them: a backward pass or per-example norms need
        a new forward pass (the parameters and their gradients stay)."""
        for ws in self._workspaces.values():
            ws.Z[0] = None
        self._ws, self._fresh = None, False

    # -- conveniences ------------------------------------------------------------
    def _batches(self, X, batch_size):
        """Device views of the columns of a checked device X, batch_size at a time.  X is
        stored transposed once, so that each batch is an F-contiguous d0 × n view that a
        GEMM takes as it is (a column slice of X would be copied inside every GEMM)."""
        XT, n = self.backend.transposed(X), X.shape[1]
        # stops clipped to n: the array API leaves a slice past the end unspecified (array_api_strict refuses it)
        return [XT[i:min(i + batch_size, n), :].T for i in range(0, n, batch_size)]

    def predict(self, X: Any, batch_size: int = 4096) -> np.ndarray:
        """Class predictions argmax_j Y_jn as a NumPy array of shape (N,)."""
        return self._map(X, batch_size, lambda Y: self.xp.argmax(Y, axis=0), axis=0)

    def outputs(self, X: Any, batch_size: int = 4096) -> np.ndarray:
        """The outputs Y (d_L × N) for X (d0 × N) as a NumPy array, ``batch_size`` columns at
        a time (no workspace as wide as N, and nothing kept of X)."""
        return self._map(X, batch_size, lambda Y: self.xp.astype(Y, Y.dtype, copy=True), axis=1)

    def _map(self, X, batch_size, fn, axis):
        batch_size = positive_int(batch_size, "batch_size")
        X = self._input(X, copy=False)
        try:
            out = [fn(self._forward(Z0)) for Z0 in self._batches(X, batch_size)]
        finally:
            self._release_inputs()
        return np.concatenate([self.backend.to_numpy(o) for o in out], axis=axis)

    def get_params(self) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """(W, b) as lists of NumPy arrays (b is None when bias=False)."""
        host = self.backend.to_numpy
        return [host(w) for w in self._W], (None if self._b is None else [host(v) for v in self._b])

    def __repr__(self):
        return (f"MLP(sizes={list(self.sizes)}, activation={self.activation!r}, output={self.output!r}, "
                f"bias={self.bias}, dtype={self.dtype!r}, device={self.backend.name!r})")


def _is_float_dtype(dtype):
    if dtype is None:                            # np.dtype(None) would mean float64
        return False
    try:
        return np.dtype(dtype).kind == "f"
    except TypeError:
        return False


def _init_scale(activation, rows, cols):
    """He scaling before ReLU-like activations, Glorot otherwise."""
    if activation in ("relu", "leaky_relu"):
        return np.sqrt(2.0 / cols)
    return np.sqrt(2.0 / (rows + cols))
