"""A training run's folder (``gpumlp train --out DIR``): its files, its lock and its checks.

DIR holds ``model.npz`` (the finished model), ``checkpoint.npz`` (the last saved epoch,
to resume from), ``metrics.jsonl`` (one JSON line per epoch, as the run goes),
``metrics.json`` (the finished run's record) and, with ``--plot``, ``curves.png``.
A run holds an exclusive lock on DIR (``fcntl.flock`` on ``DIR/.lock``, which holds its
pid) from start to end, so two runs never write into one folder; the kernel drops the
lock when the process ends, however it ends.
"""
import fcntl
import json
import os
from typing import Any

from . import io
from .classifier import Classifier
from .data import SPLIT_VERSION
from .model import MLP
from .noise import NoiseScale
from .train import TrainState

__all__ = ["RunDir", "Recorder", "RUN_FILES", "OLD_FILES", "RUN_OPTIONS"]

RUN_FILES = ("model.npz", "checkpoint.npz")       # what makes a folder hold a run
OLD_FILES = ("metrics.json", "metrics.jsonl", "curves.png")   # replaced by a new run
# the options a run is made of: a resumed run takes them from its checkpoint
RUN_OPTIONS = ("data", "loss", "epochs", "batch_size", "lr", "momentum", "weight_decay", "hidden", "activation",
               "margin", "dtype", "seed", "test_fraction", "threads", "checkpoint_every", "noise_scale",
               "clip_grad_norm", "plot", "micro_batch", "test_data")
ADDED_OPTIONS = {"test_data": None}                # options newer than the oldest checkpoints, and their default


class RunDir:
    """The folder ``path`` of one run.  :meth:`lock` before writing; the methods that read
    raise ValueError with one line naming the file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock_fd: int | None = None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def has(self, name: str) -> bool:
        return os.path.exists(self.file(name))

    # -- the lock -------------------------------------------------------------------------------
    def lock(self) -> "RunDir":
        """Take the folder for this process until :meth:`unlock` (or its end); ValueError naming
        the process that holds it."""
        if self._lock_fd is not None:
            return self
        fd = os.open(self.file(".lock"), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(f"{self.path} is in use by another gpumlp run (pid {holder}): wait for it to end, "
                             "or give another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return self

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)              # the file stays: removing it would let two runs lock two files
            self._lock_fd = None

    # -- a new run and a resumed one ------------------------------------------------------------
    def create(self, force: bool = False, launch: str = "gpumlp") -> None:
        """Make the folder and lock it; refuse one that holds another run unless ``force``, and
        remove the files of the run it replaces."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"--out {self.path}: cannot create that folder (a file of that name exists)")
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--out {self.path}: cannot create that folder ({e.strerror})") from None
        if not os.access(self.path, os.W_OK):
            raise ValueError(f"--out {self.path}: the folder is not writable")
        self.lock()
        held = [f for f in RUN_FILES if self.has(f)]
        if held and not force:
            self.unlock()
            raise ValueError(f"--out {self.path} already holds a run ({', '.join(held)}): pass --force to replace "
                             f"it, or continue it with: {launch} train --resume {self.path}")
        for f in held + [f for f in OLD_FILES if self.has(f)]:
            os.unlink(self.file(f))             # --force, or the traces of a run that saved nothing

    def checkpoint(self, device: Any = "auto") -> tuple[io.Checkpoint, dict, list, NoiseScale | None, float]:
        """The run's checkpoint, checked key by key: (checkpoint, meta, history, noise scale or
        None, training seconds up to it).  meta["args"] holds every option of RUN_OPTIONS."""
        path = self.file("checkpoint.npz")
        if not os.path.exists(path):
            raise ValueError(f"--resume {self.path}: there is no checkpoint.npz there (a run saves one with --out)")
        ck = io.load_checkpoint(path, device=device)
        meta, history, noise = checked_meta(path, ck)
        seconds = ck.meta.get("train_seconds")
        if not isinstance(seconds, (int, float)):
            seconds = sum(float(h.get("seconds") or 0.0) for h in history)    # a checkpoint of gpumlp <= 0.4
        return ck, meta, history, noise, float(seconds)

    def is_complete(self, epoch: int, epochs: int) -> bool:
        """A run whose checkpoint is at its last epoch and whose final files are written."""
        return epoch >= epochs and self.has("model.npz") and self.has("metrics.json")

    # -- reading a run --------------------------------------------------------------------------
    def history(self) -> list[dict]:
        """The per-epoch history: metrics.json when the run finished, else metrics.jsonl."""
        for name in ("metrics.json", "metrics.jsonl"):
            path = self.file(name)
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
        raise ValueError(f"{self.path} holds no metrics.json or metrics.jsonl (a run writes them with --out)")

    def record(self) -> dict:
        """The run's record (its data, loss, split and ``args``) from metrics.json, else from its
        checkpoint; {} when neither can be read."""
        try:
            with open(self.file("metrics.json")) as f:
                return dict(json.load(f))
        except (OSError, ValueError, TypeError):
            pass
        try:
            return io.load_checkpoint(self.file("checkpoint.npz"), device="cpu").meta
        except (OSError, ValueError):
            return {}

    def classifier(self, device: Any = "auto") -> tuple[Classifier, str | None]:
        """The run's model: model.npz, or the checkpoint of a run that did not finish, with a
        note saying so (None for model.npz)."""
        if self.has("model.npz") or not self.has("checkpoint.npz"):
            return Classifier.load(self.file("model.npz"), device=device), None
        path = self.file("checkpoint.npz")
        ck = io.load_checkpoint(path, device=device)
        meta = {k: v for k, v in ck.meta.items() if k not in ("args", "history", "noise_scale_state")}
        clf = Classifier.from_arrays(ck.net, ck.arrays, meta, path)
        return clf, (f"{self.path} holds no model.npz (its run did not finish): using checkpoint.npz, "
                     f"as of epoch {ck.state.epoch}")


def checked_meta(path: str, ck: io.Checkpoint) -> tuple[dict, list, NoiseScale | None]:
    """A checkpoint's run record, checked key by key: (meta, history, noise scale or None).
    Anything missing or of the wrong type is the file's damage, named as such."""
    m: Any = ck.meta                 # a JSON record: need() checks each entry before it is used

    def need(ok, what):
        if not ok:
            raise ValueError(f"{path} is damaged: {what}")
    need(m.get("split_version") == SPLIT_VERSION,
         "it was written by an older gpumlp whose held-out split differs (or its split version is missing); "
         "start the run again")
    args = m.get("args")
    need(isinstance(args, dict) and set(RUN_OPTIONS) - set(ADDED_OPTIONS) <= set(args),
         "its run settings are incomplete")
    args = {**ADDED_OPTIONS, **args}
    need(isinstance(m.get("data"), str) and isinstance(m.get("data_sha256"), str), "it does not record its data")
    if args["test_data"] is None:
        need(isinstance(m.get("test_fraction"), float) and 0 < m["test_fraction"] < 1, "its test fraction is invalid")
    else:
        need(isinstance(m.get("test_data"), str) and isinstance(m.get("test_data_sha256"), str),
             "it does not record its test data")
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
    meta = {k: v for k, v in m.items() if k not in ("history", "noise_scale_state", "train_seconds")}
    meta["args"] = args
    return meta, history, noise


class Recorder:
    """What a run keeps as it goes, written into ``run`` (None: keep, write nothing, as on
    the MPI ranks other than 0): one JSON line per epoch in metrics.jsonl, a checkpoint
    every ``every`` epochs and at the end (atomic, from a host snapshot taken at the epoch
    boundary), on an interrupt the last completed epoch, and the finished run's files."""

    def __init__(self, run: RunDir | None, every: int | None, meta: dict, extra: dict,
                 noise: NoiseScale | None = None, seconds_before: float = 0.0) -> None:
        self.run, self.every, self.meta, self.extra, self.noise = run, every, meta, extra, noise
        self.seconds_before = seconds_before     # the training seconds of the sessions before this one
        self.snapshot: tuple | None = None       # (epoch, params, optimizer state, TrainState, noise json, seconds)
        self.saved_epoch: int | None = None
        self.history: list[dict] = []

    def start(self, history: list[dict]) -> None:
        """The metrics history so far (a resumed run's, up to its checkpoint), rewritten."""
        self.history = list(history)
        if self.run is not None:
            lines = "".join(json.dumps(h) + "\n" for h in history)
            io.atomic_write(self.run.file("metrics.jsonl"), lambda f: f.write(lines), mode="w")

    def on_epoch(self, net: MLP, optimizer_state: dict, record: dict, state: TrainState, seconds: float) -> None:
        """After an epoch: its record, and the snapshot a checkpoint is written from (``seconds``:
        this session's training time so far)."""
        self.history.append(record)
        if self.run is None:
            return
        with open(self.run.file("metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.snapshot = (state.epoch, net.backend.to_numpy(net.params), optimizer_state,
                         TrainState.from_json(state.to_json()), None if self.noise is None else self.noise.to_json(),
                         self.seconds_before + seconds)
        if self.every and state.epoch % self.every == 0:
            self.save_checkpoint(net)

    def save_checkpoint(self, net: MLP) -> None:
        """The last epoch boundary's snapshot as checkpoint.npz (nothing to do if saved)."""
        if self.run is None or self.snapshot is None or self.saved_epoch == self.snapshot[0]:
            return
        epoch, params, opt_state, state, noise, seconds = self.snapshot
        meta = {**self.meta, "history": [h for h in self.history if h["epoch"] <= epoch],
                "noise_scale_state": noise, "train_seconds": seconds}
        io.save_checkpoint(self.run.file("checkpoint.npz"), net, opt_state, state, meta, params=params, **self.extra)
        self.saved_epoch = epoch

    def finish(self, net: MLP, seconds: float) -> dict:
        """A finished run's model.npz and metrics.json; returns the metrics (``seconds``: this
        session's training time)."""
        final = self.history[-1]
        model_meta = {k: v for k, v in self.meta.items() if k != "args"}
        metrics = {"test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
                   "train_seconds": self.seconds_before + seconds, "session_train_seconds": seconds,
                   "device": net.backend.name, "history": self.history, "args": self.meta["args"], **model_meta}
        if self.run is not None:
            io.save(self.run.file("model.npz"), net, model_meta,
                    **{k: self.extra[k] for k in ("x_mean", "x_scale", "classes")})
            io.atomic_write(self.run.file("metrics.json"), lambda f: json.dump(metrics, f, indent=2), mode="w")
        return metrics
