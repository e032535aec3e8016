"""Training a network end to end: :func:`fit` and :func:`evaluate`, on the engine of
:mod:`gpumlp.engine` (data checked and moved to the device once; steps that read device
values only at the end of an epoch).  The loss kernel writes ∂L/∂Y into Δ_L and each
column's loss and hit into epoch-long device vectors; the host reads them once per
epoch, to report and to stop a run whose loss has turned NaN or infinite, naming the
first bad step.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from .checks import positive_int
from .engine import Hook, OutOfDeviceMemory, Trainer, TrainingDiverged, is_out_of_memory
from .noise import NoiseScale
from .state import TrainState

if TYPE_CHECKING:
    from .model import MLP
    from .optim import Optimizer
    from .parallel import DataParallel

__all__ = ["fit", "evaluate", "TrainingDiverged", "TrainState", "OutOfDeviceMemory"]


def evaluate(net: MLP, X: Any, y: Any, loss: str = "ce", margin: float = 1.0,
             batch_size: int = 4096) -> tuple[float, float | None]:
    """``(mean loss, accuracy)`` of ``net`` on X (d0 × N) with labels y, as floats; for a loss
    on real targets (``squared_error``, y of shape K × N) the accuracy is None."""
    batch_size = positive_int(batch_size, "batch_size")
    trainer = Trainer(net, _NoUpdate(), loss, margin)
    try:
        return trainer.score(trainer.data(X, y), batch_size)
    finally:
        net._release_inputs()


class _NoUpdate:
    """The optimizer of a trainer that only scores."""

    def update(self, net, normalizer):
        raise RuntimeError("this trainer only scores")


def fit(net: MLP, X: Any, y: Any, optimizer: Optimizer, loss: str = "ce", margin: float = 1.0, epochs: int = 30,
        batch_size: int = 32, X_test: Any = None, y_test: Any = None, seed: int = 0, progress: bool = False,
        log: Callable[[str], Any] | None = None, noise_scale: bool | NoiseScale = False,
        state: TrainState | None = None, on_epoch: Callable[[dict, TrainState], Any] | None = None,
        micro_batch: int | None = None, parallel: DataParallel | None = None,
        hooks: Iterable[Hook] = ()) -> list[dict]:
    """Train ``net`` on X (d0 × N) and labels y; returns the per-epoch history.

    ``fit`` is quiet by default.  ``progress=True`` shows a progress bar on a terminal
    (never in a log) and, unless ``log`` says otherwise, one line per epoch; ``log`` is a
    function that takes each epoch's line (``print``, say), or None.  ``hooks``
    (:class:`gpumlp.engine.Hook` instances) see every step and every finished epoch
    record; one whose ``after_epoch`` returns True ends the run after that epoch.

    ``state`` (a :class:`TrainState`) resumes a run: the shuffling generator and the
    counters continue from it, and ``epochs`` is the run's total, so a state after 7 of
    30 epochs trains epochs 8 to 30 (``seed`` is then unused).  ``fit`` advances the
    state at every epoch boundary and then calls ``on_epoch(record, state)``: the place
    to save a checkpoint, together with the parameters and the optimizer's state, all
    as they are after that epoch.  The optimizer's momentum lives in the optimizer
    (``SGD.state_dict(net)`` / ``load_state_dict``).

    Each history entry holds epoch, loss and accuracy on the training batches
    (as they were seen during the epoch), seconds, and test_loss and
    test_accuracy when a test set is given.  With ``loss="squared_error"`` y holds real
    targets (K × N, or N values when K = 1) and the accuracies are None.  Raises :class:`TrainingDiverged`
    when the loss becomes NaN or infinite.

    ``noise_scale=True`` also measures the gradient noise scale from every batch
    (:mod:`gpumlp.noise`; batches drawn without replacement from the N training
    columns) and adds ``b_simple`` (moving averages), ``b_simple_mean`` (means over
    the run so far) and ``b_simple_start`` (the first epoch) to each entry; None
    while |G|² is not resolved.  A :class:`gpumlp.noise.NoiseScale` instance may be
    passed instead of True, to choose its settings or to continue one.

    ``micro_batch=M`` computes each batch in column chunks of at most M (the last may be
    shorter), each chunk's loss normalised by the whole batch, and sums their gradients
    before the one update: the same step, up to the order of floating-point sums, with
    the memory of M columns.  ``parallel`` (a :class:`gpumlp.parallel.DataParallel`)
    splits every batch's columns over the processes of an MPI job, sums their gradients
    with one all-reduce and makes the same update on each; every process passes the same
    data, seed and settings.
    """
    epochs, batch_size = positive_int(epochs, "epochs"), positive_int(batch_size, "batch_size")
    micro_batch = None if micro_batch is None else positive_int(micro_batch, "micro_batch")
    if (X_test is None) != (y_test is None):
        raise ValueError("give X_test and y_test together, or neither")
    if not (isinstance(noise_scale, (bool, NoiseScale))):
        raise ValueError(f"noise_scale must be True, False or a gpumlp.noise.NoiseScale; got {noise_scale!r}")
    if state is None:
        state = TrainState(seed)
    elif not isinstance(state, TrainState):
        raise ValueError(f"state must be a gpumlp.train.TrainState; got {state!r}")
    if on_epoch is not None and not callable(on_epoch):
        raise ValueError(f"on_epoch must be a function (record, state); got {on_epoch!r}")
    hooks = list(hooks)
    for h in hooks:
        if not isinstance(h, Hook):
            raise ValueError(f"hooks must be gpumlp.engine.Hook instances; got {h!r}")
    trainer = Trainer(net, optimizer, loss, margin,
                      micro_batch if micro_batch is not None and micro_batch < batch_size else None, parallel)
    train = trainer.data(X, y)
    test = None if X_test is None else trainer.data(X_test, y_test)
    noise = (NoiseScale(population=train.N) if noise_scale is True else noise_scale) or None
    if noise is not None and noise.population not in (None, train.N):
        raise ValueError(f"the NoiseScale's population is {noise.population}, but the training data has "
                         f"{train.N} columns: batches are drawn from those")
    if log is None and progress:
        log = tqdm.write
    if parallel is not None:
        parallel.broadcast(net.backend, net.params)          # every rank starts from rank 0's parameters
    history = []
    n_steps = -(-train.N // batch_size)
    # NumPy would warn about overflow step by step before the loss turns NaN;
    # the check at the end of each epoch stops the run with one clear message instead.
    try:
        with np.errstate(over="ignore", invalid="ignore"), \
                tqdm(total=max(0, epochs - state.epoch) * n_steps, unit="batch",
                     disable=None if progress else True, leave=False) as bar:
            steps = hooks + ([_Progress(bar)] if progress else [])
            for epoch in range(state.epoch + 1, epochs + 1):
                t0 = time.perf_counter()
                record = trainer.epoch(train, batch_size, state.rng.permutation(train.N), number=epoch,
                                       first_step=state.step, hooks=steps, noise=noise)
                if test is not None:
                    record["test_loss"], record["test_accuracy"] = trainer.score(test)
                    record["seconds"] = time.perf_counter() - t0       # the epoch with its scoring
                state.epoch, state.step = epoch, state.step + n_steps
                history.append(record)
                if log is not None:
                    log(_describe(record, epochs))
                if on_epoch is not None:
                    on_epoch(record, state)
                if any([h.after_epoch(trainer, record) for h in hooks]):
                    break
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        raise OutOfDeviceMemory(
            f"the {net.backend.name} device ran out of memory training at batch size {batch_size} "
            f"({type(e).__name__}); try a smaller batch size (--batch-size), or compute each batch in "
            f"smaller chunks with the same result (--micro-batch M, fit(micro_batch=M)). The step that failed "
            f"made no update: the parameters are those after the last step that ran") from None
    finally:
        net._release_inputs()             # the cached batches must not keep the data alive
    return history


class _Progress(Hook):
    """The progress bar's tick after every step."""

    def __init__(self, bar):
        self.bar = bar

    def after_step(self, trainer, step):
        self.bar.update(1)
        return None


def _describe(record, epochs):
    line = f"epoch {record['epoch']:>3}/{epochs}  loss {record['loss']:.4f}"
    if record["accuracy"] is not None:
        line += f"  acc {record['accuracy']:.4f}"
    if "test_loss" in record:
        line += f"  test loss {record['test_loss']:.4f}"
        if record["test_accuracy"] is not None:
            line += f"  test acc {record['test_accuracy']:.4f}"
    if "b_simple" in record:
        b = record["b_simple"]
        line += f"  B_simple (moving avg) {'-' if b is None else format(b, '.0f')}"
    return line
