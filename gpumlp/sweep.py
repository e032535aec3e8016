"""Batch-size sweeps of training: learning-rate rules, training to a target accuracy,
and the critical batch size fitted from steps-to-target.

McCandlish, Kaplan, Amodei et al. (2018) model the trade-off between the steps S and
the examples E = B·S needed to reach a given loss, each batch size B at its best
learning rate, as

    (S / S_min − 1) (E / E_min − 1) = 1,   so   S(B) = S_min + E_min / B,

and the critical batch size B_crit = E_min / S_min, where the curve turns: below it
a doubled batch halves the steps; above it the steps barely fall.  Their
B_crit ≈ B_simple, the gradient noise scale of :mod:`gpumlp.noise`.

``scripts/sweep_batch_sizes.py --mode train`` runs :func:`train_to_target` for every
batch size, learning rate and seed, and fits :func:`fit_critical_batch`.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .checks import number, positive_int
from .engine import Hook, Trainer
from .noise import NoiseScale, StepRecords
from .optim import SGD

if TYPE_CHECKING:
    from .model import MLP

__all__ = ["LR_SCALINGS", "scaled_lr", "warmup_factor", "train_to_target", "fit_critical_batch", "load_split",
           "run_job"]

LR_SCALINGS = ("none", "linear", "sqrt")


def scaled_lr(base_lr: float, batch_size: int, base_batch_size: int, scaling: str) -> float:
    """The learning rate a batch size gets from ``base_lr`` at ``base_batch_size``:
    the same (``none``), in proportion to B (``linear``, Goyal et al. 2017), or to √B
    (``sqrt``, Krizhevsky 2014)."""
    base_lr = number(base_lr, "base_lr", lambda v: v > 0, "a finite number > 0")
    batch_size = positive_int(batch_size, "batch_size")
    base_batch_size = positive_int(base_batch_size, "base_batch_size")
    if scaling not in LR_SCALINGS:
        raise ValueError(f"lr scaling must be one of {', '.join(LR_SCALINGS)}; got {scaling!r}")
    ratio = batch_size / base_batch_size
    return base_lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]


def warmup_factor(samples_after_step: float, warmup_samples: float) -> float:
    """The gradual warm-up's factor for a step after which ``samples_after_step`` examples
    have been seen: it grows linearly to 1 over the first ``warmup_samples`` (1 without
    warm-up)."""
    if warmup_samples <= 0:
        return 1.0
    return min(1.0, samples_after_step / warmup_samples)


def train_to_target(net: MLP, X: Any, y: Any, X_test: Any, y_test: Any, optimizer: SGD, batch_size: int,
                    target: float = 0.96, max_epochs: int = 100, eval_every: int = 256, seed: int = 0,
                    loss: str = "ce", margin: float = 1.0, warmup_samples: float = 0, noise_scale: bool = False,
                    micro_batch: int | None = None) -> dict[str, Any]:
    """Train with mini-batch SGD until the test accuracy reaches ``target`` or
    ``max_epochs`` pass; the test set is scored after the first step at or past every
    ``eval_every`` training examples (so steps-to-target is resolved to about
    max(1, eval_every / B) steps), and after the last step.

    The batches are those of :func:`gpumlp.train.fit` (each epoch one permutation of
    the columns from ``numpy.random.default_rng(seed)``, cut into batches; the last may
    be shorter).  ``optimizer.lr`` is the peak learning rate; with ``warmup_samples``
    it ramps up linearly over those first examples.

    Returns a dict: ``reached`` (bool), ``diverged`` (the test loss became NaN or
    infinite), ``steps``/``samples``/``epochs``/``seconds`` at the target (None when
    it was not reached; seconds count training only, not scoring), the same for the
    whole run as ``steps_run`` etc., ``final_test_accuracy``, ``best_test_accuracy``,
    ``evaluations`` (step, samples, seconds, test_accuracy, test_loss each) and, with
    ``noise_scale``, ``b_simple_to_target`` (tr(Σ) over |G|², each the mean over the
    batches up to the target or to the end), ``b_simple_init`` (the same at the starting
    parameters, from one pass over the data without updates, before the clock starts),
    ``b_simple_first_epoch`` and ``b_simple_end`` (the moving averages at the end).

    ``micro_batch=M`` computes each batch in chunks of at most M columns (as ``fit`` does).

    On a GPU the clock stops at every scoring, which synchronises the device: with
    B ≥ ``eval_every`` that is after every step, so host and device do not overlap
    across steps as they would in plain training, and large batches are charged for it.
    """
    batch_size, max_epochs = positive_int(batch_size, "batch_size"), positive_int(max_epochs, "max_epochs")
    eval_every = positive_int(eval_every, "eval_every")
    target = number(target, "target", lambda v: 0 < v <= 1, "a test accuracy in (0, 1]")
    warmup_samples = number(warmup_samples, "warmup_samples", lambda v: v >= 0, "a number >= 0")
    if not isinstance(optimizer, SGD):
        raise ValueError(f"optimizer must be a gpumlp.SGD (its lr is ramped for the warm-up); got {optimizer!r}")
    micro = None if micro_batch is None else positive_int(micro_batch, "micro_batch")
    trainer = Trainer(net, optimizer, loss, margin, micro if micro is not None and micro < batch_size else None)
    train, test = trainer.data(X, y), trainer.data(X_test, y_test)
    N, peak_lr = train.N, optimizer.lr
    noise = NoiseScale(population=N) if noise_scale else None
    rng = np.random.default_rng(seed)
    init = _noise_at_init(trainer, train, batch_size, seed) if noise_scale else None
    run = _ToTarget(test, N, eval_every, target, max_epochs)
    hooks: list[Hook] = [_WarmUp(peak_lr, warmup_samples)] if warmup_samples else []
    hooks.append(run)
    try:
        with np.errstate(over="ignore", invalid="ignore"):    # a diverging run is reported, not warned about
            for epoch in range(1, max_epochs + 1):
                record = trainer.epoch(train, batch_size, rng.permutation(N), number=epoch, first_step=run.step,
                                       hooks=hooks, noise=noise, check=False)
                if record.get("stopped"):
                    break
    finally:
        optimizer.lr = peak_lr
        net._release_inputs()
    out = run.out
    step, samples, seconds = run.step, run.samples, run.seconds
    accs = [ev["test_accuracy"] for ev in out["evaluations"]]
    out.update(steps_run=step, samples_run=samples, epochs_run=samples / N, seconds_run=seconds,
               final_test_accuracy=accs[-1], best_test_accuracy=max(accs))
    if noise is not None and init is not None:
        out.update(b_simple_to_target=noise.b_simple_mean, b_simple_init=init.b_simple_mean,
                   b_simple_first_epoch=noise.b_simple_start, b_simple_end=noise.b_simple, noise_steps=noise.steps)
    return out


def _noise_at_init(trainer, train, batch_size, seed):
    """B_simple at the starting parameters: one pass over the data in batches of
    ``batch_size``, forward and backward without updates (not counted as training).
    Its order comes from its own generator, so the run's batches are unchanged."""
    N = train.N
    train.shuffle(np.random.default_rng([seed, 1]).permutation(N))
    starts = range(0, N, batch_size)
    records = StepRecords(trainer.net, len(starts))
    for i, s in enumerate(starts):
        trainer.gradients(train, s, min(s + batch_size, N), records, i)     # no update
    sums, grad_sq = records.read(trainer.net.backend, 0, len(starts))
    return NoiseScale(population=N).update(sums, grad_sq, [min(batch_size, N - s) for s in starts])


class _WarmUp(Hook):
    """The gradual warm-up: each step's learning rate grows linearly to the peak over the
    first ``samples`` examples (:func:`warmup_factor`)."""

    def __init__(self, peak_lr, samples):
        self.peak_lr, self.samples, self.seen = peak_lr, samples, 0

    def before_step(self, trainer, step):
        self.seen += step.size
        trainer.optimizer.lr = self.peak_lr * warmup_factor(self.seen, self.samples)


class _ToTarget(Hook):
    """Scores the test set after the first step at or past every ``eval_every`` examples
    and after the run's last step, with the clock stopped; ends the run at the target or
    when the test loss is no longer finite."""

    def __init__(self, test, n_train, eval_every, target, max_epochs):
        self.test, self.n_train, self.eval_every, self.target = test, n_train, eval_every, target
        self.max_epochs = max_epochs
        self.step = self.samples = 0
        self.seconds, self.next_eval = 0.0, eval_every
        self.t0: float | None = None
        self.out: dict[str, Any] = {"reached": False, "diverged": False, "steps": None, "samples": None, "epochs": None,
                    "seconds": None, "evaluations": []}

    def before_step(self, trainer, step):
        if self.t0 is None:                       # the clock starts after the epoch's shuffle
            self.t0 = time.perf_counter()

    def after_step(self, trainer, step):
        self.step, self.samples = self.step + 1, self.samples + step.size
        end_of_epoch = step.index == step.steps - 1
        last = end_of_epoch and step.epoch == self.max_epochs
        if self.samples < self.next_eval and not last:
            if end_of_epoch:
                self._stop_clock(trainer)
            return False
        self._stop_clock(trainer)                 # the clock stops for the scoring
        return self._evaluate(trainer)

    def _stop_clock(self, trainer):
        trainer.net.backend.synchronize()
        self.seconds += time.perf_counter() - (self.t0 or 0.0)
        self.t0 = None

    def _evaluate(self, trainer):
        """Score the test set; True when the target is reached or the run diverged."""
        out = self.out
        test_loss, acc = trainer.score(self.test)
        out["evaluations"].append({"step": self.step, "samples": self.samples, "seconds": self.seconds,
                                   "test_accuracy": acc, "test_loss": test_loss})
        self.next_eval = (self.samples // self.eval_every + 1) * self.eval_every
        if not math.isfinite(test_loss):
            out["diverged"] = True
            return True
        if acc >= self.target:
            out.update(reached=True, steps=self.step, samples=self.samples, epochs=self.samples / self.n_train,
                       seconds=self.seconds)
            return True
        return False


def fit_critical_batch(batch_sizes: Sequence[float] | np.ndarray,
                       steps: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Fit S(B) = S_min + E_min / B to steps-to-target, by least squares on the relative
    residuals (the steps span decades).  Returns a dict with s_min, e_min, b_crit =
    E_min / S_min, rms_relative_residual and ``extrapolated`` (B_crit outside the batch
    sizes fitted); or with b_crit None and ``why`` when the fit does not determine it:
    fewer than 3 batch sizes, or B_crit beyond 10 times the largest batch size (S_min ≈ 0)
    or below a tenth of the smallest (E_min ≈ 0)."""
    B = np.asarray(batch_sizes, np.float64)
    S = np.asarray(steps, np.float64)
    if B.shape != S.shape or B.ndim != 1:
        raise ValueError("batch_sizes and steps must be two sequences of the same length")
    ok = np.isfinite(S) & (S > 0) & (B > 0)
    B, S = B[ok], S[ok]
    if len(np.unique(B)) < 3:
        reached = len(np.unique(B))
        return {"s_min": None, "e_min": None, "b_crit": None, "rms_relative_residual": None, "points": int(len(B)),
                "why": f"the fit needs at least 3 distinct batch sizes that reach the target; "
                       f"{reached} did"}
    A = np.stack([np.ones_like(B), 1.0 / B], axis=1) / S[:, None]      # rows divided by S: relative residuals
    (s_min, e_min), *_ = np.linalg.lstsq(A, np.ones_like(S), rcond=None)
    resid = (s_min + e_min / B) / S - 1.0
    out: dict[str, Any] = {"s_min": float(s_min), "e_min": float(e_min), "b_crit": None,
           "rms_relative_residual": float(np.sqrt(np.mean(resid ** 2))), "points": int(len(B))}
    lo, hi = float(B.min()), float(B.max())
    if s_min <= 0 or e_min > 10 * hi * s_min:
        out["why"] = ("S_min ≈ 0: the steps still fall as 1/B at the largest batch, so B_crit lies beyond "
                      "the batch sizes swept (more than 10 times the largest)")
    elif e_min <= 0 or e_min < lo / 10 * s_min:
        out["why"] = ("E_min ≈ 0: the steps do not fall with the batch size, so B_crit lies below the batch "
                      "sizes swept (less than a tenth of the smallest)")
    else:
        out["b_crit"] = float(e_min / s_min)
        out["extrapolated"] = not lo <= out["b_crit"] <= hi
    return out


_loaded: dict[tuple, tuple] = {}


def load_split(data: str | None = None, test_fraction: float = 0.2) -> tuple[Any, ...]:
    """``(X_train, y_train, X_test, y_test, K, source)`` as ``gpumlp train`` prepares them
    (:func:`gpumlp.data.prepare`: the embedded digits for ``data=None`` or a .npz, the
    held-out split with its fixed seed, the scaling fitted on the training columns), scaled.
    Kept per process, so a sweep's worker loads its data once."""
    from .data import prepare
    key = (data, test_fraction)
    if key not in _loaded:
        p = prepare(data, test_fraction)
        _loaded[key] = (*p.scaled(), len(p.classes), p.source)
    return _loaded[key]


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """One run of a training sweep, from a JSON-able ``spec`` (data, test_fraction, sizes,
    dtype, device, threads, batch_size, lr, seed, momentum, weight_decay, target,
    max_epochs, eval_every, loss, warmup_samples, micro_batch): the same in this process or
    in a worker of ``mpi4py.futures``, whose runs merge into one sweep.  Returns
    :func:`train_to_target`'s record with batch_size, lr and seed."""
    from .model import MLP
    from .threads import limit
    Xtr, ytr, Xte, yte, _, _ = load_split(spec["data"], spec["test_fraction"])
    with limit(spec["threads"]):
        net = MLP(spec["sizes"], dtype=spec["dtype"], device=spec["device"], seed=spec["seed"])
        r = train_to_target(net, Xtr, ytr, Xte, yte, SGD(spec["lr"], spec["momentum"], spec["weight_decay"]),
                            spec["batch_size"], target=spec["target"], max_epochs=spec["max_epochs"],
                            eval_every=spec["eval_every"], seed=spec["seed"], loss=spec["loss"],
                            warmup_samples=spec["warmup_samples"], noise_scale=True, micro_batch=spec["micro_batch"])
    return {"batch_size": spec["batch_size"], "lr": spec["lr"], "seed": spec["seed"], **r}
