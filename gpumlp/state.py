"""Where a training run stands between epochs: :class:`TrainState`, which checkpoints save."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TrainState"]


class TrainState:
    """Where a run stands at an epoch boundary: the epochs and steps done, and the
    generator that draws each epoch's shuffling order (once per epoch, so its state at
    the boundary is all a resumed run needs).  :func:`gpumlp.fit` advances it; a checkpoint
    saves it with :meth:`to_json` and a resumed run rebuilds it with :meth:`from_json`."""

    def __init__(self, seed: int = 0):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer; got {seed!r}")
        self.rng = np.random.default_rng(seed)
        self.epoch = self.step = 0

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "rng": self.rng.bit_generator.state}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainState:
        state = cls()
        try:
            state.epoch, state.step = int(d["epoch"]), int(d["step"])
            bits = getattr(np.random, d["rng"]["bit_generator"])()
            bits.state = d["rng"]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"the training state is damaged ({type(e).__name__}: {e})") from None
        state.rng = np.random.Generator(bits)
        return state

    def __repr__(self) -> str:
        return f"TrainState(epoch={self.epoch}, step={self.step})"
