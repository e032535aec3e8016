"""Saving and loading trained models and training checkpoints as .npz files, read
back without pickle.

Every file is written atomically: into a temporary file in the same folder, which is
flushed to disk (fsync), renamed over the target, and the folder's entry flushed too.
A crash or a kill -9 at any moment leaves either the old file or the new one, never a
half-written one; the file gets the permissions the umask gives new files.  Reading
turns every way a file can be damaged (truncated, bit-flipped, not a zip archive,
missing or misshapen arrays, another format or version) into one ValueError that
names the file and what is wrong.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from .backend import Backend
from .model import MLP
from .state import TrainState

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint", "atomic_write", "read_npz", "Checkpoint"]

FORMAT = "gpumlp-mlp/1"
CHECKPOINT_FORMAT = "gpumlp-checkpoint/2"
# /1 (gpumlp 0.4) kept SGD's velocity as the array "velocity"; /2 keeps every named entry of the
# optimizer's state_dict: flat arrays as "optimizer.<name>", the rest (numbers, None) in the JSON
# entry "optimizer".  /1 files map one to one onto /2 and are read.
OLD_CHECKPOINT_FORMATS = ("gpumlp-checkpoint/1",)
# What a damaged file raises while zipfile and NumPy read it: BadZipFile, zlib.error,
# NotImplementedError (a flipped compression method), struct.error, EOFError, ValueError,
# MemoryError (a flipped size), ...  Reading catches them all and names the file.
_READ_ERRORS = (Exception,)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], Any], mode: str = "wb") -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, flush it to disk and rename
    it to ``path``; then flush the folder, so the rename itself survives a crash."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())             # mkstemp's 0600 is for the temporary name only
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:                                  # a platform without directory handles
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _config(net):
    return {"sizes": list(net.sizes), "activation": net.activation, "output": net.output,
            "bias": net.bias, "dtype": net.dtype}


def save(path: str | os.PathLike, net: MLP, meta: dict[str, Any] | None = None, **arrays: Any) -> None:
    """Write ``net`` (config and parameters), a JSON-able ``meta`` dict and extra host
    ``arrays`` to ``path``, atomically."""
    W, b = net.get_params()
    payload: dict[str, Any] = {"format": np.array(FORMAT), "config": np.array(json.dumps(_config(net))),
               "meta": np.array(json.dumps(meta or {}))}
    for k, w in enumerate(W, start=1):
        payload[f"W{k}"] = w
        if b is not None:
            payload[f"b{k}"] = b[k - 1]
    _add_arrays(payload, arrays)
    atomic_write(path, lambda f: np.savez(f, **payload))


def _add_arrays(payload, arrays):
    clash = set(arrays) & set(payload)
    if clash:
        raise ValueError(f"extra array names {sorted(clash)} clash with the file's own")
    payload.update({k: np.asarray(v) for k, v in arrays.items()})


def read_npz(path: str | os.PathLike, what: str, take: Callable[[Any], Any] | None = None) -> Any:
    """What ``take(z)`` returns from the open .npz at ``path`` (by default all its arrays, on the
    host), read without pickle.  Every way the file can be wrong becomes one ValueError that
    names it: a folder, a missing file, not a zip archive, object arrays, or damage
    (truncated, bit-flipped: BadZipFile, zlib.error, NotImplementedError, MemoryError, ...).
    ``what`` names the kind of file in those messages; ``take`` may raise a ValueError of
    its own, starting with the path, which is passed on."""
    path = str(path)
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a {what}")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise ValueError(f"cannot read {path}: there is no such file") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):                 # a zip (the second: an empty one)
        raise ValueError(f"cannot read {path} as a {what}: it is not a .npz file (not a zip archive; write it "
                         "with numpy.savez)" + (" (it is empty)" if not head else ""))
    try:
        with np.load(path, allow_pickle=False) as z:
            return take(z) if take is not None else {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise ValueError(f"{path} holds object arrays, which gpumlp does not load (no pickle); "
                             "save numbers as float arrays and labels as integer or string arrays") from None
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path} is damaged, it cannot be read as a {what} ({_why(e)})") from None
    except _READ_ERRORS as e:
        raise ValueError(f"{path} is damaged, it cannot be read as a {what} ({_why(e)})") from None


def _read(path, what, expected_format, older=()):
    """All arrays of the .npz at ``path`` as host arrays, after checking its format (the
    current one, or one of ``older``, which the caller maps)."""
    def take(z):
        if "format" not in z.files:
            raise ValueError(f"{path} is not a {what} (it has no 'format' entry)")
        found = str(z["format"])
        if found != expected_format and found not in older:
            raise ValueError(f"{path} is not a {what} of this version: its format is {found!r}, "
                             f"this gpumlp reads {', '.join(repr(f) for f in (expected_format, *older))}")
        return {k: z[k] for k in z.files}
    return read_npz(path, what, take)


def _why(e):
    text = str(e).split("\n")[0][:160]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _json(path, arrays, key, what):
    try:
        value = json.loads(str(arrays[key]))
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path} is damaged: its '{key}' entry cannot be read ({_why(e)})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} is damaged: its '{key}' entry is not a record")
    return value


def _build(path, config, device):
    """A model from a file's config, its errors named after the file."""
    try:
        return MLP(config["sizes"], activation=config["activation"], output=config["output"],
                   bias=config["bias"], dtype=config["dtype"], device=device)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is damaged: its model config is invalid ({_why(e)})") from None


def load(path: str | os.PathLike,
         device: str | Backend | None = "auto") -> tuple[MLP, dict[str, Any], dict[str, np.ndarray]]:
    """``(net, meta, arrays)`` from a file written by :func:`save`."""
    arrays = _read(path, "gpumlp model", FORMAT)
    config, meta = _json(path, arrays, "config", "model"), _json(path, arrays, "meta", "model")
    net = _build(path, config, device)
    L = net.n_layers
    own = {"format", "config", "meta"} | {f"{p}{k}" for p in ("Wb" if net.bias else "W") for k in range(1, L + 1)}
    missing = sorted(own - set(arrays))
    if missing:
        raise ValueError(f"{path} is damaged: it lacks the arrays {missing}")
    W = [arrays[f"W{k}"] for k in range(1, L + 1)]
    b = [arrays[f"b{k}"] for k in range(1, L + 1)] if net.bias else None
    try:
        net.set_params(W, b)
    except ValueError as e:
        raise ValueError(f"{path} is damaged: {e}") from None
    return net, meta, {k: v for k, v in arrays.items() if k not in own}


class Checkpoint:
    """What :func:`load_checkpoint` returns: ``net`` (parameters restored), ``optimizer_state``
    (for the optimizer's ``load_state_dict``), ``state`` (a :class:`gpumlp.state.TrainState`),
    ``meta`` (the JSON record the run saved) and ``arrays`` (its extra host arrays)."""

    def __init__(self, net: MLP, optimizer_state: dict[str, Any], state: TrainState, meta: dict[str, Any],
                 arrays: dict[str, np.ndarray]) -> None:
        self.net, self.optimizer_state, self.state, self.meta, self.arrays = net, optimizer_state, state, meta, arrays


def save_checkpoint(path: str | os.PathLike, net: MLP, optimizer_state: dict[str, Any], state: TrainState,
                    meta: dict[str, Any] | None = None, params: Any = None, **arrays: Any) -> None:
    """Write a training checkpoint atomically: the model's config and parameters (the flat
    buffer; ``params`` overrides it with a host copy taken earlier, at an epoch boundary),
    the optimizer's state (its ``state_dict``: arrays over the flat parameters, numbers or
    None, by name), the training state (``TrainState``: epoch and step counters and the
    shuffling generator), a JSON-able ``meta`` and extra arrays."""
    params = net.backend.to_numpy(net.params) if params is None else np.asarray(params)
    if params.shape != tuple(net.params.shape):
        raise ValueError(f"params must have shape {tuple(net.params.shape)}; got {params.shape}")
    payload: dict[str, Any] = {"format": np.array(CHECKPOINT_FORMAT), "config": np.array(json.dumps(_config(net))),
               "state": np.array(json.dumps(state.to_json())), "meta": np.array(json.dumps(meta or {})),
               "params": params}
    values = {}
    for name, v in optimizer_state.items():
        if v is None or isinstance(v, (bool, int, float, str)):
            values[name] = v
        else:
            payload[f"optimizer.{name}"] = np.asarray(v)
    names = sorted(set(optimizer_state) - set(values))
    payload["optimizer"] = np.array(json.dumps({"values": values, "arrays": names}))
    _add_arrays(payload, arrays)
    atomic_write(path, lambda f: np.savez(f, **payload))


def load_checkpoint(path: str | os.PathLike, device: str | Backend | None = "auto") -> Checkpoint:
    """A :class:`Checkpoint` from a file written by :func:`save_checkpoint`, on ``device``
    (a checkpoint written on a GPU loads on a CPU, and the reverse).  A gpumlp 0.4 file
    (format /1) is read too: its SGD velocity is the same state under another name."""
    from .state import TrainState
    arrays = _read(path, "gpumlp checkpoint", CHECKPOINT_FORMAT, OLD_CHECKPOINT_FORMATS)
    config, meta = _json(path, arrays, "config", "checkpoint"), _json(path, arrays, "meta", "checkpoint")
    record = _json(path, arrays, "state", "checkpoint")          # names the file itself
    try:
        state = TrainState.from_json(record)
    except ValueError as e:
        raise ValueError(f"{path} is damaged: {e}") from None
    net = _build(path, config, device)
    if str(arrays["format"]) == "gpumlp-checkpoint/1":
        own = {"format", "config", "state", "meta", "params", "velocity"}
        opt = {"velocity": arrays.get("velocity")}
    else:
        record = _json(path, arrays, "optimizer", "checkpoint")
        names, values = record.get("arrays"), record.get("values")
        if not isinstance(names, list) or not isinstance(values, dict):
            raise ValueError(f"{path} is damaged: its 'optimizer' entry is not a record of arrays and values")
        missing = sorted(n for n in names if f"optimizer.{n}" not in arrays)
        if missing:
            raise ValueError(f"{path} is damaged: it lacks the optimizer's arrays {missing}")
        own = {"format", "config", "state", "meta", "params", "optimizer"} | {f"optimizer.{n}" for n in names}
        opt = {**values, **{n: arrays[f"optimizer.{n}"] for n in names}}
    n = net.params.shape[0]
    checked = [("params", arrays.get("params"))] + [(k, v) for k, v in opt.items() if isinstance(v, np.ndarray)]
    for key, a in checked:
        if key == "params" and a is None:
            raise ValueError(f"{path} is damaged: it lacks the parameters")
        if a is not None and (a.shape != (n,) or not np.isdtype(a.dtype, "real floating")
                              or not np.isfinite(a).all()):
            raise ValueError(f"{path} is damaged: its {key} must be {n} finite floats for the model "
                             f"{config.get('sizes')}; got {a.dtype} of shape {a.shape}")
    net.params[...] = net.backend.asarray(arrays["params"], net.params.dtype)
    return Checkpoint(net, opt, state, meta, {k: v for k, v in arrays.items() if k not in own})
