"""Batch-size sweeps: what a training step costs at each batch size (--mode step), and
how the batch size changes training (--mode train).

--mode step (the default) times one training step (forward, softmax cross-entropy,
backward, SGD with momentum) of gpumlp, of the floor (the step's GEMMs on
preallocated outputs plus one in-place update) and of PyTorch when it is installed,
on the same device, dtype and threads, warmed up and interleaved round after round
(scripts/steptiming.py, scripts/sweep_step.py).  --noise-scale also prices the
noise-scale measurement: gpumlp's step without and with it, in alternating blocks of
consecutive steps on the same net, as a training loop runs them.

--mode train trains on the data (the embedded digits, or --data F.npz) at every
batch size until a target test accuracy, scoring the test split every --eval-every
training examples (scripts/sweep_train.py).  Each batch size gets its learning rate
from --lr-grid (tuned: the one with the fewest median steps to the target over the
seeds; the default) or from a rule, --lr-scaling none|linear|sqrt relative to
--base-batch-size, with an optional warm-up.  Every run measures the gradient noise
scale B_simple.  From the steps to target it fits S(B) = S_min + E_min/B and reports
B_crit = E_min/S_min beside B_simple (McCandlish et al. 2018); the fit needs at least
3 batch sizes that reach the target.

Both write DIR/sweep.csv, DIR/sweep.json (command, date, machine, device, versions,
every raw timing, or every run with the test-score traces of the runs in the
table) and DIR/sweep.png (with matplotlib; without it the sweep says so and writes
the rest; scripts/sweep_output.py).  Train mode also writes DIR/runs.csv, one row per
run.  It measures and prints; it never asserts a timing.
"""
import argparse
import math
import signal
import sys
from pathlib import Path

import sweep_step
import sweep_train
from steptiming import Context
from sweep_output import plot, write_csv, write_json

from gpumlp import DeviceUnavailableError

EXAMPLES = """examples:
  python scripts/sweep_batch_sizes.py --quick --out DIR                # step mode, a quick check
  python scripts/sweep_batch_sizes.py --mode train --quick --out DIR   # train mode, a quick check
  python scripts/sweep_batch_sizes.py --mode train --out DIR           # train mode, the full sweep
  python scripts/sweep_batch_sizes.py --replot DIR/sweep.json          # the plot again
"""


def int_list(text):
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas; got {text!r}")
    return values


def float_list(text):
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas; got {text!r}")
    return values


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
        return value
    return parse


def listed(values):
    return ",".join(f"{v:g}" for v in values)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default said once: "(default: X)" is added unless the help already says
    it, or the option has none (None, or a flag's False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if not action.option_strings or "default" in text or default is None or default is False \
                or default is argparse.SUPPRESS:
            return text
        shown = listed(default) if isinstance(default, list) else str(default)
        return f"{text} (default: {shown})" if text else f"default: {shown}"


def parser():
    description = __doc__.split("\n\n")[0]          # the first paragraph, whole
    p = argparse.ArgumentParser(description=description, epilog=EXAMPLES, formatter_class=HelpFormatter)
    step, train = sweep_step, sweep_train
    p.add_argument("--mode", choices=["step", "train"], default="step",
                   help="step: time one training step per batch size; train: train to a target accuracy")
    p.add_argument("--quick", action="store_true",
                   help=f"a quick sweep: step mode batch sizes {listed(step.QUICK['batch_sizes'])} and "
                        f"{step.QUICK['rounds']} rounds; train mode batch sizes {listed(train.QUICK['batch_sizes'])}, "
                        f"lr grid {listed(train.QUICK['lr_grid'])} and {train.QUICK['seeds']} seeds (the options "
                        "given explicitly still apply)")
    p.add_argument("--batch-sizes", type=int_list, default=None,
                   help=f"default: step {listed(step.BATCH_SIZES)}; train {listed(train.BATCH_SIZES)}")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where gpumlp (and PyTorch) run")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="the parameters' and data's")
    net = p.add_mutually_exclusive_group()
    net.add_argument("--sizes", type=int_list, default=None,
                     help=f"every layer width, d0,...,dL (default: step {listed(step.SIZES)}; "
                          "train the data's d0, --hidden, its classes)")
    net.add_argument("--hidden", type=int_list, default=None,
                     help=f"hidden widths between the input and output widths (default: step "
                          f"{listed(step.SIZES[1:-1])}; train {listed(train.HIDDEN)})")
    p.add_argument("--seed", type=int, default=0, help="data and weights (step); the first seed (train)")
    p.add_argument("--threads", type=positive(int), default=1, help="BLAS and torch threads")
    p.add_argument("--out", metavar="DIR", default=None, help="where the files go (default: sweep-MODE)")
    p.add_argument("--replot", metavar="SWEEP.json", default=None,
                   help="only draw the plot of an earlier sweep's JSON, beside it (e.g. one run where "
                        "matplotlib was missing)")
    s = p.add_argument_group("--mode step")
    s.add_argument("--rounds", type=positive(int), default=None,
                   help=f"timed interleaved rounds per batch size (default: {step.FULL['rounds']}; "
                        f"{step.QUICK['rounds']} with --quick)")
    s.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    s.add_argument("--tf32", action="store_true", help="allow TF32 GEMMs on the GPU (both libraries)")
    s.add_argument("--noise-scale", action="store_true",
                   help="also time gpumlp's step with the noise-scale measurement (blocks of consecutive steps)")
    t = p.add_argument_group("--mode train")
    t.add_argument("--data", metavar="FILE.npz", help="X (d0 × N) and y (default: the embedded digits)")
    t.add_argument("--seeds", type=positive(int), default=None,
                   help=f"runs per batch size and lr: seeds SEED, SEED+1, ... (default: {train.FULL['seeds']}; "
                        f"{train.QUICK['seeds']} with --quick)")
    t.add_argument("--target", type=float, default=0.96, help="the test accuracy to reach")
    t.add_argument("--max-epochs", type=positive(int), default=50, help="the budget of one run")
    t.add_argument("--eval-every", type=positive(int), default=64, help="score the test split every this many examples")
    t.add_argument("--lr-grid", type=float_list, default=None,
                   help=f"learning rates tried at every batch size, the best kept, unless --lr-scaling is given "
                        f"(default: {listed(train.FULL['lr_grid'])}; {listed(train.QUICK['lr_grid'])} with --quick)")
    t.add_argument("--lr-scaling", choices=["none", "linear", "sqrt"], default=None,
                   help="instead of tuning, lr = --base-lr scaled from --base-batch-size by this rule")
    t.add_argument("--base-lr", type=positive(float), default=0.3, help="the rule's lr at --base-batch-size")
    t.add_argument("--base-batch-size", type=positive(int), default=32, help="the batch size the rule starts from")
    t.add_argument("--warmup-epochs", type=float, default=0.0,
                   help="ramp the lr up linearly over this many epochs (0: no warm-up)")
    t.add_argument("--momentum", type=float, default=0.0,
                   help="SGD momentum (default: 0, plain SGD, the setting of the noise-scale model)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="SGD's weight decay")
    t.add_argument("--loss", choices=["ce", "hinge", "mse"], default="ce", help="the training loss")
    t.add_argument("--micro-batch", type=positive(int), default=None,
                   help="compute each batch in chunks of at most this many columns (the same steps)")
    t.add_argument("--workers", type=positive(int), default=None,
                   help="fan the runs out over this many mpi4py.futures workers (their results merge into "
                        "the same files); step mode is never fanned out")
    t.add_argument("--test-fraction", type=float, default=0.2, help="the share of the data held out for scoring")
    return p


def _interrupted(signum, frame):
    raise KeyboardInterrupt       # a timeout's SIGTERM, like Ctrl-C: write what was measured


def main(argv=None):
    a = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    if a.replot:
        return replot(a.replot)
    if a.mode == "train" and not 0 < a.target <= 1:
        sys.exit(f"sweep: --target must be a test accuracy in (0, 1]; got {a.target}")
    if a.mode == "step" and a.workers:
        sys.exit("sweep: step timings are never fanned out over workers (concurrent processes corrupt "
                 "interleaved timings); --workers is for --mode train")
    if a.warmup_epochs < 0 or not 0 <= a.momentum < 1 or a.weight_decay < 0:
        sys.exit("sweep: --warmup-epochs and --weight-decay must be >= 0 and --momentum in [0, 1)")
    mode = sweep_step if a.mode == "step" else sweep_train
    for name, value in (mode.QUICK if a.quick else mode.FULL).items():     # what the options left unset
        if getattr(a, name) is None:
            setattr(a, name, value)
    a.batch_sizes = list(dict.fromkeys(a.batch_sizes))                        # each batch size once
    out = Path(a.out or f"sweep-{a.mode}")
    try:
        ctx = Context(a.device, a.dtype, a.threads, a.tf32, torch=a.mode == "step")
    except DeviceUnavailableError as e:
        sys.exit(f"sweep: {e}")
    for note in ctx.notes:
        print(f"note: {note}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        sys.exit(f"sweep: --out {out}: cannot create that folder ({e.strerror})")
    try:
        record = sweep_step.step_sweep(ctx, a) if a.mode == "step" else sweep_train.train_sweep(ctx, a)
    except ValueError as e:                 # gpumlp's checks: a bad --test-fraction, data, ...
        sys.exit(f"sweep: {e}")
    write_csv(out / "sweep.csv", record["table"])
    written = ["sweep.csv", "sweep.json"]
    if a.mode == "train":
        write_csv(out / "runs.csv", [{k: v for k, v in r.items() if k != "evaluations"} for r in record["runs"]])
        written.append("runs.csv")
    write_json(out / "sweep.json", record)
    why_not = plot(record, out / "sweep.png")
    if why_not:
        print(f"no plot: {why_not}")
    else:
        written.append("sweep.png")
    print(f"wrote {', '.join(str(out / w) for w in written)}")
    return 0


def replot(source):
    """Draw an earlier sweep's plot from its JSON, beside it."""
    import json
    try:
        with open(source) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"sweep: --replot {source}: {e}")
    path = Path(source).with_suffix(".png")
    why_not = plot(record, path)
    print(f"no plot: {why_not}" if why_not else f"wrote {path}")
    return 1 if why_not else 0


if __name__ == "__main__":
    sys.exit(main())
