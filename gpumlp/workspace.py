"""The buffers of a network for one batch size, and the list of views that keeps W, b, dW
and db tied to the flat parameter and gradient buffers."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from . import kernels

if TYPE_CHECKING:                         # the model imports this module
    from .model import MLP

__all__ = ["Workspace", "ParamList"]


class Workspace:
    """The buffers of one batch size n: S_k, Z_k and Δ_k, the ones column of db = Δ 1,
    and the scratch the twins of the fused kernels need (none where the backend runs
    compiled kernels)."""

    def __init__(self, net: MLP, n: int) -> None:
        backend, dt = net.backend, net.params.dtype
        new = backend.empty
        self.n = n
        self.S = [new((d, n), dt) for d in net.sizes[1:]]
        self.Z = [None] + [S if f.identity else new(S.shape, dt) for f, S in zip(net.f, self.S, strict=True)]
        self.D = [new((d, n), dt) for d in net.sizes[1:]]
        self.ones = backend.zeros((n, 1), dt)
        self.ones += 1
        self.mask = self.tmp = self.loss_scratch = None
        self.norms = None                 # the buffers of per-example gradient norms, made on first use
        if not backend.fused:
            widths = [d for f, d in zip(net.f, net.sizes[1:], strict=True) if not f.identity]
            if any(f.scratch == "bool" for f in net.f):
                self.mask = new((max(widths), n), backend.dtype("bool"))
            if any(f.scratch == "float" for f in net.f):
                self.tmp = new((max(widths), n), dt)
            self.loss_scratch = kernels.LossScratch(backend, net.sizes[-1], n, dt)
        # each non-linear layer's scratch: row slices of the widest, so they stay contiguous (a
        # linear layer needs none, and may be wider than all the others)
        self.scratch = [(None, None) if f.identity else
                        (None if self.mask is None else self.mask[:d, :], None if self.tmp is None else self.tmp[:d, :])
                        for f, d in zip(net.f, net.sizes[1:], strict=True)]


class ParamList(list):
    """A list of views into a flat buffer: rebinding an element would silently
    detach it from the buffer, so it is refused."""

    def __setitem__(self, i: Any, value: Any) -> None:
        if value is not list.__getitem__(self, i):      # net.W[k] -= ... writes back the same view
            self._refuse()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("net.W, net.b, net.dW and net.db hold views into one flat buffer "
                        "(net.params, net.grads): use net.set_params(W, b), or write in place: "
                        "net.W[k][...] = value")

    __delitem__ = append = extend = insert = pop = remove = clear = _refuse
    __iadd__ = __imul__ = sort = reverse = _refuse
