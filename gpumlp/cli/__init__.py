"""The gpumlp command: train, evaluate, predict, plot, example.

Exit codes: 0 success, 2 a usage or input error (bad options, data or files), 1 a
failure during training (divergence, a device that is missing or fails), 130 an
interrupt (Ctrl-C).
"""
import argparse
import sys

from .. import __version__
from ..backend import DeviceUnavailableError
from ..train import OutOfDeviceMemory, TrainingDiverged
from .job import Job, silence_stdout
from .options import DEFAULT_LR, Help, Parser, UsageError, extra_hint, given, hidden, number, positive

__all__ = ["main", "parser"]

DEVICE_HELP = "auto, cpu or gpu (default: $GPUMLP_DEVICE, else auto)"


def parser() -> Parser:
    from .evaluate import cmd_evaluate, cmd_predict
    from .plot import cmd_plot
    from .train import cmd_train
    fmt = Help
    p = Parser(prog="gpumlp", description=__doc__.split("\n\n")[0].rstrip(".") + ".", formatter_class=fmt,
               allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"gpumlp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", allow_abbrev=False, help="train an MLP classifier (default: the embedded digits)",
                       formatter_class=fmt, description="Train an MLP classifier on the embedded digits or on your "
                       f"own data. --plot needs matplotlib: {extra_hint('plot')}.")
    t.add_argument("--data", metavar="FILE.npz",
                   help="your own data: X (d0 × N, one sample per column) and y (N labels); default: the digits")
    t.add_argument("--test-data", metavar="FILE.npz",
                   help="score on this file's samples and train on all of --data (default: hold out "
                        "--test-fraction of --data)")
    t.add_argument("--loss", choices=["ce", "hinge", "mse"], default="ce",
                   help="softmax cross-entropy, exercise 3's hinge on softmax, or squared error on one-hot targets")
    t.add_argument("--device", default=None, help=DEVICE_HELP)
    t.add_argument("--epochs", type=positive, default=30,
                   help="passes over the training data; with --resume, a larger number extends the run")
    t.add_argument("--batch-size", type=positive, default=32, help="columns per SGD step")
    t.add_argument("--lr", type=number(0, low_open=True), default=None,
                   help=f"learning rate (default by loss: {', '.join(f'{k} {v}' for k, v in DEFAULT_LR.items())})")
    t.add_argument("--momentum", type=number(0, 1), default=0.9, help="SGD momentum, in [0, 1)")
    t.add_argument("--weight-decay", type=number(0), default=1e-3, help="SGD weight decay (biases too)")
    t.add_argument("--hidden", type=hidden, default=[256], help="hidden widths, e.g. 256 or 256,128 (default: 256)")
    t.add_argument("--activation", default="relu", help="relu, tanh, sigmoid, leaky_relu or linear")
    t.add_argument("--margin", type=number(0), default=1.0, help="hinge margin C (--loss hinge)")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="the model's precision")
    t.add_argument("--seed", type=int, default=0, help="initial weights and shuffling")
    t.add_argument("--test-fraction", type=number(0, 1, low_open=True), default=None,
                   help="the share of every class held out as the test split (default: 0.2)")
    t.add_argument("--threads", type=positive, default=None,
                   help="BLAS threads on the CPU (default: chosen from the layer sizes and batch size)")
    t.add_argument("--micro-batch", metavar="M", type=positive, default=None,
                   help="compute each batch in chunks of at most M columns, their gradients summed: the same "
                        "step in the memory of M columns (default: whole batches)")
    t.add_argument("--clip-grad-norm", metavar="C", type=number(0, low_open=True), default=None,
                   help="rescale each step's gradient to a global norm of at most C (default: no clipping)")
    t.add_argument("--plot", action="store_true",
                   help=f"draw DIR/curves.png (loss and accuracy) at the end; needs matplotlib: {extra_hint('plot')}")
    t.add_argument("--noise-scale", action="store_true",
                   help="measure the gradient noise scale B_simple from every batch and log it each epoch")
    t.add_argument("--out", metavar="DIR",
                   help="write DIR/model.npz, DIR/metrics.json, DIR/metrics.jsonl (a line per epoch), "
                        "DIR/checkpoint.npz and, with --plot (needs matplotlib), DIR/curves.png; one run at a time "
                        "in DIR (default: write nothing)")
    t.add_argument("--force", action="store_true", help="let --out replace a run already in DIR")
    t.add_argument("--checkpoint-every", metavar="K", type=positive, default=None,
                   help="also save DIR/checkpoint.npz every K epochs (default: at the end and on Ctrl-C only)")
    t.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR from its checkpoint with its settings, to its --epochs or to a "
                        "larger --epochs E (default: start a new run)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", allow_abbrev=False, help="score a model written by 'gpumlp train --out'",
                       formatter_class=fmt, description="Score a model written by 'gpumlp train --out' (a run that "
                       "did not finish is scored from its checkpoint).")
    e.add_argument("model", help="DIR (from --out) or DIR/model.npz")
    e.add_argument("--data", metavar="FILE.npz", help="data to score on (default: the data it was trained on)")
    e.add_argument("--split", choices=["test", "all"], default="test",
                   help="score the held-out split (or the run's --test-data) or every sample")
    e.add_argument("--device", default=None, help=DEVICE_HELP)
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("predict", allow_abbrev=False, formatter_class=fmt,
                       help="predict the labels of new data with a model from 'gpumlp train --out'",
                       description="Predict labels with a model written by 'gpumlp train --out' (or the checkpoint "
                       "of a run that did not finish): its own scaling and class names are applied; the data needs "
                       "no labels.")
    r.add_argument("model", help="DIR (from --out) or DIR/model.npz")
    r.add_argument("--data", metavar="FILE.npz", required=True, help="X (d0 × N, one sample per column); y is ignored")
    r.add_argument("--out", metavar="FILE.csv",
                   help="write sample,label rows here (default: one label per line on stdout)")
    r.add_argument("--device", default=None, help=DEVICE_HELP)
    r.set_defaults(func=cmd_predict)

    g = sub.add_parser("plot", allow_abbrev=False, formatter_class=fmt,
                       help="draw a run's loss and accuracy curves to DIR/curves.png",
                       description="Draw the loss and accuracy curves of a run (train and test) to DIR/curves.png "
                       f"(needs matplotlib: {extra_hint('plot')}).")
    g.add_argument("run", metavar="DIR", help="a folder written by 'gpumlp train --out'")
    g.set_defaults(func=cmd_plot)

    x = sub.add_parser("example", help="print the homework's exercise 2, computed by gpumlp", formatter_class=fmt,
                       description="Print the homework's exercise 2, computed by gpumlp.")
    x.add_argument("--device", default="cpu", help="auto, cpu or gpu")
    x.set_defaults(func=cmd_example)
    p.commands = dict(sub.choices)
    return p


def cmd_example(a: argparse.Namespace, given: set[str], job: Job) -> int:
    from ..example import exercise2, walkthrough
    print(walkthrough(exercise2(device=a.device)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the gpumlp command with ``argv`` (default: sys.argv[1:]); returns the exit status.
    A bad command line raises SystemExit(2) after its one line on stderr, as argparse does."""
    from .train import Interrupted
    argv = sys.argv[1:] if argv is None else list(argv)
    job = Job()
    try:
        job = Job.from_environment()
        try:
            a = parser().parse_args(argv)
        except UsageError as e:
            if job.is_root:
                print(f"gpumlp: error: {e.message}", file=sys.stderr)
            job.end(2)
            raise
        return a.func(a, given(argv), job)
    except (ValueError, DeviceUnavailableError, TrainingDiverged, OutOfDeviceMemory) as e:
        if job.is_root:
            print(f"gpumlp: error: {e}", file=sys.stderr)
        return job.end(2 if isinstance(e, ValueError) else 1)
    except Interrupted as e:
        if job.is_root:
            print(f"gpumlp: {e}", file=sys.stderr)
        return job.end(130)
    except KeyboardInterrupt:
        if job.is_root:
            print("gpumlp: interrupted", file=sys.stderr)
        return job.end(130)
    except BrokenPipeError:                # `gpumlp example | head`: the reader has gone
        silence_stdout()
        return 0
    except OSError as e:                   # a full disk, a folder that went away, ...
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"gpumlp: error: cannot read or write{where}: {e.strerror or e}", file=sys.stderr)
        return job.end(1, collective=False)   # rank 0 alone writes: the others would wait forever
