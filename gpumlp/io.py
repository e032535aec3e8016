"""Saving and loading trained models as .npz files, read back without pickle."""
import json
import os
import tempfile

import numpy as np

from .model import MLP

__all__ = ["save", "load"]

FORMAT = "gpumlp-mlp/1"


def save(path, net, meta=None, **arrays):
    """Write ``net`` (config and parameters), a JSON-able ``meta`` dict and extra host
    ``arrays`` to ``path``.  The file is written beside its target and renamed into
    place, so an interrupted save never leaves a half-written model."""
    W, b = net.get_params()
    config = {"sizes": list(net.sizes), "activation": net.activation, "output": net.output,
              "bias": net.bias, "dtype": net.dtype}
    payload = {"format": np.array(FORMAT), "config": np.array(json.dumps(config)),
               "meta": np.array(json.dumps(meta or {}))}
    for k, w in enumerate(W, start=1):
        payload[f"W{k}"] = w
        if b is not None:
            payload[f"b{k}"] = b[k - 1]
    clash = set(arrays) & set(payload)
    if clash:
        raise ValueError(f"extra array names {sorted(clash)} clash with the model's own")
    payload.update({k: np.asarray(v) for k, v in arrays.items()})
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path, device="auto"):
    """``(net, meta, arrays)`` from a file written by :func:`save`."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"cannot read {path} as a gpumlp model (.npz): {e}") from None
    with z:
        if "format" not in z.files or str(z["format"]) != FORMAT:
            raise ValueError(f"{path} is not a gpumlp model file (expected format {FORMAT!r})")
        config, meta = json.loads(str(z["config"])), json.loads(str(z["meta"]))
        L = len(config["sizes"]) - 1
        own = {"format", "config", "meta"} | {f"{p}{k}" for p in ("Wb" if config["bias"] else "W")
                                             for k in range(1, L + 1)}
        missing = sorted(own - set(z.files))
        if missing:
            raise ValueError(f"{path} is damaged: it lacks the arrays {missing}")
        W = [z[f"W{k}"] for k in range(1, L + 1)]
        b = [z[f"b{k}"] for k in range(1, L + 1)] if config["bias"] else None
        arrays = {k: z[k] for k in z.files if k not in own}
    net = MLP(config["sizes"], activation=config["activation"], output=config["output"],
              bias=config["bias"], dtype=config["dtype"], device=device)
    net.set_params(W, b)
    return net, meta, arrays
