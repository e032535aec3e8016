"""Element-wise activations f and their derivatives f', written into given buffers.

Each activation has two methods, both working through the array module ``xp``:

* ``forward(xp, S, out)`` returns Z = f(S), written into ``out`` (the identity
  returns ``S`` itself and leaves ``out`` unused);
* ``scale(xp, S, Z, D)`` multiplies D in place by f'(S): the ``⊙ f'(S)`` of the
  Δ recursion.  It may use S or Z = f(S), whichever is cheaper.
"""

__all__ = ["ACTIVATIONS", "get_activation"]


class Linear:
    name = "linear"
    identity = True

    def forward(self, xp, S, out):
        return S

    def scale(self, xp, S, Z, D):
        pass                                    # f' = 1


class ReLU:
    name = "relu"
    identity = False

    def forward(self, xp, S, out):
        return xp.maximum(S, 0, out=out)

    def scale(self, xp, S, Z, D):
        D *= xp.astype(S > 0, D.dtype)          # f'(s) = 1 if s > 0 else 0


class LeakyReLU:
    name = "leaky_relu"
    identity = False
    slope = 0.01

    def forward(self, xp, S, out):
        xp.multiply(S, self.slope, out=out)
        return xp.maximum(S, out, out=out)      # max(s, a s) for 0 < a < 1

    def scale(self, xp, S, Z, D):
        D[...] = xp.where(S > 0, D, D * self.slope)


class Tanh:
    name = "tanh"
    identity = False

    def forward(self, xp, S, out):
        return xp.tanh(S, out=out)

    def scale(self, xp, S, Z, D):
        D *= 1 - Z * Z                          # f' = 1 - tanh²


class Sigmoid:
    name = "sigmoid"
    identity = False

    def forward(self, xp, S, out):
        # σ(s) = (1 + tanh(s/2)) / 2: no overflow for large |s|
        xp.multiply(S, 0.5, out=out)
        xp.tanh(out, out=out)
        out += 1
        out *= 0.5
        return out

    def scale(self, xp, S, Z, D):
        D *= Z * (1 - Z)                        # f' = σ (1 - σ)


ACTIVATIONS = {a.name: a for a in (ReLU(), Tanh(), Sigmoid(), LeakyReLU(), Linear())}


def get_activation(name):
    """The activation called ``name``; a ValueError lists the known names."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{', '.join(sorted(ACTIVATIONS))}") from None
