"""The training engine: data checked and moved to the device once, and a :class:`Trainer`
whose step, score and epoch compute without checking anything again.

    trainer = Trainer(net, SGD(0.1, momentum=0.9), loss="ce")
    train = trainer.data(X, y)                  # checked, on the device, stored one sample per row
    train.shuffle(rng.permutation(train.N))     # the epoch's order, gathered once
    trainer.step(train, 0, 32)                  # forward, ∂L/∂Y, Δ recursion, update: no host reads
    trainer.score(train)                        # (mean loss, accuracy): the host reads two numbers

A step is the homework's pass on the batch's columns Z_0 = X[:, s:e]: the forward pass
caches S_k and Z_k, the loss kernel writes ∂L/∂Y (divided by the batch's N) into Δ_L's
buffer and each column's loss and hit into epoch-long device vectors, the Δ recursion
fills dW and db, and the optimizer updates the flat parameter buffer.  With micro-batches
the batch's columns go through in chunks whose gradients add up (each chunk's loss is
normalised by the whole batch); under data parallelism each rank takes its share of the
columns and one all-reduce sums the gradients before the update every rank makes alike.

:meth:`Trainer.epoch` runs the steps of one pass and reads the step losses once, at the
end; :class:`Hook` objects see every step and the epoch's end, with one signature each.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .checks import positive_int, to_labels
from .losses import check_margin, get_loss, targets
from .noise import NoiseScale, StepRecords

if TYPE_CHECKING:
    from .backend import Array
    from .model import MLP
    from .parallel import DataParallel

__all__ = ["Trainer", "DeviceData", "Hook", "Step", "TrainingDiverged", "OutOfDeviceMemory", "is_out_of_memory"]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class OutOfDeviceMemory(RuntimeError):
    """The device ran out of memory; the message names the batch size."""


def is_out_of_memory(e: BaseException) -> bool:
    """CuPy's OutOfMemoryError (and cuBLAS's allocation failure), or a host MemoryError."""
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or "CUBLAS_STATUS_ALLOC_FAILED" in str(e))


class DeviceData:
    """X (d0 × N) and its labels (or, with ``kind="targets"``, real targets K × N), checked
    once and stored on the model's device one sample per row: XT (N × d0) and y (N, or
    N × K), so that a batch is a contiguous block of rows, fed to the GEMMs as an
    F-contiguous d0 × n view.  :meth:`shuffle` gathers an epoch's order into a second copy
    (allocated once); the steps read that copy, the scoring reads the stored order.
    ``loss`` and ``hit`` are each column's loss and argmax == label of the last pass."""

    def __init__(self, net: MLP, X: Any, y: Any, kind: str = "labels") -> None:
        X = net._input(X, copy=False)
        backend, self.N = net.backend, int(X.shape[1])
        if kind == "labels":
            self.y = to_labels(backend, y, self.N, net.sizes[-1])
        elif kind == "targets":
            self.y = backend.transposed(targets(backend, y, net.sizes[-1], self.N, net.params.dtype))
        else:
            raise ValueError(f"kind must be 'labels' or 'targets'; got {kind!r}")
        self.kind, self.backend = kind, backend
        self.XT = backend.transposed(X)
        self.loss = backend.empty((self.N,), net.params.dtype)
        self.hit = backend.empty((self.N,), backend.dtype("bool"))
        self.XTe, self.ye = self.XT, self.y          # the steps' order: the stored one until shuffled
        self.records: StepRecords | None = None      # the noise scale's per-step records, made once

    def shuffle(self, order: Array) -> None:
        """Put the rows in ``order`` (a permutation of 0..N−1, host or device integers) for
        the next steps: one gather into the epoch's copy."""
        shape = tuple(getattr(order, "shape", ()))
        if shape != (self.N,):
            raise ValueError(f"order must be a permutation of the {self.N} columns; got shape {shape}")
        self._shuffle(self.backend.asarray(order, self.backend.dtype("int64")))

    def _shuffle(self, order) -> None:
        backend = self.backend
        if self.XTe is self.XT:
            self.XTe, self.ye = backend.empty(self.XT.shape, self.XT.dtype), backend.empty(self.y.shape, self.y.dtype)
        backend.take_rows(self.XT, order, self.XTe)
        backend.take_rows(self.y, order, self.ye)


class Step:
    """What a hook learns of a step: ``epoch`` (1-based), ``index`` (0-based, in the epoch),
    ``start`` and ``stop`` (its rows of the epoch's order), ``number`` (1-based, over the
    run) and ``steps`` (the epoch's count)."""

    __slots__ = ("epoch", "index", "start", "stop", "number", "steps")

    def __init__(self, epoch: int, index: int, start: int, stop: int, number: int, steps: int) -> None:
        self.epoch, self.index, self.start, self.stop, self.number, self.steps = (
            epoch, index, start, stop, number, steps)

    @property
    def size(self) -> int:
        return self.stop - self.start

    def __repr__(self) -> str:
        return f"Step(epoch={self.epoch}, index={self.index}, rows={self.start}:{self.stop}, number={self.number})"


class Hook:
    """Override what you need.  :meth:`Trainer.epoch` calls ``before_step`` and
    ``after_step``; a true return value from ``after_step`` ends the epoch after that step
    (the record then has ``"stopped": True``).  The loop that makes an epoch's record whole
    (:func:`gpumlp.fit`, after scoring the test set) calls ``after_epoch``; a true return
    value ends the run.  Hooks run in the order given; evaluate-every, warm-up, progress
    bars and early stopping are hooks."""

    def before_step(self, trainer: Trainer, step: Step) -> None:
        """Before step's forward pass (a learning-rate schedule sets ``trainer.optimizer.lr``)."""

    def after_step(self, trainer: Trainer, step: Step) -> bool | None:
        """After the step's update (reading device values here makes the host wait)."""
        return None

    def after_epoch(self, trainer: Trainer, record: dict[str, Any]) -> bool | None:
        """After the epoch's record is made (the host has read the step losses)."""
        return None


class Trainer:
    """A network, a loss and an optimizer, checked once; the methods compute.

    ``optimizer`` follows :class:`gpumlp.optim.Optimizer`'s contract (``update(net,
    normalizer)``); one with only ``step(net)`` is called through that.  ``micro_batch=M``
    computes each batch in chunks of at most M columns with the same result, up to the
    order of floating-point sums; ``parallel`` (a :class:`gpumlp.parallel.DataParallel`)
    splits each batch's columns over the ranks of an MPI job.
    """

    def __init__(self, net: MLP, optimizer: Any, loss: str = "ce", margin: float = 1.0,
                 micro_batch: int | None = None, parallel: DataParallel | None = None) -> None:
        entry = get_loss(loss)
        self.net, self.loss, self.kind = net, loss, entry.kind
        self.margin = check_margin(margin)
        if not callable(getattr(optimizer, "update", None)):
            if not callable(getattr(optimizer, "step", None)):
                raise ValueError(f"optimizer must have an update(net, normalizer) or a step(net) method, "
                                 f"as gpumlp.SGD does; got {optimizer!r}")
            optimizer = _StepOnly(optimizer)
        self.optimizer = optimizer
        self.micro = None if micro_batch is None else positive_int(micro_batch, "micro_batch")
        self.parallel = parallel
        self._kernel = net.backend.kernel(entry.kernel)
        self._acc: Any = None                    # the micro-batches' gradient sum

    def data(self, X: Any, y: Any) -> DeviceData:
        """X (d0 × N) and its labels (or targets, for a loss on real targets), checked and
        moved to the device once."""
        return DeviceData(self.net, X, y, self.kind)

    # -- the unchecked path ---------------------------------------------------------------
    def step(self, data: DeviceData, start: int, stop: int, records: StepRecords | None = None, i: int = 0) -> None:
        """One training step on rows [start, stop) of ``data``'s current order: the gradients
        (:meth:`gradients`), then the optimizer's update with the batch's N as normaliser."""
        self.gradients(data, start, stop, records, i)
        self.optimizer.update(self.net, stop - start)

    def gradients(self, data: DeviceData, start: int, stop: int, records: StepRecords | None = None,
                  i: int = 0) -> None:
        """The batch's loss columns, hits and gradients (``net.grads``), with no update.
        With ``records``, the per-example gradient norms and |ḡ|² go into its row i."""
        if self.micro is None and self.parallel is None:
            self._pass(data.XTe[start:stop, :].T, data.ye[start:stop], 1.0 / (stop - start),
                       data.loss[start:stop], data.hit[start:stop])
            if records is not None:
                records.record(self.net, i)
            return
        self._chunked(data, start, stop, records, i)

    def _pass(self, Z0, labels, inv_norm, loss_out, hit_out):
        """Forward, the loss kernel (∂L/∂Y into Δ_L's buffer, each column's loss times
        ``inv_norm`` and its hit into ``loss_out`` and ``hit_out``), backward."""
        net = self.net
        Y = net._forward(Z0)
        self._kernel(Y, labels, net._ws.D[-1], loss_out, hit_out, inv_norm, self.margin, net._ws.loss_scratch)
        net._backward()

    def _chunked(self, data, s, e, records, i):
        """The batch [s, e) in micro-batches and/or this rank's share of its columns."""
        net, xp, inv = self.net, self.net.xp, 1.0 / (e - s)
        lo, hi = (s, e) if self.parallel is None else self.parallel.shard(s, e)
        size = min(self.micro or hi - lo, hi - lo) or 1
        chunks = range(lo, hi, size)
        last = len(chunks) - 1
        for j, c in enumerate(chunks):
            d = min(c + size, hi)
            self._pass(data.XTe[c:d, :].T, data.ye[c:d], inv, data.loss[c:d], data.hit[c:d])
            if records is not None:
                records.record_norms(net, i, add=j > 0)
            if last:                                   # several chunks: sum their gradients
                if self._acc is None:
                    self._acc = net.backend.zeros(tuple(net.grads.shape), net.grads.dtype)
                if j == 0:
                    self._acc[...] = net.grads
                elif j < last:
                    xp.add(self._acc, net.grads, out=self._acc)
                else:
                    xp.add(net.grads, self._acc, out=net.grads)
        if not chunks:                                 # fewer columns than ranks: this one has none
            net.grads[...] = 0
            if records is not None:
                records.zero_norms(i)
        if self.parallel is not None:
            self.parallel.allreduce(net.backend, net.grads)
        if records is not None:
            records.record_grad(net, i)

    def score(self, data: DeviceData, batch_size: int = 4096) -> tuple[float, float | None]:
        """``(mean loss, accuracy)`` over ``data`` in its stored order; every column's loss is
        normalised by the whole N, and the host reads the sums once.  The accuracy is None
        for a loss on real targets."""
        net, N = self.net, data.N
        for s in range(0, N, batch_size):
            e = min(s + batch_size, N)
            Y = net._forward(data.XT[s:e, :].T)
            self._kernel(Y, data.y[s:e], net._ws.D[-1], data.loss[s:e], data.hit[s:e], 1.0 / N, self.margin,
                         net._ws.loss_scratch)
        loss = float(net.backend.to_numpy(net.xp.sum(data.loss)))
        if data.kind != "labels":
            return loss, None
        return loss, float(np.count_nonzero(net.backend.to_numpy(data.hit))) / N

    def epoch(self, data: DeviceData, batch_size: int, order: Any = None, *, number: int = 1, first_step: int = 0,
              hooks: Iterable[Hook] = (), noise: NoiseScale | None = None, check: bool = True) -> dict[str, Any]:
        """One pass over ``data`` in batches of ``batch_size`` (the last may be shorter), in
        ``order`` (a permutation, gathered first) or in the current order.  The host reads
        the step losses once, at the end, and returns the record: epoch (``number``), loss
        and accuracy over the batches as they were seen, seconds, and with ``noise`` the
        noise scale's figures (``b_simple`` its moving average, ``b_simple_mean`` its mean
        over the run, ``b_simple_start`` its mean over the first epoch).  A step loss that is
        NaN or infinite raises :class:`TrainingDiverged` naming it (``check=False``: no check).
        ``first_step`` is the number of steps before this epoch, for the hooks and messages."""
        backend, N = self.net.backend, data.N
        t0 = time.perf_counter()
        if order is not None:
            data.shuffle(order)
        starts = range(0, N, batch_size)
        records = None
        if noise is not None:
            records = data.records
            if records is None or records.sum_s.shape[0] < len(starts):
                records = data.records = StepRecords(self.net, len(starts))
        if self.parallel is not None:                # each rank fills only its columns' losses and hits
            data.loss[...] = 0
            data.hit[...] = False
        hooks = list(hooks)
        before = [h.before_step for h in hooks if type(h).before_step is not Hook.before_step]
        after = [h.after_step for h in hooks if type(h).after_step is not Hook.after_step]
        ran, stopped = len(starts), False
        for i, s in enumerate(starts):
            e = min(s + batch_size, N)
            if not (before or after):
                self.step(data, s, e, records, i)
                continue
            info = Step(number, i, s, e, first_step + i + 1, len(starts))
            for f in before:
                f(self, info)
            self.step(data, s, e, records, i)
            if any([f(self, info) for f in after]):
                ran, stopped = i + 1, True
                break
        record = self._record(data, starts[:ran], batch_size, number, first_step, check)
        if noise is not None and records is not None:
            sums, grad_sq = records.read(backend, 0, ran)
            sizes = np.minimum(batch_size, N - np.asarray(starts[:ran]))
            noise.update(self.parallel.sum(sums) if self.parallel is not None else sums, grad_sq, sizes)
            record.update(b_simple=noise.b_simple, b_simple_mean=noise.b_simple_mean,
                          b_simple_start=noise.b_simple_start)
        if stopped:
            record["stopped"] = True
        record["seconds"] = time.perf_counter() - t0
        return record

    def _record(self, data, starts, batch_size, number, first_step, check):
        """The epoch's loss and accuracy from one host read of the columns' losses and hits."""
        backend, N, parallel = self.net.backend, data.N, self.parallel
        starts = np.asarray(starts)
        seen = int(min(starts[-1] + batch_size, N)) if len(starts) else 0
        steps = np.add.reduceat(backend.to_numpy(data.loss)[:seen], starts) if len(starts) else np.zeros(0)
        if parallel is not None:
            steps = parallel.sum(steps)
        bad = np.flatnonzero(~np.isfinite(steps))
        if check and bad.size:
            raise TrainingDiverged(
                f"the training loss became {steps[bad[0]]} at step {first_step + bad[0] + 1} (epoch {number}, "
                f"batch {bad[0] + 1} of {-(-N // batch_size)}); try a lower learning rate "
                f"(it is {getattr(self.optimizer, 'lr', '?')})")
        sizes = np.minimum(batch_size, N - starts).astype(np.float64)
        record: dict[str, Any] = {"epoch": number, "loss": float(steps.astype(np.float64) @ sizes / max(seen, 1)),
                                  "accuracy": None}
        if data.kind == "labels":
            hits = int(np.count_nonzero(backend.to_numpy(data.hit)[:seen]))
            if parallel is not None:
                hits = int(parallel.sum(np.array([hits]))[0])
            record["accuracy"] = hits / max(seen, 1)
        return record


class _StepOnly:
    """An optimizer with only the public, checked ``step(net)``: the engine calls that."""

    def __init__(self, optimizer):
        self.inner = optimizer

    @property
    def lr(self):
        return getattr(self.inner, "lr", "?")

    def update(self, net, normalizer):
        self.inner.step(net)
