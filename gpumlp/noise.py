"""The gradient noise scale B_simple = tr(Σ) / |G|², measured during training.

McCandlish, Kaplan, Amodei et al. (2018), "An Empirical Model of Large-Batch
Training": G is the true gradient, Σ the covariance of one example's gradient, and
B_simple (their eq. 2.9) predicts the critical batch size, beyond which a larger
batch buys fewer and fewer steps.

One batch gives both estimates.  Let g_n be the per-example gradients of a batch of
B columns and ḡ their mean (the batch gradient itself, before weight decay and
momentum).  With m = mean_n |g_n|² (from :meth:`gpumlp.MLP.sample_grad_sq_norms`,
m = B Σ_n s_n):

    sample variance   V = B / (B − 1) · (m − |ḡ|²)

Training draws each epoch's batches without replacement from D examples.  Then
E[V] = tr(Σ)·D/(D − 1) and the batch mean's variance is tr(Σ)/B · (D − B)/(D − 1),
with tr(Σ) the covariance of one example drawn uniformly from the D.  So

    tr(Σ)_est = V (D − 1) / D          |G|²_est = |ḡ|² − tr(Σ)_est (D − B) / (B (D − 1))

are unbiased.  Without a population (D = None, i.i.d. draws) they are V and
|ḡ|² − V / B, their Appendix A with B_small = 1; used on a finite D, that |G|²_est is
low by about tr(Σ)/D, which matters on the 1,438 training digits.

Single estimates are noisy and |G|²_est can be negative, so :class:`NoiseScale`
keeps separate averages of the two, in float64, and reports the ratio of the
averages, never an average of ratios.  A batch of one column says nothing about
the variance and is skipped.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .backend import Backend
    from .model import MLP

__all__ = ["estimate", "NoiseScale", "StepRecords"]


def estimate(sum_s: Any, grad_sq: Any, batch_size: Any, population: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(tr_Σ, G2)``: the unbiased estimates of tr(Σ) and |G|² from one batch (or arrays of
    batches), as float64.

    ``sum_s`` is Σ_n s_n of :meth:`gpumlp.MLP.sample_grad_sq_norms` for a mean loss over
    the batch, ``grad_sq`` = |ḡ|² its batch gradient's squared norm, ``batch_size`` B ≥ 2
    (the global B when a batch is split), ``population`` the D the batches are drawn from
    without replacement (None: i.i.d. draws).
    """
    B = np.asarray(batch_size, np.float64)
    if np.any(B < 2):
        raise ValueError("a batch of fewer than 2 columns says nothing about the variance; "
                         f"got batch_size {batch_size}")
    if population is not None and (isinstance(population, bool) or not isinstance(population, (int, np.integer))
                                   or population < 2 or np.any(B > population)):
        raise ValueError(f"population must be the number of examples the batches are drawn from (an integer >= 2 "
                         f"and >= every batch size) or None; got {population!r} for batch_size {batch_size}")
    m = B * np.asarray(sum_s, np.float64)                 # mean_n |g_n|² = B² mean_n s_n
    g2 = np.asarray(grad_sq, np.float64)
    variance = B / (B - 1) * (m - g2)
    if population is None:
        return variance, g2 - variance / B
    D = float(population)
    trace = variance * (D - 1) / D
    return trace, g2 - trace * (D - B) / (B * (D - 1))


class NoiseScale:
    """Running estimates of tr(Σ), |G|² and B_simple, fed the batches in the order taken.

    ``population`` is the number of training examples D (batches drawn without
    replacement), or None for i.i.d. draws.  ``decay`` is the factor of the
    exponential moving averages (per step; their start is bias-corrected, as in Adam).
    Besides those, plain means over every step so far give ``b_simple_mean``, the
    value to compare with a sweep's critical batch size (their Table 1 averages over
    the run).
    """

    def __init__(self, population: int | None = None, decay: float = 0.95, start_samples: int | None = None) -> None:
        if population is not None and (isinstance(population, bool) or not isinstance(population, (int, np.integer))
                                       or population < 2):
            raise ValueError(f"population must be the number of examples (an integer >= 2) or None; got {population!r}")
        if (isinstance(decay, bool) or not isinstance(decay, (int, float, np.floating, np.integer))
                or not 0 <= decay < 1):
            raise ValueError(f"decay must be a number in [0, 1); got {decay!r}")
        if start_samples is not None and (isinstance(start_samples, bool)
                                          or not isinstance(start_samples, (int, np.integer)) or start_samples < 1):
            raise ValueError(f"start_samples must be a positive integer or None; got {start_samples!r}")
        self.population, self.decay = population, float(decay)
        # the start of training: the batches of the first epoch (or of start_samples examples)
        self.start_samples = int(start_samples or population or 1)
        self.steps = 0                            # batches used (B ≥ 2)
        self.samples = 0                          # examples seen, every batch counted
        self._ema = [0.0, 0.0]                    # tr(Σ), |G|²  (before the bias correction)
        self._weight = 0.0                        # 1 − decay^steps: the EMA's bias correction
        self._sum = [0.0, 0.0]
        self._start = [0.0, 0.0]

    def update(self, sum_s: Any, grad_sq: Any, batch_size: Any) -> NoiseScale:
        """Add the estimates of one or more batches, in the order they were taken."""
        sum_s, grad_sq, B = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, np.float64))
                                                  for a in (sum_s, grad_sq, batch_size)))
        seen = self.samples + np.cumsum(B) - B    # examples seen before each batch
        self.samples += int(B.sum())
        keep = B >= 2
        trace, g2 = estimate(sum_s[keep], grad_sq[keep], B[keep], self.population)
        start = seen[keep] < self.start_samples
        self._sum = [self._sum[0] + float(trace.sum()), self._sum[1] + float(g2.sum())]
        self._start = [self._start[0] + float(trace[start].sum()), self._start[1] + float(g2[start].sum())]
        d = self.decay
        for t, g in zip(trace.tolist(), g2.tolist(), strict=True):
            self._ema = [d * self._ema[0] + (1 - d) * t, d * self._ema[1] + (1 - d) * g]
            self._weight = d * self._weight + (1 - d)
        self.steps += len(trace)
        return self

    def to_json(self) -> dict[str, Any]:
        """The estimator's whole state, for a checkpoint (a resumed run goes on averaging)."""
        return {"population": self.population, "decay": self.decay, "start_samples": self.start_samples,
                "steps": self.steps, "samples": self.samples, "ema": list(self._ema), "weight": self._weight,
                "sum": list(self._sum), "start": list(self._start)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NoiseScale:
        try:
            ns = cls(population=d["population"], decay=d["decay"], start_samples=d["start_samples"])
            ns.steps, ns.samples, ns._weight = int(d["steps"]), int(d["samples"]), float(d["weight"])
            ns._ema, ns._sum, ns._start = ([float(v) for v in d[k]][:2] for k in ("ema", "sum", "start"))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"the noise scale's state is damaged ({type(e).__name__}: {e})") from None
        return ns

    @property
    def trace(self) -> float | None:
        """tr(Σ): the exponential moving average (None before any batch)."""
        return self._ema[0] / self._weight if self.steps else None

    @property
    def grad_sq(self) -> float | None:
        """|G|²: the exponential moving average (None before any batch)."""
        return self._ema[1] / self._weight if self.steps else None

    @property
    def b_simple(self) -> float | None:
        """tr(Σ) / |G|² from the moving averages; None while |G|² is not resolved (≤ 0)."""
        return _ratio(*self._ema) if self.steps else None

    @property
    def b_simple_mean(self) -> float | None:
        """tr(Σ) / |G|² from the means over every batch so far; None while |G|² ≤ 0."""
        return _ratio(*self._sum) if self.steps else None

    @property
    def b_simple_start(self) -> float | None:
        """tr(Σ) / |G|² from the means over the batches of the first ``start_samples`` examples
        (by default the first epoch): the value at the start of training."""
        return _ratio(*self._start) if self.steps else None

    def __repr__(self):
        return f"NoiseScale(b_simple={self.b_simple}, steps={self.steps}, population={self.population})"


def _ratio(trace, grad_sq):
    """tr(Σ) / |G|², or None where an estimate is not positive (not resolved yet)."""
    value = trace / grad_sq if grad_sq > 0 and trace > 0 else math.nan
    return value if math.isfinite(value) else None


class StepRecords:
    """One epoch's per-step device records, Σ_n s_n and |ḡ|², for the host to read once
    at the end of the epoch (so the steps never wait on it).  In the model's dtype:
    |ḡ|² of a float32 model is a float32 dot product."""

    def __init__(self, net: MLP, n_steps: int) -> None:
        backend, dt = net.backend, net.params.dtype
        self.sum_s = backend.empty((n_steps, 1), dt)
        self.grad_sq = backend.empty((n_steps, 1), dt)
        self._part = backend.empty((1, 1), dt)

    def record(self, net: MLP, i: int) -> None:
        """Step i's values, after the backward pass and before the update (unchecked)."""
        self.record_norms(net, i)
        self.record_grad(net, i)

    def record_norms(self, net: MLP, i: int, add: bool = False) -> None:
        """Σ_n s_n of the last backward pass into row i (``add``: onto what is there, for the
        second and later micro-batches of a step), as s · 1 with the workspace's ones column."""
        s, ones = net._sample_sq_norms(), net.xp.reshape(net._ws.ones, (-1,))
        row = self.sum_s[i:i + 1, :]
        if add:
            net.backend.dot(s, ones, self._part)
            net.xp.add(row, self._part, out=row)
        else:
            net.backend.dot(s, ones, row)

    def zero_norms(self, i: int) -> None:
        """Row i for a rank whose share of the step's batch is empty."""
        self.sum_s[i:i + 1, :] = 0

    def record_grad(self, net: MLP, i: int) -> None:
        """|ḡ|² of the step's whole gradient (after any micro-batches and all-reduce) into row i."""
        net.backend.dot(net.grads, net.grads, self.grad_sq[i:i + 1, :])

    def read(self, backend: Backend, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Steps start..stop−1's records on the host, as float64 vectors."""
        return (backend.to_numpy(self.sum_s[start:stop, 0]).astype(np.float64),
                backend.to_numpy(self.grad_sq[start:stop, 0]).astype(np.float64))
