"""The gpumlp command: train, evaluate, predict, plot, example.

Exit codes: 0 success, 2 a usage or input error (bad options, data or files), 1 a
failure during training (divergence, a device that is missing or fails), 130 an
interrupt (Ctrl-C).
"""
import argparse
import csv
import json
import os
import sys
import time

import numpy as np

from . import __version__, data, io, parallel as mpi, threads
from .activations import get_activation
from .backend import DeviceUnavailableError
from .example import exercise2, walkthrough
from .losses import LOSSES
from .model import MLP
from .optim import SGD
from .classifier import Classifier
from .noise import NoiseScale
from .train import OutOfDeviceMemory, TrainingDiverged, TrainState, fit

SPLIT_SEED = 0
SPLIT_VERSION = 2          # 2: the split depends only on the sample order and the seed (gpumlp 0.3)
DEFAULT_LR = {name: entry.lr for name, entry in LOSSES.items() if entry.kind == "labels"}  # tuned on the digits
RUN_FILES = ("model.npz", "checkpoint.npz")       # what makes a folder hold a run
OLD_FILES = ("metrics.json", "metrics.jsonl", "curves.png")   # replaced by a new run
# the options a run is made of: a resumed run takes them from its checkpoint
RUN_OPTIONS = ("data", "loss", "epochs", "batch_size", "lr", "momentum", "weight_decay", "hidden", "activation",
               "margin", "dtype", "seed", "test_fraction", "threads", "checkpoint_every", "noise_scale",
               "clip_grad_norm", "plot", "micro_batch")


class Interrupted(Exception):
    """Ctrl-C during training, after the last completed epoch was saved (or not)."""


def _hidden(text):
    try:
        widths = [int(w) for w in text.replace(",", " ").split()]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"--hidden takes positive layer widths such as 128 or 128,64; got {text!r}")
    return widths


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _number(low, high=None, low_open=False, high_open=True):
    """A float in [low, high) (or as the flags say), for argparse."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = np.isfinite(value) and (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
        if not ok:
            lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
            span = f"{lo}{low}, {high}{hi}" if high is not None else f"{'> ' if low_open else '>= '}{low}"
            raise argparse.ArgumentTypeError(f"expected a number {'in ' if high is not None else ''}{span}; got {text!r}")
        return value
    return parse


class _About:
    """Errors raised while preparing data name the data file (``with _About(source):``)."""

    def __init__(self, source):
        self.source = source

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if kind is ValueError and self.source != "digits" and self.source not in str(e):
            raise ValueError(f"{self.source}: {e}") from None
        return False


def _load(path):
    """(X, y, name): the user's .npz, or the embedded digits."""
    if path is None:
        X, y = data.load_digits()
        return X, y, "digits"
    X, y = data.load_npz(path)
    return X, y, os.path.abspath(path)


def _split(X, idx, test_fraction):
    """The stratified train/test split of X and its class indices, with the fixed split seed."""
    train, test = data.split(idx, test_fraction, SPLIT_SEED)
    return X[:, train], idx[train], X[:, test], idx[test]


def _make_out_dir(path, force):
    """Create --out; refuse a folder that holds another run unless --force."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--out {path}: cannot create that folder (a file of that name exists)")
    held = [f for f in RUN_FILES if os.path.exists(os.path.join(path, f))]
    if held and not force:
        raise ValueError(f"--out {path} already holds a run ({', '.join(held)}): pass --force to replace it, "
                         f"or continue it with: gpumlp train --resume {path}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {path}: cannot create that folder ({e.strerror})") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"--out {path}: the folder is not writable")
    for f in held + [f for f in OLD_FILES if os.path.exists(os.path.join(path, f))]:
        os.unlink(os.path.join(path, f))            # --force, or the traces of a run that saved nothing


class _Run:
    """A training run's files in --out: one JSON line per epoch in metrics.jsonl as it
    goes, a checkpoint every K epochs and at the end (atomic, from a host snapshot taken
    at the epoch boundary), and on an interrupt the last completed epoch."""

    def __init__(self, out, every, meta, extra, noise=None):
        self.out, self.every, self.meta, self.extra, self.noise = out, every, meta, extra, noise
        self.snapshot = None                 # (epoch, params, optimizer state, TrainState, noise scale json)
        self.saved_epoch = None
        self.history = []

    def path(self, name):
        return os.path.join(self.out, name)

    def start(self, history):
        """The metrics history so far (a resumed run's, up to its checkpoint), rewritten."""
        self.history = list(history)
        if self.out:
            lines = "".join(json.dumps(h) + "\n" for h in history)
            io.atomic_write(self.path("metrics.jsonl"), lambda f: f.write(lines), mode="w")

    def on_epoch(self, net, optimizer, record, state):
        self.history.append(record)
        if not self.out:
            return
        with open(self.path("metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.snapshot = (state.epoch, net.backend.to_numpy(net.params), optimizer.get_state(net),
                         TrainState.from_json(state.to_json()), None if self.noise is None else self.noise.to_json())
        if self.every and state.epoch % self.every == 0:
            self.save_checkpoint(net)

    def save_checkpoint(self, net):
        """The last epoch boundary's snapshot as DIR/checkpoint.npz (nothing to do if saved)."""
        if not self.out or self.snapshot is None or self.saved_epoch == self.snapshot[0]:
            return
        epoch, params, opt_state, state, noise = self.snapshot
        meta = {**self.meta, "history": [h for h in self.history if h["epoch"] <= epoch], "noise_scale_state": noise}
        io.save_checkpoint(self.path("checkpoint.npz"), net, opt_state, state, meta, params=params, **self.extra)
        self.saved_epoch = epoch


def _validate(a):
    """What argparse cannot check alone, before anything is printed or created."""
    get_activation(a.activation)                   # raises ValueError naming the choices
    if not 0 < a.test_fraction < 1:
        raise ValueError(f"--test-fraction must lie strictly between 0 and 1; got {a.test_fraction}")
    for flag, given in (("--plot", a.plot), ("--force", a.force), ("--checkpoint-every", a.checkpoint_every)):
        if given and not a.out:
            raise ValueError(f"{flag} is about the files of --out DIR: give --out DIR")
    if a.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib: pip install 'gpumlp[plot]'") from None


def _parallel(device=None):
    """The MPI job this process belongs to (None without one), and its rank for printing."""
    global _RANK
    global _JOB
    job = _JOB = mpi.from_environment()
    _RANK = 0 if job is None else job.rank
    if job is not None and str(device or "").lower() != "cpu":
        job.use_local_gpu()              # P ranks on a P-GPU machine: one GPU each (if CuPy is there)
    return job


def cmd_train(a, given):
    job = _parallel(a.device)
    if a.resume:
        return _resume(a, given, job)
    _validate(a)
    X, y, source = _load(a.data)
    if a.lr is None:
        a.lr = DEFAULT_LR[a.loss]
    with _About(source):
        idx, classes = data.encode_labels(y)
        if len(classes) < 2:
            raise ValueError(f"{source} has {len(classes)} class{'es' if len(classes) != 1 else ''} in y; "
                             "classification needs at least 2")
        Xtr, ytr, Xte, yte = _split(X, idx, a.test_fraction)
        scaler = data.Standardizer.fit(Xtr)
        scaler.within(Xte, a.dtype, "some test values")   # checked before anything is written
    net = MLP([X.shape[0], *a.hidden, len(classes)], activation=a.activation, dtype=a.dtype,
              device=a.device, seed=a.seed)
    problem = None
    if a.out and _RANK == 0:
        try:
            _make_out_dir(a.out, a.force)        # fail before training, not after
        except ValueError as e:
            problem = str(e)
    if job is not None:
        problem = job.comm.bcast(problem, root=0)    # every rank stops, not rank 0 alone
    if problem:
        raise ValueError(problem)
    if job is None:
        n_threads = a.threads or threads.auto_threads(net.sizes, a.batch_size)
    else:                                        # the ranks on a machine share its CPUs
        cpus = max(1, (os.cpu_count() or 1) // job.local_size)
        n_threads = a.threads or threads.auto_threads(net.sizes, -(-a.batch_size // job.size), cpus=cpus)
    meta = {"loss": a.loss, "margin": a.margin, "data": source, "data_sha256": data.fingerprint(X, y),
            "test_fraction": a.test_fraction, "split_seed": SPLIT_SEED, "split_version": SPLIT_VERSION,
            "blas_threads": n_threads,
            "args": {k: getattr(a, k) for k in RUN_OPTIONS}}
    extra = {"x_mean": scaler.mean, "x_scale": scaler.scale, "classes": classes}
    optimizer = SGD(a.lr, a.momentum, a.weight_decay, a.clip_grad_norm)
    return _train(a, net, optimizer, TrainState(a.seed), scaler, (Xtr, ytr, Xte, yte), meta, extra, [], source, job)


def _resume(a, given, job=None):
    """Continue the run in --resume DIR from its checkpoint, to its original --epochs."""
    extra_options = sorted(f"--{k.replace('_', '-')}" for k in given & set(RUN_OPTIONS + ("out", "force")))
    if extra_options:
        raise ValueError(f"--resume takes the run's settings from its checkpoint; drop {', '.join(extra_options)} "
                         "(only --device and --no-progress may be given)")
    path = os.path.join(a.resume, "checkpoint.npz")
    if not os.path.exists(path):
        raise ValueError(f"--resume {a.resume}: there is no checkpoint.npz there (a run saves one with --out)")
    ck = io.load_checkpoint(path, device=a.device)
    meta, history, noise = _checked_meta(path, ck)
    for k, v in meta["args"].items():
        setattr(a, k, v)
    X, y, source = _load(None if meta["data"] == "digits" else meta["data"])
    if data.fingerprint(X, y) != meta["data_sha256"]:
        raise ValueError(f"{source} has changed since the checkpoint in {a.resume} was written: "
                         "a resumed run must see the same data")
    with _About(source):
        idx, _ = data.encode_labels(y, ck.arrays["classes"])
        Xtr, ytr, Xte, yte = _split(X, idx, meta["test_fraction"])
    scaler = data.Standardizer(ck.arrays["x_mean"], ck.arrays["x_scale"])
    optimizer = SGD(a.lr, a.momentum, a.weight_decay, a.clip_grad_norm)
    try:
        optimizer.set_state(ck.net, ck.optimizer_state)
    except ValueError as e:
        raise ValueError(f"{path} is damaged: {e}") from None
    a.out, a.threads = a.resume, meta["blas_threads"]        # the same BLAS threads: the same bits
    _say(f"gpumlp: resuming {a.resume} after epoch {ck.state.epoch} of {a.epochs}", flush=True)
    return _train(a, ck.net, optimizer, ck.state, scaler, (Xtr, ytr, Xte, yte), meta, ck.arrays, history, source,
                  job, noise)


def _checked_meta(path, ck):
    """A checkpoint's run record, checked key by key: (meta, history, noise scale or None).
    Anything missing or of the wrong type is the file's damage, named as such."""
    m = ck.meta

    def need(ok, what):
        if not ok:
            raise ValueError(f"{path} is damaged: {what}")
    need(m.get("split_version") == SPLIT_VERSION,
         "it was written by an older gpumlp whose held-out split differs (or its split version is missing); "
         "start the run again")
    args = m.get("args")
    need(isinstance(args, dict) and set(RUN_OPTIONS) <= set(args), "its run settings are incomplete")
    need(isinstance(m.get("data"), str) and isinstance(m.get("data_sha256"), str), "it does not record its data")
    need(isinstance(m.get("test_fraction"), float) and 0 < m["test_fraction"] < 1, "its test fraction is invalid")
    need(isinstance(m.get("blas_threads"), int) and m["blas_threads"] >= 1, "its BLAS thread count is invalid")
    history = m.get("history")
    need(isinstance(history, list) and all(isinstance(h, dict) and isinstance(h.get("epoch"), int)
                                           and "loss" in h and "test_accuracy" in h for h in history),
         "its history is invalid")
    need([h["epoch"] for h in history] == list(range(1, ck.state.epoch + 1)), "its history does not match its epoch")
    missing = {"x_mean", "x_scale", "classes"} - set(ck.arrays)
    need(not missing, f"it lacks {sorted(missing)}")
    noise = None
    if args["noise_scale"]:
        try:
            noise = NoiseScale.from_json(m.get("noise_scale_state") or {})
        except ValueError as e:
            need(False, str(e))
    meta = {k: v for k, v in m.items() if k not in ("history", "noise_scale_state")}
    return meta, history, noise


def _say(*args, **kwargs):
    """print, on rank 0 of an MPI job (or in a plain run) only.  When the reader of stdout
    has gone (`gpumlp train | head`), training goes on quietly and still saves its files."""
    if _RANK != 0:
        return
    try:
        print(*args, **kwargs)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout():
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


_RANK = 0
_JOB = None              # the MPI job of this process (None in a plain run)


def _train(a, net, optimizer, state, scaler, split, meta, extra, history, source, parallel=None, noise=None):
    Xtr, ytr, Xte, yte = split
    n_threads = meta["blas_threads"]
    if parallel is not None and not parallel.agree((meta["data_sha256"], json.dumps(meta["args"], sort_keys=True))):
        raise ValueError("the ranks of this MPI job do not train the same data with the same settings")
    if a.noise_scale and noise is None:
        noise = NoiseScale(population=Xtr.shape[1])
    ranks = f", {parallel.size} MPI ranks" if parallel is not None else ""
    _say(f"gpumlp: {net} on {source}: {Xtr.shape[1]} training, {Xte.shape[1]} test samples, "
         f"loss {a.loss}, batch {a.batch_size}, lr {a.lr}, {n_threads} BLAS thread(s){ranks}", flush=True)
    run = _Run(a.out if _RANK == 0 else None, a.checkpoint_every, meta, extra, noise)   # rank 0 alone writes
    run.start(history)
    log = (_say if a.no_progress or not sys.stdout.isatty() else None) if _RANK == 0 else None
    t0 = time.perf_counter()
    try:
        with threads.limit(n_threads):
            fit(net, scaler(Xtr), ytr, optimizer, loss=a.loss, margin=a.margin, epochs=a.epochs,
                batch_size=a.batch_size, X_test=scaler(Xte), y_test=yte,
                progress=not a.no_progress and _RANK == 0, log=log, noise_scale=noise or False, state=state,
                on_epoch=lambda record, st: run.on_epoch(net, optimizer, record, st),
                micro_batch=a.micro_batch, parallel=parallel)
        seconds = time.perf_counter() - t0
        run.save_checkpoint(net)
        if a.out and _RANK == 0:
            _finish(a, run, net, meta, extra, seconds)
    except KeyboardInterrupt:
        run.save_checkpoint(net)
        done = run.snapshot[0] if run.snapshot else state.epoch
        if not a.out:
            how = "nothing was saved (no --out)"
        elif run.out is None:                      # an MPI rank other than 0: rank 0 saves
            how = f"rank 0 keeps {a.out}"
        elif os.path.exists(run.path("checkpoint.npz")):
            how = f"resume with: gpumlp train --resume {a.out}"
        else:
            how = "no epoch was completed, so there is nothing to resume"
        raise Interrupted(f"interrupted after epoch {done}; {how}") from None
    except (TrainingDiverged, OutOfDeviceMemory) as e:
        run.save_checkpoint(net)
        if run.saved_epoch is not None and run.out is not None:
            raise type(e)(f"{e}; the last good epoch, {run.saved_epoch}, is saved in "
                          f"{run.path('checkpoint.npz')}") from None
        raise
    final = run.history[-1]
    _say(f"test accuracy {final['test_accuracy']:.4f}  test loss {final['test_loss']:.4f}  "
         f"({seconds:.1f} s, device {net.backend.name})")
    if a.noise_scale:
        fmt = lambda v: "not resolved" if v is None else f"{v:.0f}"   # noqa: E731
        _say(f"gradient noise scale B_simple: {fmt(final['b_simple'])} at the end (moving average), "
             f"{fmt(final['b_simple_start'])} in the first epoch, {fmt(final['b_simple_mean'])} over the run")
    if a.out and _RANK == 0:
        _say(f"wrote {run.path('model.npz')}, {run.path('checkpoint.npz')} and {run.path('metrics.json')}"
             + (f" and {run.path('curves.png')}" if a.plot else ""))
    return 0


def _finish(a, run, net, meta, extra, seconds):
    """A finished run's files: model.npz, metrics.json and, with --plot, curves.png."""
    final = run.history[-1]
    model_meta = {k: v for k, v in meta.items() if k != "args"}
    io.save(run.path("model.npz"), net, model_meta, **{k: extra[k] for k in ("x_mean", "x_scale", "classes")})
    metrics = {"test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
               "train_seconds": seconds, "device": net.backend.name, "history": run.history,
               "args": meta["args"], **model_meta}
    io.atomic_write(run.path("metrics.json"), lambda f: json.dump(metrics, f, indent=2), mode="w")
    if a.plot:
        from .plot import learning_curves
        learning_curves(run.history, run.path("curves.png"), title=f"gpumlp run {os.path.abspath(a.out)}")


def _draw(folder, history):
    from .plot import learning_curves
    path = os.path.join(folder, "curves.png")
    learning_curves(history, path, title=f"gpumlp run {os.path.abspath(folder)}")
    print(f"wrote {path}")


def _history(folder):
    """A run's per-epoch history: metrics.json when the run finished, else metrics.jsonl."""
    for name in ("metrics.json", "metrics.jsonl"):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        try:
            with open(path) as f:
                if name == "metrics.json":
                    return json.load(f)["history"]
                lines = [line for line in f if line.strip()]
                try:
                    return [json.loads(line) for line in lines]
                except ValueError:               # a run killed mid-write: its last line may be torn
                    return [json.loads(line) for line in lines[:-1]]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is damaged: {e}") from None
    raise ValueError(f"{folder} holds no metrics.json or metrics.jsonl (a run writes them with --out)")


def cmd_plot(a, given):
    if not os.path.isdir(a.run):
        raise ValueError(f"{a.run} is not a folder written by 'gpumlp train --out'")
    _draw(a.run, _history(a.run))
    return 0


def cmd_predict(a, given):
    if a.out and (os.path.isdir(a.out) or not os.path.isdir(os.path.dirname(os.path.abspath(a.out)))):
        raise ValueError(f"--out {a.out}: give a file in an existing folder")
    clf = Classifier.load(a.model, device=a.device)
    X, _ = data.load_npz(a.data, labels=False)
    d0 = clf.net.sizes[0]
    if X.shape[0] != d0:
        hint = " (one sample per row? save X.T)" if X.shape[1] == d0 else ""
        raise ValueError(f"X in {a.data} has {X.shape[0]} rows (features); the model takes {d0}{hint}")
    with _About(os.path.abspath(a.data)):
        labels = clf.predict(X)
    if a.out:
        def write(f):
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["sample", "label"])
            w.writerows(enumerate(labels.tolist()))
        io.atomic_write(a.out, write, mode="w")
        print(f"wrote {len(labels)} predictions to {a.out}")
    else:
        sys.stdout.write("".join(f"{label}\n" for label in labels.tolist()))
    return 0


def cmd_evaluate(a, given):
    path = os.path.join(a.model, "model.npz") if os.path.isdir(a.model) else a.model
    clf = Classifier.load(path, device=a.device)
    meta = clf.meta
    source = a.data if a.data else (None if meta.get("data") == "digits" else meta.get("data"))
    if source is not None and not a.data and not os.path.exists(source):
        raise ValueError(f"{path} was trained on {source}, which is not there any more: "
                         "pass the data with --data FILE.npz")
    X, y, source = _load(source)
    if X.shape[0] != clf.net.sizes[0]:
        raise ValueError(f"{source} has {X.shape[0]} features (rows of X); the model in {path} takes "
                         f"{clf.net.sizes[0]}")
    if a.split == "test" and meta.get("split_version") != SPLIT_VERSION:
        raise ValueError(f"{path} was written by an older gpumlp whose held-out split differs, so the 'test' "
                         "split would not be its held-out samples; score it with --split all")
    if a.split == "test" and meta.get("data_sha256") != data.fingerprint(X, y):
        raise ValueError(f"{source} is not the data this model was trained on, so its 'test' split "
                         "would not be the held-out samples (it could hold training samples); "
                         "score it with --split all")
    if a.split == "test":
        idx, _ = data.encode_labels(y, clf.classes)
        _, _, X, idx = _split(X, idx, meta.get("test_fraction", 0.2))
        y = clf.classes[idx]
    loss, acc = clf.evaluate(X, y)
    result = {"model": path, "data": source, "split": a.split, "samples": int(X.shape[1]),
              "loss": loss, "accuracy": acc, "device": clf.net.backend.name}
    print(json.dumps(result) if a.json else
          f"{source} ({a.split} split, {X.shape[1]} samples): accuracy {acc:.4f}  loss {loss:.4f}")
    return 0


def cmd_example(a, given):
    print(walkthrough(exercise2(device=a.device)))
    return 0


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, except where there is none to show."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def parser():
    fmt = _Help
    p = argparse.ArgumentParser(prog="gpumlp", description=__doc__.split("\n\n")[0].rstrip(".") + ".",
                                formatter_class=fmt, allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"gpumlp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", allow_abbrev=False, help="train an MLP classifier (default: the embedded digits)", formatter_class=fmt,
                       description="Train an MLP classifier on the embedded digits or on your own data.")
    t.add_argument("--data", metavar="FILE.npz",
                   help="your own data: X (d0 × N, one sample per column) and y (N labels); default: the digits")
    t.add_argument("--loss", choices=["ce", "hinge", "mse"], default="ce",
                   help="softmax cross-entropy, exercise 3's hinge on softmax, or squared error on one-hot targets")
    t.add_argument("--device", default=None, help="auto, cpu or gpu (default: $GPUMLP_DEVICE, else auto)")
    t.add_argument("--epochs", type=_positive, default=30, help="passes over the training data")
    t.add_argument("--batch-size", type=_positive, default=32, help="columns per SGD step")
    t.add_argument("--lr", type=_number(0, low_open=True), default=None,
                   help="learning rate (default by loss: %s)" % ", ".join(f"{k} {v}" for k, v in DEFAULT_LR.items()))
    t.add_argument("--momentum", type=_number(0, 1), default=0.9, help="SGD momentum, in [0, 1)")
    t.add_argument("--weight-decay", type=_number(0), default=1e-3, help="SGD weight decay (biases too)")
    t.add_argument("--hidden", type=_hidden, default=[256], help="hidden widths, e.g. 256 or 256,128 (default: 256)")
    t.add_argument("--activation", default="relu", help="relu, tanh, sigmoid, leaky_relu or linear")
    t.add_argument("--margin", type=_number(0), default=1.0, help="hinge margin C (--loss hinge)")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="the model's precision")
    t.add_argument("--seed", type=int, default=0, help="initial weights and shuffling")
    t.add_argument("--test-fraction", type=_number(0, 1, low_open=True), default=0.2,
                   help="the share of every class held out as the test split")
    t.add_argument("--threads", type=_positive, default=None,
                   help="BLAS threads on the CPU (default: chosen from the layer sizes and batch size)")
    t.add_argument("--micro-batch", metavar="M", type=_positive, default=None,
                   help="compute each batch in chunks of at most M columns, their gradients summed: the same "
                        "step in the memory of M columns")
    t.add_argument("--clip-grad-norm", metavar="C", type=_number(0, low_open=True), default=None,
                   help="rescale each step's gradient to a global norm of at most C")
    t.add_argument("--plot", action="store_true", help="draw DIR/curves.png (loss and accuracy) at the end")
    t.add_argument("--noise-scale", action="store_true",
                   help="measure the gradient noise scale B_simple from every batch and log it each epoch")
    t.add_argument("--out", metavar="DIR",
                   help="write DIR/model.npz, DIR/metrics.json, DIR/metrics.jsonl (a line per epoch) and "
                        "DIR/checkpoint.npz")
    t.add_argument("--force", action="store_true", help="let --out replace a run already in DIR")
    t.add_argument("--checkpoint-every", metavar="K", type=_positive, default=None,
                   help="also save DIR/checkpoint.npz every K epochs (it is always saved at the end and on Ctrl-C)")
    t.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR from its checkpoint, to its original --epochs, with its settings")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", allow_abbrev=False, help="score a model written by 'gpumlp train --out'", formatter_class=fmt,
                       description="Score a model written by 'gpumlp train --out'.")
    e.add_argument("model", help="DIR (from --out) or DIR/model.npz")
    e.add_argument("--data", metavar="FILE.npz", help="data to score on (default: the data it was trained on)")
    e.add_argument("--split", choices=["test", "all"], default="test",
                   help="score the held-out split or every sample")
    e.add_argument("--device", default=None, help="auto, cpu or gpu (default: $GPUMLP_DEVICE, else auto)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("predict", allow_abbrev=False, help="predict the labels of new data with a model from 'gpumlp train --out'",
                       formatter_class=fmt, description="Predict labels with a model written by 'gpumlp train "
                       "--out': its own scaling and class names are applied; the data needs no labels.")
    r.add_argument("model", help="DIR (from --out) or DIR/model.npz")
    r.add_argument("--data", metavar="FILE.npz", required=True, help="X (d0 × N, one sample per column); y is ignored")
    r.add_argument("--out", metavar="FILE.csv", help="write sample,label rows here (default: one label per line on stdout)")
    r.add_argument("--device", default=None, help="auto, cpu or gpu (default: $GPUMLP_DEVICE, else auto)")
    r.set_defaults(func=cmd_predict)

    g = sub.add_parser("plot", allow_abbrev=False, help="draw a run's loss and accuracy curves to DIR/curves.png", formatter_class=fmt,
                       description="Draw the loss and accuracy curves of a run (train and test) to DIR/curves.png "
                       "(needs matplotlib: pip install 'gpumlp[plot]').")
    g.add_argument("run", metavar="DIR", help="a folder written by 'gpumlp train --out'")
    g.set_defaults(func=cmd_plot)

    x = sub.add_parser("example", help="print the homework's exercise 2, computed by gpumlp", formatter_class=fmt,
                       description="Print the homework's exercise 2, computed by gpumlp.")
    x.add_argument("--device", default="cpu")
    x.set_defaults(func=cmd_example)
    return p


def _given(argv):
    """The long options written on the command line (dest names), defaults apart."""
    return {tok[2:].split("=")[0].replace("-", "_") for tok in argv if tok.startswith("--")}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        a = parser().parse_args(argv)
        return a.func(a, _given(argv))
    except (ValueError, DeviceUnavailableError, TrainingDiverged, OutOfDeviceMemory) as e:
        print(f"gpumlp: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except Interrupted as e:
        print(f"gpumlp: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("gpumlp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                # `gpumlp example | head`: the reader has gone
        _silence_stdout()
        return 0
    except OSError as e:                   # a full disk, a folder that went away, ...
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"gpumlp: error: cannot read or write{where}: {e.strerror or e}", file=sys.stderr)
        if _JOB is not None and _JOB.size > 1:   # rank 0 alone writes: the others would wait forever
            sys.stderr.flush()
            _JOB.comm.Abort(1)
        return 1
