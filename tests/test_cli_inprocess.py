"""The gpumlp command in-process, line by line: the parser (every default, type and one-line
error), main()'s exit codes and messages, the job under a stand-in MPI job, evaluate and
predict on small runs, the plot command and the curves' figure (size, axes, ticks, markers).
Each test is fast (a run of one or two epochs of a small network), so a mutation run reaches
what only the subprocess and slow tests did."""
import argparse
import csv
import io as textio
import json
import os
import struct
import sys
import warnings

import numpy as np
import pytest

import gpumlp
from gpumlp import cli, data
from gpumlp import parallel as mpi
from gpumlp.backend import DeviceUnavailableError
from gpumlp.classifier import Classifier
from gpumlp.cli import evaluate as cli_evaluate
from gpumlp.cli import job as cli_job
from gpumlp.cli import options
from gpumlp.cli import plot as cli_plot
from gpumlp.cli.job import Job, silence_stdout
from gpumlp.cli.options import Help, Parser, UsageError, extra_hint, given, hidden, number, positive
from gpumlp.runs import Recorder, RunDir
from gpumlp.testing import exact
from gpumlp.train import OutOfDeviceMemory, TrainingDiverged

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is not installed")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (imported once here, not in a timed test)
from matplotlib import ticker  # noqa: E402

from gpumlp import plot as gplot  # noqa: E402

plt.close(gplot.curves_figure([{"epoch": 1, "loss": 1.0, "accuracy": 0.5}], "warm-up"))  # fonts loaded once, here

FAST = ["--device", "cpu", "--no-progress", "--hidden", "8"]
HINT = "pip install -e '.[plot]' (in the gpumlp checkout)"


def err_line(message, command="gpumlp train"):
    return f"gpumlp: error: {message} (see '{command} --help')\n"


def usage_error(argv, capsys):
    """(exit code, stdout, stderr) of a command line argparse refuses."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


# -- runs to score, made once ---------------------------------------------------------------------------------

def tiny_set(n=60, seed=0):
    """Three classes with string labels in 3 features (offsets in the 100s), d0 × N."""
    rng = np.random.default_rng(seed)
    y = np.array(["ant", "bee", "cat"])[np.arange(n) % 3]
    X = (rng.standard_normal((3, n)) + np.array([[0.0], [3.0], [6.0]]) * (np.arange(n) % 3)) * 10 + 100
    return X, y


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A digits run, a run on a tiny .npz (--test-fraction 0.25), a run with --test-data and an
    interrupted run (a checkpoint of epoch 1 of 2, no model.npz)."""
    root = tmp_path_factory.mktemp("runs")
    X, y = tiny_set()
    np.savez(root / "tiny.npz", X=X, y=y)
    Xt, yt = tiny_set(30, seed=1)
    np.savez(root / "tiny_test.npz", X=Xt, y=yt)
    quiet = pytest.MonkeyPatch()
    try:
        quiet.setattr(sys, "stdout", textio.StringIO())
        quiet.setattr(sys, "stderr", textio.StringIO())
        assert cli.main(["train", *FAST, "--epochs", "2", "--out", str(root / "digits")]) == 0
        assert cli.main(["train", *FAST, "--epochs", "1", "--data", str(root / "tiny.npz"), "--test-fraction", "0.25",
                         "--out", str(root / "tiny")]) == 0
        assert cli.main(["train", *FAST, "--epochs", "1", "--data", str(root / "tiny.npz"), "--test-data",
                         str(root / "tiny_test.npz"), "--out", str(root / "own")]) == 0
        real = Recorder.on_epoch

        def on_epoch(self, net, optimizer_state, record, state, seconds):
            real(self, net, optimizer_state, record, state, seconds)
            raise KeyboardInterrupt
        quiet.setattr(Recorder, "on_epoch", on_epoch)
        assert cli.main(["train", *FAST, "--epochs", "2", "--out", str(root / "cut")]) == 130
    finally:
        quiet.undo()
    return root


def held_out(X, y, fraction):
    idx, classes = data.encode_labels(y)
    test = data.split(idx, fraction, data.SPLIT_SEED)[1]
    return X[:, test], y[test]


# -- the parser: defaults, types, one-line errors ---------------------------------------------------------------

DEFAULTS = {
    "train": dict(data=None, test_data=None, loss="ce", device=None, epochs=30, batch_size=32, lr=None, momentum=0.9,
                  weight_decay=1e-3, hidden=[256], activation="relu", margin=1.0, dtype="float32", seed=0,
                  test_fraction=None, threads=None, micro_batch=None, clip_grad_norm=None, plot=False,
                  noise_scale=False, out=None, force=False, checkpoint_every=None, resume=None, no_progress=False),
    "evaluate": dict(model="M", data=None, split="test", device=None, json=False),
    "predict": dict(model="M", data="D", out=None, device=None),
    "plot": dict(run="M"),
    "example": dict(device="cpu"),
}
POSITIONALS = {"train": [], "evaluate": ["M"], "predict": ["M", "--data", "D"], "plot": ["M"], "example": []}


@pytest.mark.parametrize("command", list(DEFAULTS))
def test_each_command_parses_to_its_defaults_and_its_function(command):
    from gpumlp.cli.evaluate import cmd_evaluate, cmd_predict
    from gpumlp.cli.plot import cmd_plot
    from gpumlp.cli.train import cmd_train
    funcs = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "plot": cmd_plot,
             "example": cli.cmd_example}
    a = vars(cli.parser().parse_args([command, *POSITIONALS[command]]))
    assert a.pop("func") is funcs[command] and a.pop("command") == command
    assert a == DEFAULTS[command]


def test_every_option_takes_its_values():
    a = cli.parser().parse_args(
        ["train", "--data", "d.npz", "--test-data", "t.npz", "--loss", "hinge", "--device", "gpu", "--epochs", "1",
         "--batch-size", "1", "--lr", "1e-9", "--momentum", "0", "--weight-decay", "0", "--hidden", "1,2",
         "--activation", "tanh", "--margin", "0", "--dtype", "float64", "--seed", "-3", "--test-fraction", "0.5",
         "--threads", "1", "--micro-batch", "1", "--clip-grad-norm", "1e-9", "--plot", "--noise-scale", "--out", "o",
         "--force", "--checkpoint-every", "1", "--resume", "r", "--no-progress"])
    assert vars(a) | {"func": None} == dict(
        command="train", data="d.npz", test_data="t.npz", loss="hinge", device="gpu", epochs=1, batch_size=1, lr=1e-9,
        momentum=0.0, weight_decay=0.0, hidden=[1, 2], activation="tanh", margin=0.0, dtype="float64", seed=-3,
        test_fraction=0.5, threads=1, micro_batch=1, clip_grad_norm=1e-9, plot=True, noise_scale=True, out="o",
        force=True, checkpoint_every=1, resume="r", no_progress=True, func=None)
    p = cli.parser()
    assert [p.parse_args(["train", "--loss", loss]).loss for loss in ("ce", "hinge", "mse")] == ["ce", "hinge", "mse"]
    assert p.parse_args(["train", "--dtype", "float32"]).dtype == "float32"
    assert p.parse_args(["train", "--momentum", "0.999", "--test-fraction", "0.999"]).momentum == 0.999
    e = p.parse_args(["evaluate", "m", "--data", "d", "--split", "all", "--device", "cpu", "--json"])
    assert (e.model, e.data, e.split, e.device, e.json) == ("m", "d", "all", "cpu", True)
    assert p.parse_args(["evaluate", "m", "--split", "test"]).split == "test"
    r = p.parse_args(["predict", "m", "--data", "d", "--out", "o.csv", "--device", "cpu"])
    assert (r.model, r.data, r.out, r.device) == ("m", "d", "o.csv", "cpu")
    assert p.parse_args(["example", "--device", "gpu"]).device == "gpu"


POSITIVE = "expected a positive integer; got '0'"


@pytest.mark.parametrize("option, bad, says", [
    ("--epochs", "0", POSITIVE), ("--batch-size", "0", POSITIVE), ("--threads", "0", POSITIVE),
    ("--micro-batch", "0", POSITIVE), ("--checkpoint-every", "0", POSITIVE),
    ("--lr", "0", "expected a number > 0; got '0'"),
    ("--clip-grad-norm", "0", "expected a number > 0; got '0'"),
    ("--momentum", "1", "expected a number in [0, 1); got '1'"),
    ("--momentum", "-0.1", "expected a number in [0, 1); got '-0.1'"),
    ("--weight-decay", "-1e-9", "expected a number >= 0; got '-1e-9'"),
    ("--margin", "-1", "expected a number >= 0; got '-1'"),
    ("--test-fraction", "0", "expected a number in (0, 1); got '0'"),
    ("--test-fraction", "1", "expected a number in (0, 1); got '1'"),
    ("--hidden", "0", "expected positive layer widths such as 128 or 128,64; got '0'"),
    ("--seed", "x", "invalid int value: 'x'"),
])
def test_a_bad_value_is_one_line_naming_the_option_and_the_range(option, bad, says, capsys):
    assert usage_error(["train", f"{option}={bad}"], capsys) == (2, "", err_line(f"argument {option}: {says}"))


@pytest.mark.parametrize("argv, says, command", [
    ([], "the following arguments are required: command", "gpumlp"),
    (["--vers"], "the following arguments are required: command", "gpumlp"),           # no abbreviations
    (["train", "--epoch", "1"], "unrecognized arguments: --epoch 1", "gpumlp train"),
    (["train", "--nope", "3"], "unrecognized arguments: --nope 3", "gpumlp train"),
    (["evaluate", "m", "--spl", "all"], "unrecognized arguments: --spl all", "gpumlp evaluate"),
    (["predict", "m", "--dat", "x"], "the following arguments are required: --data", "gpumlp predict"),
    (["predict", "m", "--data", "x", "--ou", "y"], "unrecognized arguments: --ou y", "gpumlp predict"),
    (["plot", "m", "--he"], "unrecognized arguments: --he", "gpumlp plot"),
    (["plot"], "the following arguments are required: DIR", "gpumlp plot"),
    (["example", "--bogus"], "unrecognized arguments: --bogus", "gpumlp example"),
])
def test_usage_errors_are_one_line_blaming_the_command(argv, says, command, capsys):
    assert usage_error(argv, capsys) == (2, "", err_line(says, command))


@pytest.mark.parametrize("argv, prefix", [
    (["train", "--loss", "l1"], "argument --loss: invalid choice: 'l1'"),
    (["train", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    (["evaluate", "m", "--split", "train"], "argument --split: invalid choice: 'train'"),
    (["nope"], "argument command: invalid choice: 'nope'"),
])
def test_a_choice_outside_the_list_is_refused(argv, prefix, capsys):
    code, out, err = usage_error(argv, capsys)
    assert code == 2 and out == "" and err.startswith(f"gpumlp: error: {prefix}") and err.count("\n") == 1


def test_version_and_help_exit_0_on_stdout(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"gpumlp {gpumlp.__version__}\n"
    with pytest.raises(SystemExit) as e:
        cli.main(["plot", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: gpumlp plot [-h] DIR\n")


HELP = {
    "train": {
        "--data": "your own data: X (d0 × N, one sample per column) and y (N labels); default: the digits",
        "--test-data": "score on this file's samples and train on all of --data (default: hold out --test-fraction "
                       "of --data)",
        "--loss": "softmax cross-entropy, exercise 3's hinge on softmax, or squared error on one-hot targets "
                  "(default: ce)",
        "--device": "auto, cpu or gpu (default: $GPUMLP_DEVICE, else auto)",
        "--epochs": "passes over the training data; with --resume, a larger number extends the run (default: 30)",
        "--batch-size": "columns per SGD step (default: 32)",
        "--lr": "learning rate (default by loss: ce 0.1, hinge 0.01, mse 0.02)",
        "--momentum": "SGD momentum, in [0, 1) (default: 0.9)",
        "--weight-decay": "SGD weight decay (biases too) (default: 0.001)",
        "--hidden": "hidden widths, e.g. 256 or 256,128 (default: 256)",
        "--activation": "relu, tanh, sigmoid, leaky_relu or linear (default: relu)",
        "--margin": "hinge margin C (--loss hinge) (default: 1.0)",
        "--dtype": "the model's precision (default: float32)",
        "--seed": "initial weights and shuffling (default: 0)",
        "--test-fraction": "the share of every class held out as the test split (default: 0.2)",
        "--threads": "BLAS threads on the CPU (default: chosen from the layer sizes and batch size)",
        "--micro-batch": "compute each batch in chunks of at most M columns, their gradients summed: the same step "
                         "in the memory of M columns (default: whole batches)",
        "--clip-grad-norm": "rescale each step's gradient to a global norm of at most C (default: no clipping)",
        "--plot": f"draw DIR/curves.png (loss and accuracy) at the end; needs matplotlib: {HINT}",
        "--noise-scale": "measure the gradient noise scale B_simple from every batch and log it each epoch",
        "--out": "write DIR/model.npz, DIR/metrics.json, DIR/metrics.jsonl (a line per epoch), DIR/checkpoint.npz "
                 "and, with --plot (needs matplotlib), DIR/curves.png; one run at a time in DIR (default: write "
                 "nothing)",
        "--force": "let --out replace a run already in DIR",
        "--checkpoint-every": "also save DIR/checkpoint.npz every K epochs (default: at the end and on Ctrl-C only)",
        "--resume": "continue the run in DIR from its checkpoint with its settings, to its --epochs or to a larger "
                    "--epochs E (default: start a new run)",
        "--no-progress": "no progress bar (it shows only on a terminal)",
    },
    "evaluate": {
        "model": "DIR (from --out) or DIR/model.npz",
        "--data": "data to score on (default: the data it was trained on)",
        "--split": "score the held-out split (or the run's --test-data) or every sample (default: test)",
        "--device": "auto, cpu or gpu (default: $GPUMLP_DEVICE, else auto)",
        "--json": "print the result as JSON",
    },
    "predict": {
        "model": "DIR (from --out) or DIR/model.npz",
        "--data": "X (d0 × N, one sample per column); y is ignored",
        "--out": "write sample,label rows here (default: one label per line on stdout)",
        "--device": "auto, cpu or gpu (default: $GPUMLP_DEVICE, else auto)",
    },
    "plot": {"DIR": "a folder written by 'gpumlp train --out'"},
    "example": {"--device": "auto, cpu or gpu (default: cpu)"},
}
METAVARS = {"train": {"--data": "FILE.npz", "--test-data": "FILE.npz", "--micro-batch": "M", "--clip-grad-norm": "C",
                      "--out": "DIR", "--checkpoint-every": "K", "--resume": "DIR"},
            "evaluate": {"--data": "FILE.npz"}, "predict": {"--data": "FILE.npz", "--out": "FILE.csv"}}
DESCRIPTIONS = {
    "train": "Train an MLP classifier on the embedded digits or on your own data. --plot needs matplotlib: "
             f"{HINT}.",
    "evaluate": "Score a model written by 'gpumlp train --out' (a run that did not finish is scored from its "
                "checkpoint).",
    "predict": "Predict labels with a model written by 'gpumlp train --out' (or the checkpoint of a run that did not "
               "finish): its own scaling and class names are applied; the data needs no labels.",
    "plot": "Draw the loss and accuracy curves of a run (train and test) to DIR/curves.png (needs matplotlib: "
            f"{HINT}).",
    "example": "Print the homework's exercise 2, computed by gpumlp.",
}
SUMMARIES = {
    "train": "train an MLP classifier (default: the embedded digits)",
    "evaluate": "score a model written by 'gpumlp train --out'",
    "predict": "predict the labels of new data with a model from 'gpumlp train --out'",
    "plot": "draw a run's loss and accuracy curves to DIR/curves.png",
    "example": "print the homework's exercise 2, computed by gpumlp",
}


def test_help_says_every_default_once_and_what_each_option_does():
    p = cli.parser()
    assert p.prog == "gpumlp" and p.description == "The gpumlp command: train, evaluate, predict, plot, example."
    assert p.formatter_class is Help
    assert list(p.commands) == list(HELP)
    subs = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    assert {c.dest: c.help for c in subs._choices_actions} == SUMMARIES
    for name, sub in p.commands.items():
        assert sub.prog == f"gpumlp {name}" and sub.description == DESCRIPTIONS[name]
        assert sub.formatter_class is Help
        formatter = sub._get_formatter()
        said = {}
        for action in sub._actions:
            if action.default is argparse.SUPPRESS:
                continue                                                   # --help
            text = formatter._expand_help(action)
            said[action.option_strings[0] if action.option_strings else action.metavar or action.dest] = text
            assert action.metavar == METAVARS.get(name, {}).get(action.option_strings[0] if action.option_strings
                                                                else None, action.metavar)
        assert said == HELP[name], name
        assert " ".join(sub.format_help().split()).count("(default:") == \
            sum("(default:" in text for text in HELP[name].values())
    assert p.commands["plot"]._actions[1].metavar == "DIR"


# -- options.py's pieces on their own ----------------------------------------------------------------------------

def test_extra_hint_names_the_extra_and_the_checkout():
    assert extra_hint("gpu") == "pip install -e '.[gpu]' (in the gpumlp checkout)"
    assert extra_hint("plot") == HINT


def test_a_usage_error_is_exit_2_with_its_message():
    e = UsageError("bad thing")
    assert isinstance(e, SystemExit) and e.code == 2 and e.message == "bad thing"


def test_a_parser_without_commands_blames_itself_and_keeps_a_namespace():
    p = Parser(prog="tool", allow_abbrev=False)
    p.add_argument("--k", type=int, default=1)
    with pytest.raises(UsageError) as e:
        p.parse_args(["--k", "2", "--x", "--y"])
    assert e.value.message == "unrecognized arguments: --x --y (see 'tool --help')" and e.value.code == 2
    ns = argparse.Namespace(extra=5)
    assert p.parse_args(["--k", "3"], ns) is ns and (ns.k, ns.extra) == (3, 5)
    assert Parser.commands == {}
    with pytest.raises(UsageError) as e:
        p.parse_args(["--k", "z"])
    assert e.value.message == "argument --k: invalid int value: 'z' (see 'tool --help')"


def test_help_adds_the_default_only_where_there_is_one_to_show():
    p = Parser(prog="tool", formatter_class=Help)
    cases = {
        "--none": (dict(default=None, help="plain"), "plain"),
        "--flag": (dict(action="store_true", help="a flag"), "a flag"),
        "--yes": (dict(action="store_false", help="on by default"), "on by default"),
        "--said": (dict(default=5, help="five (default: five)"), "five (default: five)"),
        "--says": (dict(default=5, help="the default is five"), "the default is five"),
        "--shown": (dict(default=5, help="a number"), "a number (default: %(default)s)"),
        "--zero": (dict(default=0, help="zero"), "zero (default: %(default)s)"),
        "--true": (dict(default=True, help="true"), "true (default: %(default)s)"),
        "--nohelp": (dict(default=None), ""),
        "--bare": (dict(default=7), " (default: %(default)s)"),
        "--quiet": (dict(default=argparse.SUPPRESS, help="hidden"), "hidden"),
    }
    actions = {opt: p.add_argument(opt, **kw) for opt, (kw, _) in cases.items()}
    f = Help(prog="tool")
    assert {opt: f._get_help_string(a) for opt, a in actions.items()} == {o: want for o, (_, want) in cases.items()}


@pytest.mark.parametrize("text, widths", [("256", [256]), ("1", [1]), ("256,128", [256, 128]), ("64, 32", [64, 32]),
                                          ("64 32", [64, 32]), (" 8 ", [8])])
def test_hidden_reads_widths_by_commas_or_spaces(text, widths):
    assert hidden(text) == widths


@pytest.mark.parametrize("text", ["", "0", "-1", "256,,128", "256,", "a", "8,0", "1.5", "64 0"])
def test_hidden_refuses_anything_but_positive_widths(text):
    with pytest.raises(argparse.ArgumentTypeError,
                       match=exact(f"expected positive layer widths such as 128 or 128,64; got {text!r}")):
        hidden(text)


def test_positive_takes_integers_from_1():
    assert positive("1") == 1 and positive("17") == 17 and positive(" 3 ") == 3
    for text in ("0", "-2", "x", "1.0", ""):
        with pytest.raises(argparse.ArgumentTypeError, match=exact(f"expected a positive integer; got {text!r}")):
            positive(text)


@pytest.mark.parametrize("kw, good, bad, says", [
    (dict(low=0), ["0", "5", "1e300"], ["-1e-300", "nan", "inf", "x"], "expected a number >= 0"),
    (dict(low=0, low_open=True), ["1e-300", "2"], ["0", "-1", "inf"], "expected a number > 0"),
    (dict(low=0, high=1), ["0", "0.5", "0.999"], ["1", "-0.01", "nan"], "expected a number in [0, 1)"),
    (dict(low=0, high=1, low_open=True), ["0.001", "0.999"], ["0", "1"], "expected a number in (0, 1)"),
    (dict(low=0, high=1, high_open=False), ["0", "1"], ["1.001", "-1e-9"], "expected a number in [0, 1]"),
    (dict(low=-2, high=3, low_open=True, high_open=False), ["3", "-1.5"], ["-2", "3.5"],
     "expected a number in (-2, 3]"),
    (dict(low=2.5), ["2.5", "3"], ["2.4", "-inf"], "expected a number >= 2.5"),
])
def test_number_takes_its_range_and_names_it(kw, good, bad, says):
    parse = number(kw.pop("low"), **kw)
    assert [parse(t) for t in good] == [float(t) for t in good]
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=exact(f"{says}; got {text!r}")):
            parse(text)


def test_given_names_the_long_options_written():
    assert given(["train", "--batch-size=8", "--lr", "0.1", "-h", "x--y", "--no-progress", "--a-b=c=d"]) == \
        {"batch_size", "lr", "no_progress", "a_b"}
    assert given([]) == set()


def test_the_default_learning_rates_by_loss():
    assert options.DEFAULT_LR == {"ce": 0.1, "hinge": 0.01, "mse": 0.02}


# -- main(): exit codes and the one line of each failure ------------------------------------------------------------

class Exited(Exception):
    """os._exit, stood in for: the code the process would have ended with."""


class FakeComm:
    def __init__(self, answer=None):
        self.answer, self.bcasts, self.aborts = answer, [], []

    def bcast(self, obj, root=0):
        self.bcasts.append((obj, root))
        return self.answer

    def Abort(self, code):
        self.aborts.append(code)


class FakeMPI:
    def __init__(self, fails=False):
        self.finalized, self.fails = 0, fails

    def Finalize(self):
        self.finalized += 1
        if self.fails:
            raise RuntimeError("finalize failed")


class FakeParallel:
    """A stand-in for DataParallel: only what Job reads."""

    def __init__(self, rank, size, comm=None, mpi_lib=None):
        self.rank, self.size, self.comm, self.local_size = rank, size, comm, size
        self.MPI = mpi_lib if mpi_lib is not None else FakeMPI()
        self.gpu = 0

    def use_local_gpu(self):
        self.gpu += 1


@pytest.fixture
def exits(monkeypatch):
    def _exit(code):
        raise Exited(code)
    monkeypatch.setattr(os, "_exit", _exit)


def a_job(monkeypatch, rank=0, size=1, comm=None):
    """main()'s job is this fake one (rank of size); returns its parallel."""
    par = FakeParallel(rank, size, comm)
    monkeypatch.setattr(mpi, "from_environment", lambda: par if size > 1 else None)
    return par


@pytest.fixture
def command(monkeypatch):
    """gpumlp evaluate M runs a stand-in that records its arguments and does what the test sets."""
    seen = {}

    def stand_in(a, given, job):
        seen.update(a=a, given=given, job=job)
        return seen["do"]()
    monkeypatch.setattr(cli_evaluate, "cmd_evaluate", stand_in)
    return seen


def test_main_passes_the_options_given_and_the_job(command, monkeypatch):
    command["do"] = lambda: 7
    assert cli.main(["evaluate", "m", "--split=all", "--json"]) == 7
    assert command["given"] == {"split", "json"} and command["a"].split == "all" and command["a"].model == "m"
    assert isinstance(command["job"], Job) and command["job"].parallel is None
    par = a_job(monkeypatch, 1, 3)
    assert cli.main(("evaluate", "m")) == 7
    assert command["job"].parallel is par and command["job"].rank == 1 and command["given"] == set()


def test_main_reads_sys_argv_by_default(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["gpumlp", "example", "--device", "cpu"])
    assert cli.main() == 0
    assert capsys.readouterr().out.startswith("Exercise 2: 2-3-1 ReLU network")


@pytest.mark.parametrize("error, code, said", [
    (ValueError("bad data"), 2, "gpumlp: error: bad data\n"),
    (DeviceUnavailableError("device='gpu' cannot be used: no GPU"), 1,
     "gpumlp: error: device='gpu' cannot be used: no GPU\n"),
    (TrainingDiverged("the loss is nan"), 1, "gpumlp: error: the loss is nan\n"),
    (OutOfDeviceMemory("out of memory at batch 32"), 1, "gpumlp: error: out of memory at batch 32\n"),
    (KeyboardInterrupt(), 130, "gpumlp: interrupted\n"),
    (OSError(28, "No space left on device", "/x/run/model.npz"), 1,
     "gpumlp: error: cannot read or write /x/run/model.npz: No space left on device\n"),
    (OSError(13, "Permission denied"), 1, "gpumlp: error: cannot read or write: Permission denied\n"),
    (OSError("plain"), 1, "gpumlp: error: cannot read or write: plain\n"),
])
def test_main_turns_each_failure_into_its_code_and_one_line(command, capsys, error, code, said):
    def fail():
        raise error
    command["do"] = fail
    assert cli.main(["evaluate", "m"]) == code
    assert capsys.readouterr() == ("", said)


def test_an_interrupted_run_is_exit_130_with_its_own_line(command, capsys):
    from gpumlp.cli.train import Interrupted

    def fail():
        raise Interrupted("interrupted after epoch 3; nothing was saved (no --out)")
    command["do"] = fail
    assert cli.main(["evaluate", "m"]) == 130
    assert capsys.readouterr() == ("", "gpumlp: interrupted after epoch 3; nothing was saved (no --out)\n")


def test_a_launcher_problem_before_the_job_exists_is_exit_2(monkeypatch, capsys):
    def refuse():
        raise ValueError("an MPI launcher started 2 processes, but mpi4py sees a 1-rank job")
    monkeypatch.setattr(mpi, "from_environment", refuse)
    assert cli.main(["example"]) == 2
    assert capsys.readouterr() == ("", "gpumlp: error: an MPI launcher started 2 processes, but mpi4py sees a 1-rank "
                                       "job\n")


@pytest.mark.parametrize("rank", [0, 1])
def test_in_a_job_only_rank_0_speaks_and_every_rank_ends_with_the_code(command, monkeypatch, capsys, exits, rank):
    par = a_job(monkeypatch, rank, 2, FakeComm())
    kinds = [(ValueError("bad"), 2, "gpumlp: error: bad\n"),
             (TrainingDiverged("nan"), 1, "gpumlp: error: nan\n"),
             (KeyboardInterrupt(), 130, "gpumlp: interrupted\n")]
    for error, code, said in kinds:
        def fail(error=error):
            raise error
        command["do"] = fail
        with pytest.raises(Exited) as e:
            cli.main(["evaluate", "m"])
        assert e.value.args == (code,)
        assert capsys.readouterr() == ("", said if rank == 0 else "")
    with pytest.raises(Exited) as e:
        cli.main(["evaluate", "m", "--bogus"])
    assert e.value.args == (2,)
    assert capsys.readouterr() == ("", err_line("unrecognized arguments: --bogus", "gpumlp evaluate") if rank == 0
                                   else "")
    assert par.comm.aborts == [] and par.MPI.finalized == 4
    command["do"] = lambda: 0
    assert cli.main(["evaluate", "m"]) == 0                 # success ends no process


def test_in_a_job_a_write_failure_aborts_the_others(command, monkeypatch, capsys, exits):
    par = a_job(monkeypatch, 0, 2, FakeComm())

    def fail():
        raise OSError(5, "Input/output error", "/r/metrics.json")
    command["do"] = fail
    with pytest.raises(Exited) as e:
        cli.main(["evaluate", "m"])
    assert e.value.args == (1,) and par.comm.aborts == [1]
    assert capsys.readouterr().err == "gpumlp: error: cannot read or write /r/metrics.json: Input/output error\n"


def test_a_closed_pipe_ends_quietly_with_stdout_on_devnull(command, monkeypatch, tmp_path, capsys):
    with open(tmp_path / "out.txt", "w") as f:
        monkeypatch.setattr(sys, "stdout", f)

        def fail():
            print("before", flush=True)
            raise BrokenPipeError
        command["do"] = fail
        assert cli.main(["evaluate", "m"]) == 0
        print("after", flush=True)                    # goes to /dev/null now
    assert (tmp_path / "out.txt").read_text() == "before\n" and capsys.readouterr().err == ""


def test_silence_stdout_points_its_file_descriptor_at_devnull(monkeypatch, tmp_path):
    with open(tmp_path / "out.txt", "w") as f:
        f.write("kept\n")
        f.flush()
        monkeypatch.setattr(sys, "stdout", f)
        fd = f.fileno()
        silence_stdout()
        assert f.fileno() == fd and os.path.samestat(os.fstat(fd), os.stat(os.devnull))
        f.write("lost\n")
    assert (tmp_path / "out.txt").read_text() == "kept\n"


# -- the example ---------------------------------------------------------------------------------------------------

def test_example_prints_the_walkthrough_on_the_device_asked(monkeypatch, capsys):
    from gpumlp import example
    asked = []
    real = example.exercise2

    def exercise2(device="cpu", dtype="float64"):
        asked.append(device)
        return real(device="cpu", dtype=dtype)
    monkeypatch.setattr(example, "exercise2", exercise2)
    assert cli.main(["example"]) == 0
    text = capsys.readouterr().out
    assert text == example.walkthrough(real()) + "\n"
    assert text.splitlines()[:3] == ["Exercise 2: 2-3-1 ReLU network, no bias, L = ½‖Y − y‖²_F / N, SGD lr = 0.5",
                                     "", "S_1 ="]
    assert "L (after the step) = 0.4657" in text
    assert cli.main(["example", "--device", "auto"]) == 0
    assert asked == ["cpu", "auto"]


# -- the job ---------------------------------------------------------------------------------------------------

def test_a_plain_job_is_rank_0_of_1(monkeypatch):
    job = Job()
    assert (job.parallel, job.comm, job.rank, job.size, job.quiet, job.is_root, job.launch) == \
        (None, None, 0, 1, False, True, "gpumlp")
    par = FakeParallel(2, 3, FakeComm())
    job = Job(par)
    assert (job.parallel, job.comm, job.rank, job.size, job.quiet, job.is_root, job.launch) == \
        (par, par.comm, 2, 3, False, False, "mpiexec -n 3 gpumlp")
    assert Job(FakeParallel(0, 2)).is_root and Job(FakeParallel(0, 2)).launch == "mpiexec -n 2 gpumlp"
    assert not Job(FakeParallel(1, 2)).is_root
    monkeypatch.setattr(mpi, "from_environment", lambda: par)
    assert Job.from_environment().parallel is par
    monkeypatch.setattr(mpi, "from_environment", lambda: None)
    assert Job.from_environment().parallel is None


class Stdout:
    """A stdout that records what is written and flushed, or whose reader has gone."""

    def __init__(self, f=None, gone=None):
        self.f, self.gone, self.text, self.flushes, self.writes = f, gone, "", 0, 0

    def write(self, s):
        self.writes += 1
        if self.gone == "write":
            raise BrokenPipeError
        self.text += s

    def flush(self):
        self.flushes += 1
        if self.gone == "flush":
            raise BrokenPipeError

    def fileno(self):
        return self.f.fileno()


def test_say_prints_on_rank_0_and_flushes(monkeypatch):
    out = Stdout()
    monkeypatch.setattr(sys, "stdout", out)
    Job().say("a", 1, sep="-", end="!")
    assert out.text == "a-1!" and out.flushes == 1
    writes = out.writes
    Job(FakeParallel(1, 2)).say("from 1")
    quiet = Job()
    quiet.quiet = True
    quiet.say("nothing")
    assert out.text == "a-1!" and out.writes == writes and out.flushes == 1


@pytest.mark.parametrize("where", ["write", "flush"])
def test_say_goes_quiet_when_the_reader_has_gone(monkeypatch, tmp_path, where):
    with open(tmp_path / "out.txt", "w") as f:
        out = Stdout(f, gone=where)
        monkeypatch.setattr(sys, "stdout", out)
        job = Job()
        job.say("first")
        assert job.quiet is True and os.path.samestat(os.fstat(f.fileno()), os.stat(os.devnull))
        writes = out.writes
        job.say("second")
        assert out.writes == writes


def test_the_backend_rank_0_alone_explains(monkeypatch, capsys):
    asked = []

    def get_backend(device):
        asked.append(device)
        print(f"note about {device}", file=sys.stderr)
        return "backend"
    monkeypatch.setattr(cli_job, "get_backend", get_backend)
    assert Job().backend("auto") == "backend"
    assert capsys.readouterr() == ("", "note about auto\n")
    other = Job(FakeParallel(1, 2))
    assert other.backend("gpu") == "backend" and other.parallel.gpu == 1
    assert capsys.readouterr() == ("", "")
    root = Job(FakeParallel(0, 2))
    for device, gpus in (("cpu", 0), ("CPU", 0), (None, 1), ("auto", 2), ("gpu", 3)):
        root.backend(device)
        assert root.parallel.gpu == gpus, device
    assert asked == ["auto", "gpu", "cpu", "CPU", None, "auto", "gpu"]


def test_share_raises_rank_0s_verdict_everywhere():
    comm = FakeComm(answer="rank 0 found no data")
    job = Job(FakeParallel(1, 2, comm))
    with pytest.raises(ValueError, match=exact("rank 0 found no data")):
        job.share(None)
    assert comm.bcasts == [(None, 0)]
    comm.answer = None
    job.share("mine")
    assert comm.bcasts == [(None, 0), ("mine", 0)]
    with pytest.raises(ValueError, match=exact("alone")):
        Job().share("alone")
    Job().share(None)
    Job().share("")


def test_end_returns_the_code_of_a_plain_run_or_a_success(exits):
    assert Job().end(2) == 2 and Job().end(1, collective=False) == 1 and Job().end(0) == 0
    job = Job(FakeParallel(0, 2, FakeComm()))
    assert job.end(0) == 0 and job.end(0, collective=False) == 0
    assert job.parallel.MPI.finalized == 0 and job.comm.aborts == []


def test_end_in_a_job_flushes_finalizes_and_exits(monkeypatch, exits):
    out, err = Stdout(), Stdout()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    job = Job(FakeParallel(1, 3, FakeComm()))
    with pytest.raises(Exited) as e:
        job.end(2)
    assert e.value.args == (2,) and (out.flushes, err.flushes) == (1, 1)
    assert job.comm.aborts == [] and job.parallel.MPI.finalized == 1
    with pytest.raises(Exited) as e:
        job.end(1, collective=False)
    assert e.value.args == (1,) and job.comm.aborts == [1] and job.parallel.MPI.finalized == 2
    failing = Job(FakeParallel(0, 2, None, FakeMPI(fails=True)))   # no comm: nothing to abort; Finalize fails
    out.gone = "flush"
    with pytest.raises(Exited) as e:
        failing.end(130, collective=False)
    assert e.value.args == (130,) and failing.parallel.MPI.finalized == 1 and err.flushes == 3
    bare = Job(FakeParallel(0, 2))
    del bare.parallel.MPI                               # no MPI module to finalize
    with pytest.raises(Exited) as e:
        bare.end(3)
    assert e.value.args == (3,)


# -- evaluate ----------------------------------------------------------------------------------------------------

def evaluate(capsys, *argv):
    code = cli.main(["evaluate", *map(str, argv), "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_scores_the_held_out_digits_as_training_did(runs, capsys):
    run = runs / "digits"
    metrics = json.loads((run / "metrics.json").read_text())
    code, out, err = evaluate(capsys, run, "--json")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert set(result) == {"model", "data", "split", "samples", "loss", "accuracy", "device"}
    assert (result["model"], result["data"], result["split"], result["samples"], result["device"]) == \
        (str(run / "model.npz"), "digits", "test", 359, "numpy")
    assert result["accuracy"] == metrics["test_accuracy"] and result["loss"] == pytest.approx(metrics["test_loss"],
                                                                                               rel=1e-6)
    code, out, err = evaluate(capsys, run / "model.npz")
    assert (code, err) == (0, "")
    assert out == f"digits (test split, 359 samples): accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f}\n"
    X, y = data.load_digits()
    loss, acc = Classifier.load(run, device="cpu").evaluate(X, y)
    code, out, err = evaluate(capsys, run, "--split", "all")
    assert out == f"digits (all split, 1797 samples): accuracy {acc:.4f}  loss {loss:.4f}\n" and code == 0


def test_evaluate_a_file_run_on_its_own_fraction_and_other_data(runs, capsys, monkeypatch, tmp_path):
    run, tiny = runs / "tiny", runs / "tiny.npz"
    X, y = data.load_npz(tiny)
    clf = Classifier.load(run, device="cpu")
    loss, acc = clf.evaluate(*held_out(X, y, 0.25))
    code, out, err = evaluate(capsys, run, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"model": str(run / "model.npz"), "data": str(tiny), "split": "test", "samples": 15,
                               "loss": loss, "accuracy": acc, "device": "numpy"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert acc == metrics["test_accuracy"]
    monkeypatch.chdir(runs)                                             # --data relative: named absolute
    code, out, err = evaluate(capsys, run, "--data", "tiny.npz", "--split", "all", "--json")
    assert json.loads(out)["data"] == str(tiny) and json.loads(out)["samples"] == 60
    code, out, err = evaluate(capsys, run, "--data", "tiny.npz")
    assert out == f"{tiny} (test split, 15 samples): accuracy {acc:.4f}  loss {loss:.4f}\n" and code == 0
    # a model that does not record its test fraction holds out the default 0.2
    del clf.meta["test_fraction"]
    clf.save(tmp_path / "old.npz")
    loss, acc = clf.evaluate(*held_out(X, y, 0.2))
    code, out, err = evaluate(capsys, tmp_path / "old.npz", "--json")
    assert code == 0 and json.loads(out) | {"model": None} == {
        "model": None, "data": str(tiny), "split": "test", "samples": 12, "loss": loss, "accuracy": acc,
        "device": "numpy"}


def test_evaluate_refuses_data_that_is_not_the_runs(runs, capsys, tmp_path):
    run = runs / "tiny"
    X, y = tiny_set()
    np.savez(tmp_path / "other.npz", X=X[:, :30], y=y[:30])
    np.savez(tmp_path / "wide.npz", X=np.ones((5, 6)), y=np.array(["ant", "bee", "cat"] * 2))
    assert evaluate(capsys, run, "--data", tmp_path / "other.npz") == (2, "", (
        f"gpumlp: error: {tmp_path / 'other.npz'} is not the data this model was trained on, so its 'test' split "
        "would not be the held-out samples (it could hold training samples); score it with --split all\n"))
    code, out, err = evaluate(capsys, run, "--data", tmp_path / "other.npz", "--split", "all", "--json")
    assert code == 0 and json.loads(out)["samples"] == 30
    assert evaluate(capsys, run, "--data", tmp_path / "wide.npz", "--split", "all") == (2, "", (
        f"gpumlp: error: {tmp_path / 'wide.npz'} has 5 features (rows of X); the model in {run / 'model.npz'} "
        "takes 3\n"))
    assert evaluate(capsys, runs / "digits", "--data", tmp_path / "wide.npz") == (2, "", (
        f"gpumlp: error: {tmp_path / 'wide.npz'} has 5 features (rows of X); the model in "
        f"{runs / 'digits' / 'model.npz'} takes 64\n"))


def test_evaluate_refuses_the_test_split_of_an_older_split(runs, capsys, monkeypatch):
    run = runs / "digits"
    monkeypatch.setattr(data, "SPLIT_VERSION", data.SPLIT_VERSION + 1)
    assert evaluate(capsys, run) == (2, "", (
        f"gpumlp: error: {run / 'model.npz'} was written by an older gpumlp whose held-out split differs, so the "
        "'test' split would not be its held-out samples; score it with --split all\n"))
    code, out, err = evaluate(capsys, run, "--split", "all", "--json")
    assert code == 0 and json.loads(out)["samples"] == 1797


def test_evaluate_a_test_data_run_on_its_file(runs, capsys, tmp_path):
    run, test = runs / "own", runs / "tiny_test.npz"
    X, y = data.load_npz(test)
    loss, acc = Classifier.load(run, device="cpu").evaluate(X, y)
    code, out, err = evaluate(capsys, run)
    assert (code, err) == (0, "") and out == f"{test} (test split, 30 samples): accuracy {acc:.4f}  loss {loss:.4f}\n"
    code, out, err = evaluate(capsys, run, "--data", test)
    assert (code, err) == (0, "") and out == f"{test} (test split, 30 samples): accuracy {acc:.4f}  loss {loss:.4f}\n"
    code, out, err = evaluate(capsys, run, "--split", "all", "--json")         # all of the training file
    assert code == 0 and json.loads(out)["data"] == str(runs / "tiny.npz") and json.loads(out)["samples"] == 60
    assert evaluate(capsys, run, "--data", runs / "tiny.npz") == (2, "", (
        f"gpumlp: error: {runs / 'tiny.npz'} is not the test data this model was scored on ({test}); score it with "
        "--split all\n"))


def test_evaluate_says_to_pass_the_data_when_a_file_moved(runs, capsys, tmp_path):
    for name in ("tiny.npz", "tiny_test.npz"):
        (tmp_path / name).write_bytes((runs / name).read_bytes())
    for run in ("tiny", "own"):
        clf = Classifier.load(runs / run, device="cpu")
        clf.meta["data"] = str(tmp_path / "tiny.npz")
        if "test_data" in clf.meta and clf.meta["test_data"]:
            clf.meta["test_data"] = str(tmp_path / "tiny_test.npz")
        clf.save(tmp_path / f"m_{run}.npz")
    assert evaluate(capsys, tmp_path / "m_own.npz")[0] == 0
    (tmp_path / "tiny_test.npz").unlink()
    assert evaluate(capsys, tmp_path / "m_own.npz") == (2, "", (
        f"gpumlp: error: {tmp_path / 'm_own.npz'} was scored on {tmp_path / 'tiny_test.npz'}, which is not there any "
        "more: pass the data with --data FILE.npz\n"))
    assert evaluate(capsys, tmp_path / "m_tiny.npz")[0] == 0
    (tmp_path / "tiny.npz").unlink()
    assert evaluate(capsys, tmp_path / "m_tiny.npz") == (2, "", (
        f"gpumlp: error: {tmp_path / 'm_tiny.npz'} was trained on {tmp_path / 'tiny.npz'}, which is not there any "
        "more: pass the data with --data FILE.npz\n"))


def test_a_model_that_records_no_data_is_scored_on_the_digits(runs, capsys, tmp_path):
    clf = Classifier.load(runs / "digits", device="cpu")
    del clf.meta["data"]
    clf.save(tmp_path / "m.npz")
    code, out, err = evaluate(capsys, tmp_path / "m.npz", "--split", "all", "--json")
    assert code == 0 and json.loads(out)["data"] == "digits" and json.loads(out)["samples"] == 1797


def test_an_unfinished_run_is_scored_from_its_checkpoint(runs, capsys):
    run = runs / "cut"
    assert not (run / "model.npz").exists()
    code, out, err = evaluate(capsys, run, "--json")
    assert code == 0 and err == (f"gpumlp: {run} holds no model.npz (its run did not finish): using checkpoint.npz, "
                                 "as of epoch 1\n")
    assert json.loads(out)["model"] == str(run / "checkpoint.npz") and json.loads(out)["samples"] == 359


def test_load_model_names_the_file_it_read(runs, capsys):
    clf, path = cli_evaluate.load_model(str(runs / "digits"), "cpu")
    assert path == str(runs / "digits" / "model.npz") and tuple(clf.net.sizes) == (64, 8, 10)
    assert capsys.readouterr() == ("", "")
    clf, path = cli_evaluate.load_model(str(runs / "tiny" / "model.npz"), "cpu")
    assert path == str(runs / "tiny" / "model.npz") and clf.classes.tolist() == ["ant", "bee", "cat"]
    clf, path = cli_evaluate.load_model(str(runs / "cut"), "cpu")
    assert path == str(runs / "cut" / "checkpoint.npz") and capsys.readouterr().err.startswith(f"gpumlp: {runs}")
    for model in (str(runs / "digits"), str(runs / "cut"), str(runs / "tiny" / "model.npz")):
        clf, _ = cli_evaluate.load_model(model, gpumlp.get_backend("cpu"))
        assert clf.net.backend.name == "numpy"
    capsys.readouterr()


def test_load_model_passes_the_device_on(runs, monkeypatch):
    asked = []
    real = Classifier.load

    def load(path, device="auto"):
        asked.append(device)
        return real(path, device="cpu")
    real_rc = RunDir.classifier

    def classifier(self, device="auto"):
        asked.append(device)
        return real_rc(self, device="cpu")
    with monkeypatch.context() as m:
        m.setattr(Classifier, "load", staticmethod(load))
        cli_evaluate.load_model(str(runs / "tiny" / "model.npz"), "gpu")
    monkeypatch.setattr(RunDir, "classifier", classifier)
    cli_evaluate.load_model(str(runs / "tiny"), "auto")
    assert asked == ["gpu", "auto"]


def test_evaluate_and_predict_load_the_model_on_the_device_asked(runs, monkeypatch, capsys, tmp_path):
    asked = []
    real = cli_evaluate.load_model

    def load_model(model, device):
        asked.append((model, device))
        return real(model, "cpu")
    monkeypatch.setattr(cli_evaluate, "load_model", load_model)
    np.savez(tmp_path / "new.npz", X=tiny_set(4)[0])
    for device in ("gpu", None):
        flag = [] if device is None else ["--device", device]
        assert cli.main(["evaluate", str(runs / "tiny"), *flag]) == 0
        assert cli.main(["predict", str(runs / "tiny"), "--data", str(tmp_path / "new.npz"), *flag]) == 0
    assert asked == [(str(runs / "tiny"), "gpu")] * 2 + [(str(runs / "tiny"), None)] * 2
    capsys.readouterr()


# -- predict -----------------------------------------------------------------------------------------------------

def predict(capsys, *argv):
    code = cli.main(["predict", *map(str, argv), "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_prints_a_label_a_line_or_writes_a_csv(runs, capsys, tmp_path, monkeypatch):
    X, _ = tiny_set(9, seed=2)
    np.savez(tmp_path / "new.npz", X=X)                                  # no labels
    labels = Classifier.load(runs / "tiny", device="cpu").predict(X).tolist()
    assert set(labels) <= {"ant", "bee", "cat"} and len(labels) == 9
    assert predict(capsys, runs / "tiny", "--data", tmp_path / "new.npz") == (0, "".join(f"{s}\n" for s in labels),
                                                                               "")
    out = tmp_path / "labels.csv"
    assert predict(capsys, runs / "tiny", "--data", tmp_path / "new.npz", "--out", out) == (
        0, f"wrote 9 predictions to {out}\n", "")
    assert out.read_bytes() == ("sample,label\n" + "".join(f"{i},{s}\n" for i, s in enumerate(labels))).encode()
    assert list(csv.reader(out.open())) == [["sample", "label"], *([str(i), s] for i, s in enumerate(labels))]
    monkeypatch.chdir(tmp_path)                                          # a file in the current folder
    assert predict(capsys, runs / "tiny", "--data", "new.npz", "--out", "here.csv") == (
        0, "wrote 9 predictions to here.csv\n", "")
    assert (tmp_path / "here.csv").read_bytes() == out.read_bytes()


def test_predict_digits_labels_from_an_unfinished_run(runs, capsys, tmp_path):
    X, _ = data.load_digits()
    np.savez(tmp_path / "new.npz", X=X[:, :5], y=np.arange(5))
    clf, _ = RunDir(str(runs / "cut")).classifier(device="cpu")
    code, out, err = predict(capsys, runs / "cut", "--data", tmp_path / "new.npz")
    assert code == 0 and out == "".join(f"{v}\n" for v in clf.predict(X[:, :5]).tolist())
    assert err == f"gpumlp: {runs / 'cut'} holds no model.npz (its run did not finish): using checkpoint.npz, as of " \
                  "epoch 1\n"


def test_predict_refuses_an_out_that_is_not_a_file_in_a_folder(runs, capsys, tmp_path):
    for out in (tmp_path, tmp_path / "missing" / "p.csv"):
        assert predict(capsys, runs / "tiny", "--data", runs / "tiny.npz", "--out", out) == (
            2, "", f"gpumlp: error: --out {out}: give a file in an existing folder\n")
    assert not (tmp_path / "missing").exists()


def test_predict_refuses_data_of_the_wrong_shape_with_a_hint_where_it_fits(runs, capsys, tmp_path):
    X, _ = tiny_set(8)
    np.savez(tmp_path / "rows.npz", X=X.T)
    np.savez(tmp_path / "wide.npz", X=np.ones((5, 4)))
    assert predict(capsys, runs / "tiny", "--data", tmp_path / "rows.npz") == (2, "", (
        f"gpumlp: error: X in {tmp_path / 'rows.npz'} has 8 rows (features); the model takes 3 (one sample per row? "
        "save X.T)\n"))
    assert predict(capsys, runs / "tiny", "--data", tmp_path / "wide.npz") == (2, "", (
        f"gpumlp: error: X in {tmp_path / 'wide.npz'} has 5 rows (features); the model takes 3\n"))


def test_predict_names_the_file_whose_values_the_model_cannot_take(runs, capsys, tmp_path, monkeypatch):
    np.savez(tmp_path / "far.npz", X=np.full((3, 2), 1e300))
    monkeypatch.chdir(tmp_path)
    code, out, err = predict(capsys, runs / "tiny", "--data", "far.npz")
    assert (code, out) == (2, "")
    assert err == (f"gpumlp: error: {tmp_path / 'far.npz'}: X's values lie too far outside the training data's range: "
                   "scaled, some exceed what float32 holds (the largest raw value is 1e+300)\n")

    def predict_named(self, X, batch_size=4096):
        raise ValueError(f"{tmp_path / 'far.npz'} says no")
    monkeypatch.setattr(Classifier, "predict", predict_named)
    assert predict(capsys, runs / "tiny", "--data", "far.npz")[2] == f"gpumlp: error: {tmp_path / 'far.npz'} says no\n"


# -- plot: the command and the title --------------------------------------------------------------------------------

def test_plot_draws_a_runs_curves_titled_by_its_settings(runs, capsys, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(gplot, "learning_curves", lambda history, path, title=None: seen.append((history, path, title)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_bytes((runs / "tiny" / "metrics.json").read_bytes())
    assert cli.main(["plot", str(run)]) == 0
    assert capsys.readouterr() == (f"wrote {run / 'curves.png'}\n", "")
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert len(history) == 1 and history[0]["epoch"] == 1
    assert seen == [(history, str(run / "curves.png"),
                     "tiny.npz · loss ce · hidden 8 relu · batch 32 · lr 0.1 · momentum 0.9 · wd 0.001 · epochs 1 · "
                     "seed 0")]


def test_plot_refuses_what_is_not_a_run_folder(capsys, tmp_path):
    assert cli.main(["plot", str(tmp_path / "none")]) == 2
    assert capsys.readouterr() == ("", f"gpumlp: error: {tmp_path / 'none'} is not a folder written by 'gpumlp train "
                                       "--out'\n")
    (tmp_path / "file").write_text("")
    assert cli.main(["plot", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"gpumlp: error: {tmp_path / 'file'} is not a folder written by 'gpumlp train " \
                                      "--out'\n"
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert capsys.readouterr() == ("", f"gpumlp: error: {tmp_path} holds no metrics.json or metrics.jsonl (a run "
                                       "writes them with --out)\n")
    (tmp_path / "metrics.jsonl").write_text("")
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert capsys.readouterr() == ("", "gpumlp: error: the run has no completed epoch to draw\n")


def test_plot_gives_draw_the_run_its_history_and_record(runs, monkeypatch, capsys):
    seen = []

    def draw(run, history, record):
        seen.append((run.path, history, record))
        return "somewhere.png"
    monkeypatch.setattr(cli_plot, "draw", draw)
    assert cli.main(["plot", str(runs / "tiny")]) == 0
    assert capsys.readouterr().out == "wrote somewhere.png\n"
    run = RunDir(str(runs / "tiny"))
    assert seen == [(str(runs / "tiny"), run.history(), run.record())] and len(seen[0][1]) == 1


def test_draw_writes_curves_png_titled_by_the_record(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(gplot, "learning_curves", lambda history, path, title=None: seen.append((history, path, title)))
    history = [{"epoch": 1, "loss": 1.0, "accuracy": 0.5}]
    record = {"loss": "mse", "args": {"epochs": 4}}
    assert cli_plot.draw(RunDir(str(tmp_path)), history, record) == str(tmp_path / "curves.png")
    assert seen == [(history, str(tmp_path / "curves.png"), "digits · loss mse · epochs 4")]
    assert cli_plot.draw(RunDir(str(tmp_path / "r2")), history, {}) == str(tmp_path / "r2" / "curves.png")
    assert seen[1][2] == "gpumlp run r2"


@pytest.mark.parametrize("record, want", [
    ({}, "gpumlp run run"),
    ({"args": {}}, "gpumlp run run"),
    ({"args": None, "data": "x.npz"}, "gpumlp run run"),
    ({"args": {"seed": 0}}, "digits · loss None · seed 0"),
    ({"loss": "hinge", "args": {"seed": 0, "loss": "ce"}}, "digits · loss hinge · seed 0"),
    ({"args": {"loss": "mse", "data": "/a/b/own.npz", "lr": None, "epochs": 2}}, "own.npz · loss mse · epochs 2"),
    ({"data": "/d/rec.npz", "args": {"data": "/d/arg.npz", "epochs": 2}}, "rec.npz · loss None · epochs 2"),
    ({"data": "", "args": {"data": "", "epochs": 2}}, "digits · loss None · epochs 2"),
    ({"args": {"hidden": [64], "epochs": 1}}, "digits · loss None · hidden 64 · epochs 1"),
    ({"args": {"hidden": [], "activation": "tanh", "epochs": 1}}, "digits · loss None · epochs 1"),
    ({"args": {"hidden": [4, 2, 1], "activation": "tanh"}}, "digits · loss None · hidden 4,2,1 tanh"),
    ({"args": {"batch_size": 8, "lr": 1.0, "momentum": 0.0, "weight_decay": 0.1 + 0.2, "epochs": 3, "seed": 7}},
     "digits · loss None · batch 8 · lr 1 · momentum 0 · wd 0.3 · epochs 3 · seed 7"),
    ({"args": {"lr": 1e-05, "seed": 2.5}}, "digits · loss None · lr 1e-05 · seed 2.5"),
    ({"args": {"batch_size": 1234567, "seed": 12345678}}, "digits · loss None · batch 1234567 · seed 12345678"),
    ({"test_data": "/t/held.npz", "args": {"epochs": 1}}, "digits · loss None · epochs 1 · test held.npz"),
    ({"test_data": None, "args": {"epochs": 1}}, "digits · loss None · epochs 1"),
])
def test_the_title_says_what_the_run_trained(record, want):
    assert cli_plot.title(record, "/abs/folder/run/") == want


# -- the curves' figure ------------------------------------------------------------------------------------------

def history_of(n):
    """n epochs whose losses stay within 1.1 and 1.6 (few tick labels: a figure is quicker to lay out)."""
    return [{"epoch": e, "loss": 1.5 - e / (3 * n), "accuracy": 0.5 + e / (4 * n), "test_loss": 1.6 - e / (3 * n),
             "test_accuracy": 0.4 + e / (4 * n)} for e in range(1, n + 1)]


@pytest.fixture
def figures():
    made = []
    yield made
    for fig in made:
        plt.close(fig)


def test_the_figure_is_two_panels_of_12_by_5_inches_at_100_dpi(figures):
    history = history_of(3)
    # its own sizes whatever the user's matplotlibrc says, and no warning on the way
    with matplotlib.rc_context({"figure.dpi": 72, "lines.linewidth": 3.0, "lines.markersize": 9.0}), \
            warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = gplot.curves_figure(history, "the title")
    figures.append(fig)
    assert tuple(fig.get_size_inches()) == (12.0, 5.0) and fig.dpi == 100
    assert fig._suptitle.get_text() == "the title" and fig._suptitle.get_fontsize() == 13
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_position().x1 < acc_ax.get_position().x0                   # side by side, loss on the left
    assert (loss_ax.get_yscale(), acc_ax.get_yscale(), loss_ax.get_xscale()) == ("log", "linear", "linear")
    for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        train, test = ax.get_lines()
        assert [tuple(line.get_xdata()) for line in (train, test)] == [(1, 2, 3)] * 2
        assert list(train.get_ydata()) == [h[key] for h in history]
        assert list(test.get_ydata()) == [h[f"test_{key}"] for h in history]
        assert (train.get_label(), test.get_label()) == ("train (during the epoch)", "test")
        assert (train.get_marker(), test.get_marker()) == ("o", "s")
        assert all(line.get_linestyle() == "-" and line.get_markersize() == 4 and line.get_linewidth() == 1.5
                   for line in (train, test))
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", key)
        assert ax.xaxis.label.get_fontsize() == 12 and ax.yaxis.label.get_fontsize() == 12
        legend = ax.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == ["train (during the epoch)", "test"]
        assert all(t.get_fontsize() == 11 for t in legend.get_texts())
        locator = ax.xaxis.get_major_locator()
        assert isinstance(locator, ticker.MaxNLocator) and all(float(v).is_integer() for v in locator.tick_values(1, 3))
        assert all(t.label1.get_fontsize() == 11 for t in ax.xaxis.get_major_ticks() + ax.yaxis.get_major_ticks())
        grid = [t.gridline for t in ax.xaxis.get_major_ticks() + ax.yaxis.get_major_ticks()]
        assert all(g.get_visible() and g.get_alpha() == 0.35 for g in grid)
    minor = loss_ax.yaxis.get_minor_ticks()
    assert minor and all(t.gridline.get_visible() and t.gridline.get_alpha() == 0.15 for t in minor)
    assert all(t.label1.get_fontsize() == 9 for t in minor)
    assert not any(t.gridline.get_visible() for t in acc_ax.yaxis.get_minor_ticks())
    assert not any(t.gridline.get_visible() for t in acc_ax.xaxis.get_minor_ticks())
    plain = acc_ax.xaxis.get_minor_ticks(1)[0].label1.get_fontsize()       # minor labels elsewhere: matplotlib's size
    assert plain != 9 and loss_ax.xaxis.get_minor_ticks(1)[0].label1.get_fontsize() == plain
    formatter = loss_ax.yaxis.get_minor_formatter()
    assert isinstance(formatter, ticker.LogFormatterSciNotation)
    assert formatter.labelOnlyBase is False and tuple(formatter.minor_thresholds) == (2, 0.6)
    assert not isinstance(acc_ax.yaxis.get_minor_formatter(), ticker.LogFormatterSciNotation)


def test_up_to_40_epochs_are_marked_and_a_missing_test_score_leaves_the_train_line_alone(figures):
    history = history_of(40)
    history[1]["test_loss"] = None
    del history[2]["test_loss"]
    fig = gplot.curves_figure(history)
    figures.append(fig)
    assert fig._suptitle is None and gplot.MARKERS_UP_TO == 40
    assert [[(line.get_label(), line.get_marker(), line.get_linestyle()) for line in ax.get_lines()]
            for ax in fig.axes] == [[("train (during the epoch)", "o", "-")],
                                    [("train (during the epoch)", "o", "-"), ("test", "s", "-")]]


def test_past_40_epochs_the_lines_are_plain(figures):
    fig = gplot.curves_figure(history_of(41), "")
    figures.append(fig)
    assert fig._suptitle is None
    assert [[(line.get_marker(), line.get_linestyle()) for line in ax.get_lines()] for ax in fig.axes] == \
        [[("None", "-")] * 2] * 2


def test_nothing_to_draw_or_no_matplotlib_is_a_value_error(monkeypatch):
    with pytest.raises(ValueError, match=exact("the run has no completed epoch to draw")):
        gplot.curves_figure([])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ValueError, match=exact(f"drawing needs matplotlib: {HINT}")):
        gplot.curves_figure(history_of(2))


def test_pyplot_is_matplotlibs_on_the_agg_backend():
    assert gplot._pyplot() is plt and matplotlib.get_backend().lower() == "agg"


def test_learning_curves_saves_the_figure_to_the_path_and_closes_it(monkeypatch, tmp_path):
    made = []

    def curves_figure(history, title=None):
        made.append((history, title, plt.figure(figsize=(2, 1), dpi=50)))    # small: quick to save
        return made[-1][2]
    monkeypatch.setattr(gplot, "curves_figure", curves_figure)
    history = history_of(2)
    gplot.learning_curves(history, tmp_path / "c.png", title="t")
    assert made[0][:2] == (history, "t") and not plt.fignum_exists(made[0][2].number)
    assert png_size(tmp_path / "c.png") == (100, 50)
    gplot.learning_curves(history, str(tmp_path / "d.png"))
    assert made[1][:2] == (history, None) and png_size(tmp_path / "d.png") == (100, 50)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="no completed epoch"):
        gplot.learning_curves([], tmp_path / "e.png")
    assert not (tmp_path / "e.png").exists()
