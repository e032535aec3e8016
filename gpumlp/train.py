"""The training loop: mini-batch SGD that reads device values only at the end of an epoch.

Data is checked once and goes to the device once, stored transposed (one sample
per row) so that a batch is a contiguous block of rows, fed to the GEMMs as an
F-contiguous d0 × n view.  Each epoch shuffles it with one gather.  A step is the
private, unchecked path: forward, the loss kernel (which writes ∂L/∂Y into Δ_L
and each column's loss and hit into epoch-long device vectors), backward and the
optimizer's update.  The host reads those vectors once, at the end of the epoch,
to report and to stop a run whose loss has turned NaN or infinite, naming the
first bad step.
"""
import time

import numpy as np
from tqdm.auto import tqdm

from ._checks import positive_int, to_labels
from .losses import check_margin, get_loss, targets
from .noise import NoiseScale, StepRecords

__all__ = ["fit", "evaluate", "TrainingDiverged", "TrainState", "OutOfDeviceMemory"]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class OutOfDeviceMemory(RuntimeError):
    """The device ran out of memory; the message names the batch size."""


def _out_of_memory(e):
    """CuPy's OutOfMemoryError (and cuBLAS's allocation failure), or a host MemoryError."""
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "CUBLAS_STATUS_ALLOC_FAILED" in str(e)


class TrainState:
    """Where a run stands at an epoch boundary: the epochs and steps done, and the
    generator that draws each epoch's shuffling order (once per epoch, so its state at
    the boundary is all a resumed run needs).  :func:`fit` advances it; a checkpoint
    saves it with :meth:`to_json` and a resumed run rebuilds it with :meth:`from_json`."""

    def __init__(self, seed=0):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer; got {seed!r}")
        self.rng = np.random.default_rng(seed)
        self.epoch = self.step = 0

    def to_json(self):
        return {"epoch": self.epoch, "step": self.step, "rng": self.rng.bit_generator.state}

    @classmethod
    def from_json(cls, d):
        state = cls()
        try:
            state.epoch, state.step = int(d["epoch"]), int(d["step"])
            bits = getattr(np.random, d["rng"]["bit_generator"])()
            bits.state = d["rng"]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"the training state is damaged ({type(e).__name__}: {e})") from None
        state.rng = np.random.Generator(bits)
        return state

    def __repr__(self):
        return f"TrainState(epoch={self.epoch}, step={self.step})"


class _Data:
    """X (d0 × N) and labels, checked and on the model's device, stored as XT (N × d0).
    With ``kind="targets"`` y holds real targets (K × N), stored as y = T^T (N × K), so
    that the epoch's shuffle gathers its rows as it does XT's, and the loss kernel
    takes a batch's rows."""

    def __init__(self, net, X, y, kind="labels"):
        X = net._input(X, copy=False)
        backend, self.N = net.backend, X.shape[1]
        if kind == "labels":
            self.y = to_labels(backend, y, self.N, net.sizes[-1])
        else:
            self.y = backend.transposed(targets(backend, y, net.sizes[-1], self.N, net.params.dtype))
        self.kind = kind
        self.XT = backend.transposed(X)
        self.loss = backend.empty((self.N,), net.params.dtype)        # each column's loss
        self.hit = backend.empty((self.N,), backend.dtype("bool"))    # argmax == label
        self.XTe = self.ye = None                                     # the epoch's shuffled copy
        self.records = None                                           # per-step noise-scale records

    def shuffle(self, backend, order):
        """The epoch's order, gathered into XTe and ye (allocated once)."""
        if self.XTe is None:
            self.XTe, self.ye = backend.empty(self.XT.shape, self.XT.dtype), backend.empty(self.y.shape, self.y.dtype)
        backend.take_rows(self.XT, order, self.XTe)
        backend.take_rows(self.y, order, self.ye)


class _PublicStep:
    """An optimizer that has only the public ``step(net)``: fit calls that instead."""

    def __init__(self, optimizer):
        self._update, self.lr = optimizer.step, getattr(optimizer, "lr", "?")


def _forward_loss(net, Z0, labels, loss_kernel, margin, inv_norm, loss_out, hit_out):
    """The forward pass, then the loss kernel: ∂L/∂Y into Δ_L's buffer, and each column's
    loss (divided by 1 / ``inv_norm``) and hit into ``loss_out`` and ``hit_out``."""
    Y = net._forward(Z0)
    net._inv_batch = inv_norm        # 1 / the whole batch's N, for an optimizer that scales by it
    ws = net._ws
    loss_kernel(Y, labels, ws.D[-1], loss_out, hit_out, inv_norm, margin, ws.loss_scratch)


def _step(net, Z0, labels, loss_kernel, margin, optimizer, loss_out, hit_out, records=None, i=0):
    """One training step on a device batch, with no checks and no host reads.  With
    ``records`` (a :class:`gpumlp.noise.StepRecords`), the per-example gradient norms and
    |ḡ|² of the batch go into its row i, between the backward pass and the update."""
    _forward_loss(net, Z0, labels, loss_kernel, margin, 1.0 / Z0.shape[1], loss_out, hit_out)
    net._backward()
    if records is not None:
        records.record(net, i)
    optimizer._update(net)


def _score(net, data, loss_kernel, margin, batch_size=4096):
    """``(mean loss, accuracy)`` on checked device data: every column's loss is
    normalised by the whole N, and the host reads the sums once."""
    xp, N = net.xp, data.N
    for s in range(0, N, batch_size):
        e = min(s + batch_size, N)
        _forward_loss(net, data.XT[s:e, :].T, data.y[s:e], loss_kernel, margin, 1.0 / N, data.loss[s:e], data.hit[s:e])
    loss = net.backend.to_numpy(xp.sum(data.loss))
    if data.kind != "labels":
        return float(loss), None                  # regression: no accuracy
    hits = net.backend.to_numpy(data.hit)
    return float(loss), float(np.count_nonzero(hits)) / N


def evaluate(net, X, y, loss="ce", margin=1.0, batch_size=4096):
    """``(mean loss, accuracy)`` of ``net`` on X (d0 × N) with labels y, as floats; for a loss
    on real targets (``squared_error``, y of shape K × N) the accuracy is None."""
    entry, batch_size = get_loss(loss), positive_int(batch_size, "batch_size")
    margin = check_margin(margin)
    try:
        return _score(net, _Data(net, X, y, entry.kind), net.backend.kernel(entry.kernel), margin, batch_size)
    finally:
        net._release_inputs()


def fit(net, X, y, optimizer, loss="ce", margin=1.0, epochs=30, batch_size=32,
        X_test=None, y_test=None, seed=0, progress=True, log=None, noise_scale=False,
        state=None, on_epoch=None, micro_batch=None, parallel=None):
    """Train ``net`` on X (d0 × N) and labels y; returns the per-epoch history.

    ``progress`` shows a progress bar on a terminal (never in a log) and, unless ``log``
    says otherwise, one line per epoch; ``log`` is a function that takes each epoch's
    line (``print``, say), or None.

    ``state`` (a :class:`TrainState`) resumes a run: the shuffling generator and the
    counters continue from it, and ``epochs`` is the run's total, so a state after 7 of
    30 epochs trains epochs 8 to 30 (``seed`` is then unused).  ``fit`` advances the
    state at every epoch boundary and then calls ``on_epoch(record, state)``: the place
    to save a checkpoint, together with the parameters and the optimizer's state, all
    as they are after that epoch.  The optimizer's momentum lives in the optimizer
    (``SGD.get_state(net)`` / ``set_state``).

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
    entry = get_loss(loss)
    margin = check_margin(margin)
    if not hasattr(optimizer, "_update"):
        if not callable(getattr(optimizer, "step", None)):
            raise ValueError(f"optimizer must have a step(net) method, as gpumlp.SGD does; got {optimizer!r}")
        optimizer = _PublicStep(optimizer)
    if not (isinstance(noise_scale, (bool, NoiseScale))):
        raise ValueError(f"noise_scale must be True, False or a gpumlp.noise.NoiseScale; got {noise_scale!r}")
    train = _Data(net, X, y, entry.kind)
    test = None if X_test is None else _Data(net, X_test, y_test, entry.kind)
    noise = (NoiseScale(population=train.N) if noise_scale is True else noise_scale) or None
    if noise is not None and noise.population not in (None, train.N):
        raise ValueError(f"the NoiseScale's population is {noise.population}, but the training data has "
                         f"{train.N} columns: batches are drawn from those")
    if state is None:
        state = TrainState(seed)
    elif not isinstance(state, TrainState):
        raise ValueError(f"state must be a gpumlp.train.TrainState; got {state!r}")
    if on_epoch is not None and not callable(on_epoch):
        raise ValueError(f"on_epoch must be a function (record, state); got {on_epoch!r}")
    if log is None and progress:
        log = tqdm.write
    kernel = net.backend.kernel(entry.kernel)
    plan = None
    if micro_batch is not None or parallel is not None:
        plan = _Plan(net, micro_batch if micro_batch is not None and micro_batch < batch_size else None, parallel)
        if parallel is not None:
            parallel.broadcast(net.backend, net.params)          # every rank starts from rank 0's parameters
    history = []
    # NumPy would warn about overflow step by step before the loss turns NaN;
    # the check at the end of each epoch stops the run with one clear message instead.
    n_steps = -(-train.N // batch_size)
    try:
        with np.errstate(over="ignore", invalid="ignore"), \
                tqdm(total=max(0, epochs - state.epoch) * n_steps, unit="batch",
                     disable=None if progress else True, leave=False) as bar:
            for epoch in range(state.epoch + 1, epochs + 1):
                record = _epoch(net, train, kernel, margin, optimizer, state.rng, batch_size, epoch, bar, test,
                                noise, first_step=state.step, plan=plan)
                state.epoch, state.step = epoch, state.step + n_steps
                history.append(record)
                if log is not None:
                    log(_describe(record, epochs))
                if on_epoch is not None:
                    on_epoch(record, state)
    except Exception as e:
        if not _out_of_memory(e):
            raise
        raise OutOfDeviceMemory(
            f"the {net.backend.name} device ran out of memory training at batch size {batch_size} "
            f"({type(e).__name__}); try a smaller batch size (--batch-size), or compute each batch in "
            f"smaller chunks with the same result (--micro-batch M, fit(micro_batch=M)). The step that failed "
            f"made no update: the parameters are those after the last step that ran") from None
    finally:
        net._release_inputs()             # the cached batches must not keep the data alive
    return history


class _Plan:
    """How a batch becomes one step when it is not computed whole: in micro-batches of at
    most ``micro`` columns and/or, under ``parallel``, only this rank's share of its
    columns.  Every chunk's loss is normalised by the whole batch, so the chunks' and the
    ranks' gradients add up to the batch's: over chunks in an accumulator, over ranks
    with one all-reduce, before the one update every rank makes alike."""

    def __init__(self, net, micro, parallel):
        self.micro, self.parallel = micro, parallel
        self.acc = net.backend.zeros(tuple(net.grads.shape), net.grads.dtype) if micro else None

    def step(self, net, data, s, e, kernel, margin, optimizer, records, i):
        """One step on the batch [s, e) (``optimizer`` None: the gradients only, no update)."""
        xp, inv = net.xp, 1.0 / (e - s)
        net._inv_batch = inv                           # also on a rank whose share is empty
        lo, hi = (s, e) if self.parallel is None else self.parallel.shard(s, e)
        size = self.micro or max(hi - lo, 1)
        chunks = range(lo, hi, size)
        last = len(chunks) - 1
        for j, c in enumerate(chunks):
            d = min(c + size, hi)
            _forward_loss(net, data.XTe[c:d, :].T, data.ye[c:d], kernel, margin, inv, data.loss[c:d], data.hit[c:d])
            net._backward()
            if records is not None:
                records.record_norms(net, i, add=j > 0)
            if last:                                   # several chunks: sum their gradients
                if j == 0:
                    self.acc[...] = net.grads
                elif j < last:
                    xp.add(self.acc, net.grads, out=self.acc)
                else:
                    xp.add(net.grads, self.acc, out=net.grads)
        if not chunks:                                 # fewer columns than ranks: this one has none
            net.grads[...] = 0
            if records is not None:
                records.zero_norms(i)
        if self.parallel is not None:
            self.parallel.allreduce(net.backend, net.grads)
        if records is not None:
            records.record_grad(net, i)
        if optimizer is not None:
            optimizer._update(net)


def _epoch(net, data, kernel, margin, optimizer, rng, batch_size, epoch, bar, test, noise=None, first_step=None,
           plan=None):
    """One pass over the shuffled data; the host reads the step losses once, at the end."""
    backend, N = net.backend, data.N
    t0 = time.perf_counter()
    data.shuffle(backend, backend.asarray(rng.permutation(N), backend.dtype("int64")))
    starts = range(0, N, batch_size)
    if noise is not None and data.records is None:
        data.records = StepRecords(net, len(starts))
    records = None if noise is None else data.records
    parallel = None if plan is None else plan.parallel
    if parallel is not None:                    # each rank fills only its columns' losses and hits
        data.loss[...] = 0
        data.hit[...] = False
    for i, s in enumerate(starts):
        e = min(s + batch_size, N)
        if plan is None:
            _step(net, data.XTe[s:e, :].T, data.ye[s:e], kernel, margin, optimizer, data.loss[s:e], data.hit[s:e],
                  records, i)
        else:
            plan.step(net, data, s, e, kernel, margin, optimizer, records, i)
        bar.update(1)
    columns = backend.to_numpy(data.loss)                  # the host reads only from here on
    steps = np.add.reduceat(columns, np.asarray(starts))   # each step's mean loss over its batch
    if parallel is not None:
        steps = parallel.sum(steps)
    bad = np.flatnonzero(~np.isfinite(steps))
    if bad.size:
        step = ((epoch - 1) * len(starts) if first_step is None else first_step) + bad[0] + 1
        raise TrainingDiverged(
            f"the training loss became {steps[bad[0]]} at step {step} (epoch {epoch}, "
            f"batch {bad[0] + 1} of {len(starts)}); try a lower learning rate "
            f"(it is {getattr(optimizer, 'lr', '?')})")
    sizes = np.minimum(batch_size, N - np.asarray(starts)).astype(np.float64)
    hits = None
    if data.kind == "labels":
        hits = np.count_nonzero(backend.to_numpy(data.hit))
        if parallel is not None:
            hits = int(parallel.sum(np.array([hits]))[0])
    record = {"epoch": epoch, "loss": float(steps.astype(np.float64) @ sizes / N),
              "accuracy": None if hits is None else float(hits) / N}
    if noise is not None:
        sums, grad_sq = records.read(backend, 0, len(starts))
        noise.update(parallel.sum(sums) if parallel is not None else sums, grad_sq, sizes)
        record.update(b_simple=noise.b_simple, b_simple_mean=noise.b_simple_mean,
                      b_simple_start=noise.b_simple_start)
    if test is not None:
        record["test_loss"], record["test_accuracy"] = _score(net, test, kernel, margin)
    record["seconds"] = time.perf_counter() - t0
    return record


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
        line += f"  B_simple {'-' if b is None else format(b, '.0f')}"
    return line
