"""Stochastic gradient descent on the model's flat parameter buffer."""
import weakref

from ._checks import number

__all__ = ["SGD"]


class SGD:
    """θ ← θ − lr·v with v ← momentum·v + (∇θ + weight_decay·θ)  (v = gradient when momentum = 0).

    The same rule as ``torch.optim.SGD`` (no dampening, no Nesterov); weight decay
    applies to every parameter, biases included.  One update runs over the whole
    flat buffer ``net.params``, so a step costs a few element-wise kernels however
    many layers there are.  Momentum is kept per model.
    """

    def __init__(self, lr, momentum=0.0, weight_decay=0.0):
        self.lr = number(lr, "lr", lambda v: v > 0, "a finite number > 0")
        self.momentum = number(momentum, "momentum", lambda v: 0 <= v < 1, "a number in [0, 1)")
        self.weight_decay = number(weight_decay, "weight_decay", lambda v: v >= 0, "a finite number >= 0")
        self._velocity = weakref.WeakKeyDictionary()

    def step(self, net):
        """Update ``net``'s parameters in place from the gradients of its last backward()."""
        if net.dW is None:
            raise RuntimeError("SGD.step() needs gradients: call net.backward(dY) first")
        g = net.grads
        if self.weight_decay:
            g = g + self.weight_decay * net.params
        if self.momentum:
            v = self._velocity.get(net)
            if v is None:
                v = self._velocity[net] = net.backend.zeros(g.shape, g.dtype)
            v *= self.momentum
            v += g
            g = v
        net.params -= self.lr * g

    def __repr__(self):
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"
