"""Optimizers on the model's flat parameter buffer, and the contract they follow.

An optimizer has

* ``update(net, normalizer)``: the unchecked update, which the engine calls after each
  backward pass.  ``normalizer`` is what the loss was divided by, over the whole batch
  and all ranks: the batch's N (a micro-batch or a rank's share is less);
* ``step(net)``: the same, checked, for a loop of your own (``net.forward``, the loss,
  ``net.backward``, ``step``), with the last forward pass's N as normaliser;
* ``state_dict(net)`` / ``load_state_dict(net, state)``: its state for ``net`` by name,
  as host arrays (or None), which a checkpoint saves and a resumed run takes back;
* ``hooks``: gradient hooks, each called as ``hook(net, grads, normalizer)`` before the
  update, in order; ``grads`` is ``net.grads``, the flat gradient buffer, which a hook
  changes in place.  :class:`L2Penalty` is one.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .checks import number
from .kernels import SGD_KERNEL

if TYPE_CHECKING:
    from .backend import Array
    from .model import MLP

__all__ = ["Optimizer", "GradientHook", "SGD", "L2Penalty"]

GradientHook = Callable[[Any, Any, float], None]


class Optimizer(Protocol):
    """What the engine needs of an optimizer (see the module's docstring)."""

    lr: float
    hooks: list[GradientHook]

    def update(self, net: Any, normalizer: float) -> None: ...

    def step(self, net: Any) -> None: ...

    def state_dict(self, net: Any) -> dict[str, Any]: ...

    def load_state_dict(self, net: Any, state: dict[str, Any]) -> None: ...


class L2Penalty:
    """The gradient of scikit-learn's L2 penalty, 0.5·alpha·Σ_k‖W_k‖² / n, on the weights
    (never the biases): alpha·W_k / n added to dW_k, n being the loss's normaliser.

    This is not SGD's ``weight_decay``, which decays the biases too and has no 1/n.  It
    keeps one scratch array per layer and network, so a step allocates nothing."""

    def __init__(self, alpha: float):
        self.alpha = number(alpha, "alpha", lambda v: v >= 0, "a finite number >= 0")
        self._scratch: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __call__(self, net: MLP, grads: Array, normalizer: float) -> None:
        if not self.alpha:
            return
        tmp = self._scratch.get(net)
        if tmp is None:
            tmp = self._scratch[net] = [net.backend.empty(tuple(W.shape), W.dtype) for W in net.W]
        xp, c = net.xp, self.alpha / normalizer
        for W, dW, t in zip(net.W, net.dW, tmp, strict=True):
            xp.multiply(W, c, out=t)
            xp.add(dW, t, out=dW)

    def __repr__(self) -> str:
        return f"L2Penalty(alpha={self.alpha})"


class _Buffers:
    """SGD's device buffers for one network: the bound kernel, the velocity (None without
    momentum), the twin's scratch, and the clip's 1 × 1 norm."""

    __slots__ = ("kernel", "velocity", "scratch", "norm")

    def __init__(self, kernel, velocity, scratch, norm):
        self.kernel, self.velocity, self.scratch, self.norm = kernel, velocity, scratch, norm


class SGD:
    """θ ← θ − lr·v with v ← momentum·v + (∇θ + weight_decay·θ)  (v = gradient when momentum = 0).

    The same rule as ``torch.optim.SGD`` (no dampening, no Nesterov); weight decay
    applies to every parameter, biases included.  One fused kernel runs over the
    whole flat buffer ``net.params``, however many layers there are; ``net.grads``
    keeps the plain gradient.  Momentum is kept per model.

    ``hooks`` are gradient hooks (:data:`GradientHook`), run first.  ``clip_norm`` then
    rescales the gradient, on the device, to a global norm of at most ``clip_norm``
    (∇θ ← ∇θ · min(1, clip_norm / ‖∇θ‖), as ``torch.nn.utils.clip_grad_norm_``);
    ``net.grads`` then holds the clipped gradient.
    """

    chunk = 1 << 15       # the host twin's shortest pass: its scratch, and it stays in cache

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, clip_norm: float | None = None,
                 hooks: Iterable[GradientHook] = ()):
        self.lr = number(lr, "lr", lambda v: v > 0, "a finite number > 0")
        self.clip_norm = None if clip_norm is None else number(clip_norm, "clip_norm", lambda v: v > 0,
                                                               "a finite number > 0, or None")
        self.momentum = number(momentum, "momentum", lambda v: 0 <= v < 1, "a number in [0, 1)")
        self.weight_decay = number(weight_decay, "weight_decay", lambda v: v >= 0, "a finite number >= 0")
        self.hooks: list[GradientHook] = list(hooks)
        for h in self.hooks:
            if not callable(h):
                raise ValueError(f"a gradient hook must be a function hook(net, grads, normalizer); got {h!r}")
        self._buffers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def step(self, net: MLP) -> None:
        """Update ``net``'s parameters in place from the gradients of its last backward(),
        the loss having been divided by the last forward pass's N."""
        if not net._fresh:
            raise RuntimeError("SGD.step() needs the gradients of the last forward pass: call "
                               "net.backward(dY) after net.forward(X) first")
        self.update(net, net.Z[0].shape[1])

    def update(self, net: MLP, normalizer: float) -> None:
        """The update itself (unchecked): the hooks, the clip, one fused kernel over the flat buffers."""
        buf = self._buffers.get(net)
        if buf is None or (self.momentum and buf.velocity is None):    # first step, or momentum turned on
            buf = self._buffers[net] = self._prepare(net)
        for hook in self.hooks:
            hook(net, net.grads, normalizer)
        if self.clip_norm is not None:
            self._clip(net.backend, net.grads, buf.norm)
        buf.kernel(net.params, net.grads, buf.velocity, self.lr, self.momentum, self.weight_decay, buf.scratch)

    def _clip(self, backend, g, norm):
        """g /= max(1, ‖g‖ / clip_norm), in device buffers (no host read, no temporary)."""
        xp = backend.xp
        backend.dot(g, g, norm)                                 # ‖g‖²
        xp.sqrt(norm, out=norm)
        xp.divide(norm, self.clip_norm, out=norm)
        xp.maximum(norm, 1.0, out=norm)
        xp.divide(g, xp.reshape(norm, (1,)), out=g)

    def _prepare(self, net):
        """The bound kernel, the velocity, and the twin's scratch: on the host 1/16 of the
        parameters (or ``chunk``) walked in 16 passes; on a GPU without the compiled
        kernel, all of them in one pass (each pass there is a launch)."""
        backend, n = net.backend, net.params.shape[0]
        velocity = backend.zeros((n,), net.params.dtype) if self.momentum else None
        length = n if backend.is_gpu else min(n, max(self.chunk, -(-n // 16)))
        scratch = None if backend.fused else backend.empty((length,), net.params.dtype)
        return _Buffers(backend.kernel(SGD_KERNEL), velocity, scratch, backend.empty((1, 1), net.params.dtype))

    def state_dict(self, net: MLP) -> dict[str, Any]:
        """The optimizer's state for ``net`` as host arrays, to save beside the parameters:
        ``{"velocity": array or None}`` (None before the first step or without momentum)."""
        buf = self._buffers.get(net)
        velocity = None if buf is None or buf.velocity is None else net.backend.to_numpy(buf.velocity)
        return {"velocity": velocity}

    def load_state_dict(self, net: MLP, state: dict[str, Any]) -> None:
        """Take back a state from :meth:`state_dict` (of this net's shape, from any device), so
        that the next step continues as the saved run would have."""
        velocity = state.get("velocity") if isinstance(state, dict) else None
        if not isinstance(state, dict) or (velocity is not None
                                           and tuple(getattr(velocity, "shape", ())) != tuple(net.params.shape)):
            raise ValueError(f"the optimizer state must be {{'velocity': None or an array of shape "
                             f"{tuple(net.params.shape)}}}; got {state!r:.200}")
        fresh = self._prepare(net)
        if velocity is not None:
            if fresh.velocity is None:
                raise ValueError("the saved optimizer state has momentum buffers, but this SGD has momentum 0")
            fresh.velocity[...] = net.backend.asarray(velocity, net.params.dtype)
        self._buffers[net] = fresh

    # the names of gpumlp 0.4 and earlier
    get_state = state_dict
    set_state = load_state_dict

    def __repr__(self) -> str:
        clip = "" if self.clip_norm is None else f", clip_norm={self.clip_norm}"
        hooks = f", hooks={self.hooks!r}" if self.hooks else ""
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}{clip}{hooks})"
