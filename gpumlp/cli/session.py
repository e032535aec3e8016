"""One training session of gpumlp train (a new run or a resumed one): fit, with the run's
files kept as it goes, and what it prints."""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import threads
from ..engine import Hook
from ..noise import NoiseScale
from ..train import OutOfDeviceMemory, TrainingDiverged, fit

if TYPE_CHECKING:
    from ..data import Prepared
    from ..engine import Trainer
    from ..runs import Recorder
    from ..state import TrainState
    from .job import Job


class Interrupted(Exception):
    """Ctrl-C during training, after the last completed epoch was saved (or not)."""


class Checkpoints(Hook):
    """The run folder's hook: after each epoch, its record, and the snapshot a checkpoint is
    written from, go to the recorder (``state`` is the TrainState fit advances; ``t0`` when
    this session's training began)."""

    def __init__(self, recorder: Recorder, optimizer: Any, state: TrainState, t0: float) -> None:
        self.recorder, self.optimizer, self.state, self.t0 = recorder, optimizer, state, t0

    def after_epoch(self, trainer: Trainer, record: dict[str, Any]) -> bool | None:
        self.recorder.on_epoch(trainer.net, self.optimizer.state_dict(trainer.net), record, self.state,
                               time.perf_counter() - self.t0)
        return None


def train(job: Job, opts: dict[str, Any], net: Any, optimizer: Any, state: TrainState, prepared: Prepared,
          recorder: Recorder, no_progress: bool, out: str | None = None, history: Sequence[dict] = ()) -> int:
    """Train ``net`` from ``state`` to opts["epochs"], recording into ``recorder``; the exit status."""
    Xtr, ytr, Xte, yte = prepared.X_train, prepared.y_train, prepared.X_test, prepared.y_test
    meta, n_threads = recorder.meta, recorder.meta["blas_threads"]
    if job.parallel is not None and not job.parallel.agree((meta["data_sha256"], json.dumps(meta["args"],
                                                                                          sort_keys=True))):
        raise ValueError("the ranks of this MPI job do not train the same data with the same settings")
    if opts["noise_scale"] and recorder.noise is None:
        recorder.noise = NoiseScale(population=Xtr.shape[1])
    ranks = f", {job.size} MPI ranks" if job.size > 1 else ""
    tested = f"{Xte.shape[1]} test samples" + (f" from {prepared.record['test_data']}"
                                                if "test_data" in prepared.record else "")
    job.say(f"gpumlp: {net} on {prepared.source}: {Xtr.shape[1]} training, {tested}, loss {opts['loss']}, "
            f"batch {opts['batch_size']}, lr {opts['lr']}, {n_threads} BLAS thread(s){ranks}", flush=True)
    recorder.start(list(history))
    log = (job.say if no_progress or not sys.stdout.isatty() else None) if job.is_root else None
    t0 = time.perf_counter()
    scaler = prepared.scaler
    try:
        with threads.limit(n_threads):
            fit(net, scaler(Xtr), ytr, optimizer, loss=opts["loss"], margin=opts["margin"], epochs=opts["epochs"],
                batch_size=opts["batch_size"], X_test=scaler(Xte), y_test=yte,
                progress=not no_progress and job.is_root, log=log, noise_scale=recorder.noise or False, state=state,
                hooks=[Checkpoints(recorder, optimizer, state, t0)], micro_batch=opts["micro_batch"],
                parallel=job.parallel)
        seconds = time.perf_counter() - t0
        recorder.save_checkpoint(net)
        metrics = recorder.finish(net, seconds)
        if recorder.run is not None and opts["plot"]:
            from .plot import draw
            draw(recorder.run, recorder.history, metrics)
    except KeyboardInterrupt:
        recorder.save_checkpoint(net)
        done = recorder.snapshot[0] if recorder.snapshot else state.epoch
        if not out:
            how = "nothing was saved (no --out)"
        elif recorder.run is None:                 # an MPI rank other than 0: rank 0 saves
            how = f"rank 0 keeps {out}"
        elif recorder.run.has("checkpoint.npz"):
            how = (f"resume with: {job.launch} train --resume {out} (gpumlp evaluate and predict read its "
                   "checkpoint meanwhile)")
        else:
            how = "no epoch was completed, so there is nothing to resume"
        raise Interrupted(f"interrupted after epoch {done}; {how}") from None
    except (TrainingDiverged, OutOfDeviceMemory) as e:
        recorder.save_checkpoint(net)
        if recorder.saved_epoch is not None and recorder.run is not None:
            raise type(e)(f"{e}; the last good epoch, {recorder.saved_epoch}, is saved in "
                          f"{recorder.run.file('checkpoint.npz')}") from None
        raise
    summary(job, opts, metrics, net)
    if recorder.run is not None:
        run = recorder.run
        job.say(f"wrote {run.file('model.npz')}, {run.file('checkpoint.npz')} and {run.file('metrics.json')}"
                + (f" and {run.file('curves.png')}" if opts["plot"] else ""))
    return 0


def summary(job: Job, opts: dict[str, Any], metrics: dict[str, Any], net: Any) -> None:
    """The closing lines: the test score, the time (this session's and the whole run's), and
    with --noise-scale the three figures of B_simple, each named."""
    final, session = metrics["history"][-1], metrics["session_train_seconds"]
    took = f"{session:.1f} s" if abs(metrics["train_seconds"] - session) < 0.05 else \
        f"{session:.1f} s in this session, {metrics['train_seconds']:.1f} s in all"
    job.say(f"test accuracy {final['test_accuracy']:.4f}  test loss {final['test_loss']:.4f}  "
            f"({took}, device {net.backend.name})")
    if opts["noise_scale"]:
        def fmt(v):
            return "not resolved" if v is None else f"{v:.0f}"
        job.say(f"gradient noise scale B_simple: {fmt(final['b_simple'])} at the end (moving average), "
                f"{fmt(final['b_simple_start'])} over the first epoch (its batches' means), "
                f"{fmt(final['b_simple_mean'])} over the run (every batch's means)")
