"""gpumlp train: a new run, or one continued with --resume DIR."""
import argparse
import os
from collections.abc import Sequence
from typing import Any

from .. import data, threads
from ..activations import get_activation
from ..model import MLP
from ..optim import SGD
from ..runs import RUN_OPTIONS, Recorder, RunDir
from ..train import TrainState
from .job import Job
from .options import DEFAULT_LR, extra_hint
from .session import Interrupted, train

__all__ = ["cmd_train", "Interrupted"]


def validate(a: argparse.Namespace) -> None:
    """What argparse cannot check alone, before anything is printed or created."""
    get_activation(a.activation)                   # raises ValueError naming the choices
    if a.test_data is not None and a.test_fraction is not None:
        raise ValueError("--test-data is the whole test set: drop --test-fraction (it holds out part of --data)")
    for flag, given in (("--plot", a.plot), ("--force", a.force), ("--checkpoint-every", a.checkpoint_every)):
        if given and not a.out:
            raise ValueError(f"{flag} is about the files of --out DIR: give --out DIR")
    if a.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError(f"--plot needs matplotlib: {extra_hint('plot')}") from None


def blas_threads(opts: dict[str, Any], sizes: Sequence[int], job: Job) -> int:
    if job.size == 1:
        return opts["threads"] or threads.auto_threads(sizes, opts["batch_size"])
    cpus = max(1, (os.cpu_count() or 1) // job.parallel.local_size)     # the ranks on a machine share its CPUs
    return opts["threads"] or threads.auto_threads(sizes, -(-opts["batch_size"] // job.size), cpus=cpus)


def optimizer_of(opts: dict[str, Any]) -> SGD:
    return SGD(opts["lr"], opts["momentum"], opts["weight_decay"], opts["clip_grad_norm"])


def cmd_train(a: argparse.Namespace, given: set[str], job: Job) -> int:
    if a.resume:
        return resume(a, given, job)
    validate(a)
    opts = {k: getattr(a, k) for k in RUN_OPTIONS}
    if opts["lr"] is None:
        opts["lr"] = DEFAULT_LR[a.loss]
    if a.test_data is None and a.test_fraction is None:
        opts["test_fraction"] = 0.2
    prepared = data.prepare(a.data, opts["test_fraction"], a.test_data, dtype=a.dtype)
    net = MLP([prepared.X_train.shape[0], *a.hidden, len(prepared.classes)], activation=a.activation,
              dtype=a.dtype, device=job.backend(a.device), seed=a.seed)
    run, problem = None, None
    if a.out and job.is_root:
        run = RunDir(a.out)
        try:
            run.create(a.force, job.launch)      # fail before training, not after
        except ValueError as e:
            problem = str(e)
    try:
        job.share(problem)                       # every rank stops, not rank 0 alone
        meta = {"loss": a.loss, "margin": a.margin, **prepared.record,
                "blas_threads": blas_threads(opts, net.sizes, job), "args": opts}
        scaler = prepared.scaler
        extra = {"x_mean": scaler.mean, "x_scale": scaler.scale, "classes": prepared.classes}
        return train(job, opts, net, optimizer_of(opts), TrainState(a.seed), prepared,
                     Recorder(run, a.checkpoint_every, meta, extra), a.no_progress, a.out)
    finally:
        if run is not None:
            run.unlock()


def resume(a: argparse.Namespace, given: set[str], job: Job) -> int:
    """Continue the run in --resume DIR from its checkpoint, to its --epochs or to a larger --epochs."""
    extra_options = sorted(f"--{k.replace('_', '-')}" for k in given & set(RUN_OPTIONS + ("out", "force"))
                           if k != "epochs")
    if extra_options:
        raise ValueError(f"--resume takes the run's settings from its checkpoint; drop {', '.join(extra_options)} "
                         "(only --epochs, --device and --no-progress may be given)")
    run, problem = RunDir(a.resume), None
    try:
        if job.is_root:
            try:
                if os.path.isdir(run.path):
                    run.lock()                   # first: a run still going may not have saved a checkpoint yet
                if not run.has("checkpoint.npz"):
                    raise ValueError(f"--resume {a.resume}: there is no checkpoint.npz there (a run saves one "
                                     "with --out)")
            except ValueError as e:
                problem = str(e)
        job.share(problem)
        return _resume(a, given, job, run)
    finally:
        run.unlock()


def _resume(a, given, job, run):
    ck, meta, history, noise, seconds = run.checkpoint(device=job.backend(a.device))
    opts, done = dict(meta["args"]), ck.state.epoch
    if "epochs" in given and a.epochs != opts["epochs"]:
        if a.epochs < opts["epochs"]:
            raise ValueError(f"--resume {a.resume}: the run is of {opts['epochs']} epochs; --epochs can only extend "
                             f"it (give more than {opts['epochs']})")
        opts["epochs"] = a.epochs
        meta = {**meta, "args": opts}
    elif run.is_complete(done, opts["epochs"]):
        final = history[-1]
        job.say(f"gpumlp: {a.resume} is complete, after epoch {done} of {opts['epochs']} (test accuracy "
                f"{final['test_accuracy']:.4f}); nothing was changed. To train it longer: "
                f"{job.launch} train --resume {a.resume} --epochs E, with E > {opts['epochs']}")
        return 0
    test_file = meta.get("test_data") if opts["test_data"] is not None else None
    data_file = None if meta["data"] == "digits" else meta["data"]
    prepared = data.prepare(data_file, None if test_file else meta["test_fraction"], test_file,
                            classes=ck.arrays["classes"],
                            scaler=data.Standardizer(ck.arrays["x_mean"], ck.arrays["x_scale"]))
    for key, name in (("data_sha256", prepared.source), ("test_data_sha256", test_file)):
        if key in meta and prepared.record.get(key) != meta[key]:
            raise ValueError(f"{name} has changed since the checkpoint in {a.resume} was written: "
                             "a resumed run must see the same data")
    optimizer = optimizer_of(opts)
    try:
        optimizer.load_state_dict(ck.net, ck.optimizer_state)
    except ValueError as e:
        raise ValueError(f"{run.file('checkpoint.npz')} is damaged: {e}") from None
    job.say(f"gpumlp: resuming {a.resume} after epoch {done} of {opts['epochs']}", flush=True)
    recorder = Recorder(run if job.is_root else None, opts["checkpoint_every"], meta, ck.arrays, noise, seconds)
    return train(job, opts, ck.net, optimizer, ck.state, prepared, recorder, a.no_progress, a.resume, history)
