"""Element-wise activations f and their derivatives f', written into given buffers.

Each activation has two methods, both working through the array module ``xp`` and
writing only into the buffers they are given (they are the NumPy twins of the fused
kernels in :mod:`gpumlp.kernels`):

* ``forward(xp, S, out)`` writes Z = f(S) into ``out`` (the identity leaves ``out``
  alone: its Z is S itself);
* ``scale(xp, S, Z, D, mask, tmp)`` multiplies D in place by f'(S): the ``⊙ f'(S)``
  of the Δ recursion.  It may use S or Z = f(S), whichever is cheaper; ``mask``
  (bool) or ``tmp`` (float), of D's shape, is its scratch, as ``scratch`` names.

``code`` is the activation's number in the CUDA source.
"""

__all__ = ["ACTIVATIONS", "get_activation"]


class Linear:
    name, code, identity, scratch = "linear", 0, True, None

    def forward(self, xp, S, out):
        return S

    def scale(self, xp, S, Z, D, mask, tmp):
        pass                                    # f' = 1


class ReLU:
    name, code, identity, scratch = "relu", 1, False, "bool"

    def forward(self, xp, S, out):
        return xp.maximum(S, 0, out=out)

    def scale(self, xp, S, Z, D, mask, tmp):   # f'(s) = 1 if s > 0 else 0
        xp.greater(S, 0, out=mask)
        xp.multiply(D, mask, out=D)


class LeakyReLU:
    name, code, identity, scratch = "leaky_relu", 2, False, "float"
    slope = 0.01                                # also in the CUDA source

    def forward(self, xp, S, out):
        xp.multiply(S, self.slope, out=out)
        return xp.maximum(S, out, out=out)      # max(s, a s) for 0 < a < 1

    def scale(self, xp, S, Z, D, mask, tmp):   # f'(s) = 1 if s > 0 else a
        xp.greater(S, 0, out=tmp)
        xp.multiply(tmp, 1 - self.slope, out=tmp)
        xp.add(tmp, self.slope, out=tmp)
        xp.multiply(D, tmp, out=D)


class Tanh:
    name, code, identity, scratch = "tanh", 3, False, "float"

    def forward(self, xp, S, out):
        return xp.tanh(S, out=out)

    def scale(self, xp, S, Z, D, mask, tmp):   # f' = 1 − tanh²
        xp.multiply(Z, Z, out=tmp)
        xp.subtract(1, tmp, out=tmp)
        xp.multiply(D, tmp, out=D)


class Sigmoid:
    name, code, identity, scratch = "sigmoid", 4, False, "float"

    def forward(self, xp, S, out):
        # σ(s) = (1 + tanh(s/2)) / 2: no overflow for large |s|
        xp.multiply(S, 0.5, out=out)
        xp.tanh(out, out=out)
        xp.add(out, 1, out=out)
        return xp.multiply(out, 0.5, out=out)

    def scale(self, xp, S, Z, D, mask, tmp):   # f' = σ (1 − σ)
        xp.subtract(1, Z, out=tmp)
        xp.multiply(tmp, Z, out=tmp)
        xp.multiply(D, tmp, out=D)


ACTIVATIONS = {a.name: a for a in (ReLU(), Tanh(), Sigmoid(), LeakyReLU(), Linear())}


def get_activation(name):
    """The activation called ``name``; a ValueError lists the known names."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{', '.join(sorted(ACTIVATIONS))}") from None
