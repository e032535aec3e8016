"""Element-wise activations f and their derivatives f', written into given buffers.

Each activation has two methods, both working through the array module ``xp`` and
writing only into the buffers they are given (they are the NumPy twins of the fused
kernels in :mod:`gpumlp.kernels`):

* ``forward(xp, S, out)`` writes Z = f(S) into ``out`` (the identity leaves ``out``
  alone: its Z is S itself);
* ``scale(xp, S, Z, D, mask, tmp)`` multiplies D in place by f'(S): the ``⊙ f'(S)``
  of the Δ recursion.  It may use S or Z = f(S), whichever is cheaper; ``mask``
  (bool) or ``tmp`` (float), of D's shape, is its scratch, as ``scratch`` names.

Each also gives its device form, from which :mod:`gpumlp.kernels.source` generates the
activation switch of ``gpumlp/kernels/fused.cu``: ``code`` is its number there, ``cuda`` the
expression of f(s) and ``cuda_grad`` that of f'(s) (which may use z = f(s)), both in C++ of
the element type ``T``.  Adding an activation is one class here, then regenerating that block
(``python -m gpumlp.kernels.source``); a test holds the file to the table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:             # backend imports the kernels, which import this module
    from .backend import Array

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]


class Activation(Protocol):
    """What every activation class below provides (a type for annotations; no class derives from it)."""

    @property
    def name(self) -> str: ...
    @property
    def code(self) -> int: ...
    @property
    def identity(self) -> bool: ...
    @property
    def scratch(self) -> str | None: ...
    @property
    def cuda(self) -> str: ...
    @property
    def cuda_grad(self) -> str: ...

    def forward(self, xp: Any, S: Array, out: Array) -> Array: ...

    def scale(self, xp: Any, S: Array, Z: Array, D: Array, mask: Array, tmp: Array) -> None: ...


class Linear:
    name, code, identity, scratch = "linear", 0, True, None
    cuda, cuda_grad = "s", "T(1)"

    def forward(self, xp: Any, S: Array, out: Array) -> Array:
        return S

    def scale(self, xp: Any, S: Array, Z: Array, D: Array, mask: Array, tmp: Array) -> None:
        pass                                    # f' = 1


class ReLU:
    name, code, identity, scratch = "relu", 1, False, "bool"
    cuda = "(s > T(0) || s != s) ? s : T(0)"          # NaN stays NaN, as in numpy.maximum
    cuda_grad = "s > T(0) ? T(1) : T(0)"

    def forward(self, xp: Any, S: Array, out: Array) -> Array:
        return xp.maximum(S, 0, out=out)

    def scale(self, xp: Any, S: Array, Z: Array, D: Array, mask: Array, tmp: Array) -> None:
        # f'(s) = 1 if s > 0 else 0
        xp.greater(S, 0, out=mask)
        xp.multiply(D, mask, out=D)


class LeakyReLU:
    name, code, identity, scratch = "leaky_relu", 2, False, "float"
    slope = 0.01
    cuda = f"s > s * T({slope!r}) ? s : s * T({slope!r})"     # max(s, a s): NaN stays NaN
    cuda_grad = f"(s > T(0) ? T(1) : T(0)) * T({1 - slope!r}) + T({slope!r})"

    def forward(self, xp: Any, S: Array, out: Array) -> Array:
        xp.multiply(S, self.slope, out=out)
        return xp.maximum(S, out, out=out)      # max(s, a s) for 0 < a < 1

    def scale(self, xp: Any, S: Array, Z: Array, D: Array, mask: Array, tmp: Array) -> None:
        # f'(s) = 1 if s > 0 else a
        xp.greater(S, 0, out=tmp)
        xp.multiply(tmp, 1 - self.slope, out=tmp)
        xp.add(tmp, self.slope, out=tmp)
        xp.multiply(D, tmp, out=D)


class Tanh:
    name, code, identity, scratch = "tanh", 3, False, "float"
    cuda, cuda_grad = "gm_tanh(s)", "T(1) - z * z"

    def forward(self, xp: Any, S: Array, out: Array) -> Array:
        return xp.tanh(S, out=out)

    def scale(self, xp: Any, S: Array, Z: Array, D: Array, mask: Array, tmp: Array) -> None:
        # f' = 1 − tanh²
        xp.multiply(Z, Z, out=tmp)
        xp.subtract(1, tmp, out=tmp)
        xp.multiply(D, tmp, out=D)


class Sigmoid:
    name, code, identity, scratch = "sigmoid", 4, False, "float"
    cuda, cuda_grad = "(gm_tanh(s * T(0.5)) + T(1)) * T(0.5)", "(T(1) - z) * z"

    def forward(self, xp: Any, S: Array, out: Array) -> Array:
        # σ(s) = (1 + tanh(s/2)) / 2: no overflow for large |s|
        xp.multiply(S, 0.5, out=out)
        xp.tanh(out, out=out)
        xp.add(out, 1, out=out)
        return xp.multiply(out, 0.5, out=out)

    def scale(self, xp: Any, S: Array, Z: Array, D: Array, mask: Array, tmp: Array) -> None:
        # f' = σ (1 − σ)
        xp.subtract(1, Z, out=tmp)
        xp.multiply(tmp, Z, out=tmp)
        xp.multiply(D, tmp, out=D)


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (ReLU(), Tanh(), Sigmoid(), LeakyReLU(), Linear())}


def get_activation(name: str) -> Activation:
    """The activation called ``name``; a ValueError lists the known names."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{', '.join(sorted(ACTIVATIONS))}") from None
