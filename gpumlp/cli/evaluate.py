"""gpumlp evaluate and gpumlp predict: a trained model (or an unfinished run's checkpoint)
scored on its held-out data, or labelling new data."""
import argparse
import csv
import json
import os
import sys
from typing import Any

from .. import data, io
from ..classifier import Classifier
from ..runs import RunDir
from .job import Job


def load_model(model: str, device: str | None) -> tuple[Any, str]:
    """(classifier, the file it came from): DIR/model.npz, a model file, or the checkpoint of a
    run that did not finish (said on stderr)."""
    if not os.path.isdir(model):
        return Classifier.load(model, device=device), model
    clf, note = RunDir(model).classifier(device=device)
    if note:
        print(f"gpumlp: {note}", file=sys.stderr)
    return clf, os.path.join(model, "model.npz" if note is None else "checkpoint.npz")


def _read(source, path, what):
    """(X, y, name) of a data file the model records, or of the digits."""
    if source is not None and source != "digits" and not os.path.exists(source):
        raise ValueError(f"{path} was {what} {source}, which is not there any more: pass the data with --data FILE.npz")
    if source is None or source == "digits":
        X, y = data.load_digits()
        return X, y, "digits"
    return *data.load_npz(source), os.path.abspath(source)


def cmd_evaluate(a: argparse.Namespace, given: set[str], job: Job) -> int:
    clf, path = load_model(a.model, a.device)
    meta = clf.meta
    own_test = a.split == "test" and isinstance(meta.get("test_data"), str)   # a run with --test-data
    if a.data:
        X, y = data.load_npz(a.data)
        source = os.path.abspath(a.data)
    elif own_test:
        X, y, source = _read(meta["test_data"], path, "scored on")
    else:
        X, y, source = _read(meta.get("data"), path, "trained on")
    if X.shape[0] != clf.net.sizes[0]:
        raise ValueError(f"{source} has {X.shape[0]} features (rows of X); the model in {path} takes "
                         f"{clf.net.sizes[0]}")
    if a.split == "test" and meta.get("split_version") != data.SPLIT_VERSION:
        raise ValueError(f"{path} was written by an older gpumlp whose held-out split differs, so the 'test' "
                         "split would not be its held-out samples; score it with --split all")
    if own_test and meta.get("test_data_sha256") != data.fingerprint(X, y):
        raise ValueError(f"{source} is not the test data this model was scored on ({meta['test_data']}); "
                         "score it with --split all")
    if a.split == "test" and not own_test:
        if meta.get("data_sha256") != data.fingerprint(X, y):
            raise ValueError(f"{source} is not the data this model was trained on, so its 'test' split "
                             "would not be the held-out samples (it could hold training samples); "
                             "score it with --split all")
        idx, _ = data.encode_labels(y, clf.classes)
        test = data.split(idx, meta.get("test_fraction", 0.2), data.SPLIT_SEED)[1]
        X, y = X[:, test], clf.classes[idx[test]]
    loss, acc = clf.evaluate(X, y)
    result = {"model": path, "data": source, "split": a.split, "samples": int(X.shape[1]),
              "loss": loss, "accuracy": acc, "device": clf.net.backend.name}
    print(json.dumps(result) if a.json else
          f"{source} ({a.split} split, {X.shape[1]} samples): accuracy {acc:.4f}  loss {loss:.4f}")
    return 0


def cmd_predict(a: argparse.Namespace, given: set[str], job: Job) -> int:
    if a.out and (os.path.isdir(a.out) or not os.path.isdir(os.path.dirname(os.path.abspath(a.out)))):
        raise ValueError(f"--out {a.out}: give a file in an existing folder")
    clf, _ = load_model(a.model, a.device)
    X, _ = data.load_npz(a.data, labels=False)
    d0 = clf.net.sizes[0]
    if X.shape[0] != d0:
        hint = " (one sample per row? save X.T)" if X.shape[1] == d0 else ""
        raise ValueError(f"X in {a.data} has {X.shape[0]} rows (features); the model takes {d0}{hint}")
    try:
        labels = clf.predict(X)
    except ValueError as e:
        name = os.path.abspath(a.data)
        raise ValueError(str(e) if name in str(e) else f"{name}: {e}") from None
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
