"""Stochastic gradient descent on the model's flat parameter buffer."""
import weakref

from ._checks import number
from .kernels import SGD_KERNEL

__all__ = ["SGD"]


class SGD:
    """θ ← θ − lr·v with v ← momentum·v + (∇θ + weight_decay·θ)  (v = gradient when momentum = 0).

    The same rule as ``torch.optim.SGD`` (no dampening, no Nesterov); weight decay
    applies to every parameter, biases included.  One fused kernel runs over the
    whole flat buffer ``net.params``, however many layers there are; ``net.grads``
    keeps the plain gradient.  Momentum is kept per model.

    ``clip_norm`` rescales the gradient first, on the device, to a global norm of at
    most ``clip_norm`` (∇θ ← ∇θ · min(1, clip_norm / ‖∇θ‖), as
    ``torch.nn.utils.clip_grad_norm_``); ``net.grads`` then holds the clipped gradient.
    """

    chunk = 1 << 15       # the host twin's shortest pass: its scratch, and it stays in cache

    def __init__(self, lr, momentum=0.0, weight_decay=0.0, clip_norm=None):
        self.lr = number(lr, "lr", lambda v: v > 0, "a finite number > 0")
        self.clip_norm = None if clip_norm is None else number(clip_norm, "clip_norm", lambda v: v > 0,
                                                               "a finite number > 0, or None")
        self.momentum = number(momentum, "momentum", lambda v: 0 <= v < 1, "a number in [0, 1)")
        self.weight_decay = number(weight_decay, "weight_decay", lambda v: v >= 0, "a finite number >= 0")
        self._state = weakref.WeakKeyDictionary()      # net -> (kernel, velocity, scratch, clip's norm)

    def step(self, net):
        """Update ``net``'s parameters in place from the gradients of its last backward()."""
        if not net._fresh:
            raise RuntimeError("SGD.step() needs the gradients of the last forward pass: call "
                               "net.backward(dY) after net.forward(X) first")
        self._update(net)

    def _update(self, net):
        """The update itself (unchecked): one fused kernel over the flat buffers."""
        state = self._state.get(net)
        if state is None or (self.momentum and state[1] is None):    # first step, or momentum turned on
            state = self._state[net] = self._prepare(net)
        kernel, velocity, scratch, norm = state
        if self.clip_norm is not None:
            self._clip(net.backend, net.grads, norm)
        kernel(net.params, net.grads, velocity, self.lr, self.momentum, self.weight_decay, scratch)

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
        return backend.kernel(SGD_KERNEL), velocity, scratch, backend.empty((1, 1), net.params.dtype)

    def get_state(self, net):
        """The optimizer's state for ``net`` as host arrays, to save beside the parameters:
        ``{"velocity": array or None}`` (None before the first step or without momentum)."""
        state = self._state.get(net)
        velocity = None if state is None or state[1] is None else net.backend.to_numpy(state[1])
        return {"velocity": velocity}

    def set_state(self, net, state):
        """Take back a state from :meth:`get_state` (of this net's shape, from any device), so
        that the next step continues as the saved run would have."""
        velocity = state.get("velocity") if isinstance(state, dict) else None
        if not isinstance(state, dict) or (velocity is not None and tuple(getattr(velocity, "shape", ())) != tuple(net.params.shape)):
            raise ValueError(f"the optimizer state must be {{'velocity': None or an array of shape "
                             f"{tuple(net.params.shape)}}}; got {state!r:.200}")
        fresh = self._prepare(net)
        if velocity is not None:
            if fresh[1] is None:
                raise ValueError("the saved optimizer state has momentum buffers, but this SGD has momentum 0")
            fresh[1][...] = net.backend.asarray(velocity, net.params.dtype)
        self._state[net] = fresh

    def __repr__(self):
        clip = "" if self.clip_norm is None else f", clip_norm={self.clip_norm}"
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}{clip})"
