"""The floating-point work of one training step's matrix products.

For sizes d0, ..., dL and a batch of B columns a step runs, per layer k = 1..L:

* forward   S_k = W_k Z_{k-1}        2 B d_k d_{k-1}
* backward  dW_k = Δ_k Z_{k-1}^T      2 B d_k d_{k-1}
* backward  W_k^T Δ_k, for k ≥ 2      2 B d_k d_{k-1}  (Δ_1 needs no product: the input's
  gradient is never formed, see :func:`gpumlp.model.backprop`)

The bias GEMVs (Δ_k 1), the activations and the update are O(B Σ d_k) or O(parameters) and
are not counted.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence

__all__ = ["step_flops"]


def step_flops(sizes: Sequence[int], batch_size: int) -> float:
    """The flops (2 per multiply-add) of one step's GEMMs: forward W_k Z_{k-1} and dW_k for
    every layer, W_k^T Δ_k for every layer but the first."""
    try:
        dims = [operator.index(d) for d in sizes]
        batch = operator.index(batch_size)
    except TypeError:
        raise ValueError(f"sizes must be integers and batch_size an integer; got {sizes!r}, {batch_size!r}") from None
    if len(dims) < 2 or min(dims) < 1 or batch < 1:
        raise ValueError(f"step_flops needs at least two positive layer sizes and a positive batch_size; "
                         f"got sizes {list(dims)}, batch_size {batch}")
    products = [dims[k] * dims[k + 1] for k in range(len(dims) - 1)]
    return 2.0 * batch * (2 * sum(products) + sum(products[1:]))
