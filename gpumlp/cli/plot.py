"""gpumlp plot DIR (and train --plot): a run's learning curves in DIR/curves.png."""
import argparse
import os

from ..runs import RunDir
from .job import Job


def title(record: dict, folder: str) -> str:
    """What the run trained: its data, loss and settings (the folder's name when it records none)."""
    args = record.get("args") or {}
    if not args:
        return f"gpumlp run {os.path.basename(os.path.normpath(folder))}"
    data = record.get("data") or args.get("data") or "digits"
    parts = [os.path.basename(data), f"loss {record.get('loss', args.get('loss'))}"]
    hidden = args.get("hidden")
    if hidden:
        parts.append(f"hidden {','.join(map(str, hidden))} {args.get('activation', '')}".rstrip())
    for key, name in (("batch_size", "batch"), ("lr", "lr"), ("momentum", "momentum"), ("weight_decay", "wd"),
                      ("epochs", "epochs"), ("seed", "seed")):
        if args.get(key) is not None:
            parts.append(f"{name} {args[key]:g}" if isinstance(args[key], float) else f"{name} {args[key]}")
    if record.get("test_data"):
        parts.append(f"test {os.path.basename(record['test_data'])}")
    return " · ".join(parts)


def draw(run: RunDir, history: list, record: dict) -> str:
    from ..plot import learning_curves
    path = run.file("curves.png")
    learning_curves(history, path, title=title(record, run.path))
    return path


def cmd_plot(a: argparse.Namespace, given: set[str], job: Job) -> int:
    if not os.path.isdir(a.run):
        raise ValueError(f"{a.run} is not a folder written by 'gpumlp train --out'")
    run = RunDir(a.run)
    history = run.history()
    print(f"wrote {draw(run, history, run.record())}")
    return 0
