"""The ``gpumlp`` command: train, evaluate, example."""
import argparse
import json
import os
import sys
import time

from . import data, io, threads
from .backend import DeviceUnavailableError
from .example import exercise2, walkthrough
from .losses import LOSSES
from .model import MLP
from .optim import SGD
from .train import TrainingDiverged, evaluate, fit

SPLIT_SEED = 0
DEFAULT_LR = {name: entry.lr for name, entry in LOSSES.items()}    # tuned on the digits; see README


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


def _make_out_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {path}: cannot create that folder ({e.strerror})") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"--out {path}: the folder is not writable")


def cmd_train(a):
    X, y, source = _load(a.data)
    if a.lr is None:
        a.lr = DEFAULT_LR[a.loss]
    if a.out:
        _make_out_dir(a.out)                    # fail now, not after training
    idx, classes = data.encode_labels(y)
    if len(classes) < 2:
        raise ValueError(f"the data has {len(classes)} class; classification needs at least 2")
    Xtr, ytr, Xte, yte = _split(X, idx, a.test_fraction)
    scaler = data.Standardizer.fit(Xtr)
    net = MLP([X.shape[0], *a.hidden, len(classes)], activation=a.activation, dtype=a.dtype,
              device=a.device, seed=a.seed)
    n_threads = a.threads or threads.auto_threads(net.sizes, a.batch_size)
    print(f"gpumlp: {net} on {source}: {Xtr.shape[1]} training, {Xte.shape[1]} test samples, "
          f"loss {a.loss}, batch {a.batch_size}, lr {a.lr}, {n_threads} BLAS thread(s)", flush=True)
    t0 = time.perf_counter()
    with threads.limit(n_threads):
        history = fit(net, scaler(Xtr), ytr, SGD(a.lr, a.momentum, a.weight_decay), loss=a.loss,
                      margin=a.margin, epochs=a.epochs, batch_size=a.batch_size,
                      X_test=scaler(Xte), y_test=yte, seed=a.seed, progress=not a.no_progress,
                      noise_scale=a.noise_scale)
    seconds = time.perf_counter() - t0
    final = history[-1]
    print(f"test accuracy {final['test_accuracy']:.4f}  test loss {final['test_loss']:.4f}  "
          f"({seconds:.1f} s, device {net.backend.name})")
    if a.noise_scale:
        fmt = lambda v: "not resolved" if v is None else f"{v:.0f}"   # noqa: E731
        print(f"gradient noise scale B_simple: {fmt(final['b_simple'])} at the end (moving average), "
              f"{fmt(final['b_simple_start'])} in the first epoch, {fmt(final['b_simple_mean'])} over the run")
    if a.out:
        meta = {"loss": a.loss, "margin": a.margin, "data": source, "data_sha256": data.fingerprint(X, y),
                "test_fraction": a.test_fraction, "split_seed": SPLIT_SEED}
        io.save(os.path.join(a.out, "model.npz"), net, meta, x_mean=scaler.mean,
                x_scale=scaler.scale, classes=classes)
        metrics = {"test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
                   "train_seconds": seconds, "device": net.backend.name, "blas_threads": n_threads,
                   "history": history,
                   "args": {k: v for k, v in vars(a).items() if k != "func"}, **meta}
        with open(os.path.join(a.out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        print(f"wrote {os.path.join(a.out, 'model.npz')} and {os.path.join(a.out, 'metrics.json')}")
    return 0


def cmd_evaluate(a):
    path = os.path.join(a.model, "model.npz") if os.path.isdir(a.model) else a.model
    net, meta, arrays = io.load(path, device=a.device)
    missing = {"x_mean", "x_scale", "classes"} - set(arrays)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}: it was not written by 'gpumlp train'")
    X, y, source = _load(a.data if a.data else (None if meta.get("data") == "digits" else meta.get("data")))
    scaler = data.Standardizer(arrays["x_mean"], arrays["x_scale"])
    if a.split == "test" and meta.get("data_sha256") != data.fingerprint(X, y):
        raise ValueError(f"{source} is not the data this model was trained on, so its 'test' split "
                         "would not be the held-out samples (it could hold training samples); "
                         "score it with --split all")
    y, _ = data.encode_labels(y, arrays["classes"])
    if a.split == "test":
        _, _, X, y = _split(X, y, meta.get("test_fraction", 0.2))
    loss, acc = evaluate(net, scaler(X), y, meta.get("loss", "ce"), meta.get("margin", 1.0))
    result = {"model": path, "data": source, "split": a.split, "samples": int(X.shape[1]),
              "loss": loss, "accuracy": acc, "device": net.backend.name}
    print(json.dumps(result) if a.json else
          f"{source} ({a.split} split, {X.shape[1]} samples): accuracy {acc:.4f}  loss {loss:.4f}")
    return 0


def cmd_example(a):
    print(walkthrough(exercise2(device=a.device)))
    return 0


def parser():
    p = argparse.ArgumentParser(prog="gpumlp", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an MLP classifier (default: the embedded digits)")
    t.add_argument("--data", metavar="FILE.npz", help="your own data: X (d0 × N, one sample per column) and y (N labels)")
    t.add_argument("--loss", choices=["ce", "hinge", "mse"], default="ce")
    t.add_argument("--device", default=None, help="auto, cpu or gpu (default: $GPUMLP_DEVICE or auto)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: %s)" % ", ".join(f"{k} {v}" for k, v in DEFAULT_LR.items()))
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=1e-3)
    t.add_argument("--hidden", type=_hidden, default=[256], help="hidden widths, e.g. 256 or 256,128 (default 256)")
    t.add_argument("--activation", default="relu", help="relu, tanh, sigmoid, leaky_relu or linear")
    t.add_argument("--margin", type=float, default=1.0, help="hinge margin C (--loss hinge)")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--test-fraction", type=float, default=0.2)
    t.add_argument("--threads", type=_positive, default=None,
                   help="BLAS threads on the CPU (default: chosen from the layer sizes and batch size)")
    t.add_argument("--noise-scale", action="store_true",
                   help="measure the gradient noise scale B_simple from every batch and log it each epoch")
    t.add_argument("--out", metavar="DIR", help="write DIR/model.npz and DIR/metrics.json")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="score a model written by 'gpumlp train --out'")
    e.add_argument("model", help="DIR (from --out) or DIR/model.npz")
    e.add_argument("--data", metavar="FILE.npz", help="data to score on (default: the data it was trained on)")
    e.add_argument("--split", choices=["test", "all"], default="test",
                   help="score the held-out split (default) or every sample")
    e.add_argument("--device", default=None)
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("example", help="print the homework's exercise 2, computed by gpumlp")
    x.add_argument("--device", default="cpu")
    x.set_defaults(func=cmd_example)
    return p


def main(argv=None):
    a = parser().parse_args(argv)
    try:
        return a.func(a)
    except (ValueError, DeviceUnavailableError, TrainingDiverged) as e:
        print(f"gpumlp: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
