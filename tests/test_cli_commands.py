"""The gpumlp command's surface: one-line option errors, --help with every default, hints
that work from a checkout, the learning curves' figure, and the job object under MPI."""
import argparse
import os
import pathlib
import subprocess
import sys

import pytest

from gpumlp import cli
from gpumlp.cli.job import Job
from gpumlp.cli.plot import title

ROOT = pathlib.Path(__file__).resolve().parents[1]


def env(**extra):
    e = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    e.pop("PYTHONUNBUFFERED", None)
    return e


# -- friction 4: one line per option error ---------------------------------------------------------------

@pytest.mark.parametrize("bad, says", [(["--epochs", "0"], "argument --epochs: expected a positive integer; got '0'"),
                                       (["--hidden", "256,,128"], "argument --hidden: expected positive layer widths"),
                                       (["--hidden", "256,"], "argument --hidden"),
                                       (["--loss", "l1"], "argument --loss: invalid choice: 'l1'"),
                                       (["--nope"], "unrecognized arguments: --nope")])
def test_option_errors_are_one_line(bad, says, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--device", "cpu", *bad])
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"gpumlp: error: {says}") and "(see 'gpumlp train --help')" in captured.err


def test_hidden_widths_parse_exactly():
    p = cli.parser()
    assert p.parse_args(["train", "--hidden", "256,128"]).hidden == [256, 128]
    assert p.parse_args(["train", "--hidden", "64"]).hidden == [64]
    assert p.parse_args(["train", "--hidden", "64, 32"]).hidden == [64, 32]


# -- friction 5: every default in --help --------------------------------------------------------------------

def test_every_option_with_a_value_shows_its_default():
    parser = cli.parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0 or action.default is argparse.SUPPRESS \
                    or action.required:
                continue                                      # positionals, flags, --help and predict --data
            text = sub.formatter_class(prog="x")._get_help_string(action) or ""
            assert "default" in text, f"gpumlp {name} {action.option_strings[0]}: {text}"
            checked += 1
    assert checked >= 27
    help_text = subs.choices["train"].format_help()
    assert "initial weights and shuffling (default: 0)" in " ".join(help_text.split())


# -- friction 1: extras from a checkout ---------------------------------------------------------------------

def test_plot_needs_matplotlib_and_says_how_to_get_it_from_a_checkout(tmp_path):
    help_text = " ".join(cli.parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "--plot needs matplotlib: pip install -e '.[plot]' (in the gpumlp checkout)" in help_text
    assert "with --plot (needs matplotlib), DIR/curves.png" in help_text
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            f"from gpumlp import cli; sys.exit(cli.main(['train', '--device', 'cpu', '--plot', '--out', "
            f"{str(tmp_path / 'run')!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env())
    assert p.returncode == 2 and p.stdout == "" and not (tmp_path / "run").exists()
    assert p.stderr == "gpumlp: error: --plot needs matplotlib: pip install -e '.[plot]' (in the gpumlp checkout)\n"


def test_no_hint_of_the_cli_plot_or_parallel_names_a_package_not_on_pypi():
    for path in [*(ROOT / "gpumlp" / "cli").glob("*.py"), ROOT / "gpumlp" / "plot.py", ROOT / "gpumlp" / "parallel.py",
                 ROOT / "gpumlp" / "runs.py"]:
        assert "pip install 'gpumlp[" not in path.read_text(), path


# -- friction 11: the curves ------------------------------------------------------------------------------

def test_the_curves_are_large_titled_by_the_run_with_minor_labels_and_plain_long_lines():
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    from gpumlp.plot import curves_figure
    record = {"data": "/home/someone/very/long/path/mnist.npz", "loss": "ce",
              "args": {"hidden": [256, 128], "activation": "relu", "batch_size": 64, "lr": 0.05, "momentum": 0.9,
                       "weight_decay": 0.001, "epochs": 300, "seed": 1}}
    name = title(record, "/abs/folder/run")
    assert name == "mnist.npz · loss ce · hidden 256,128 relu · batch 64 · lr 0.05 · momentum 0.9 · wd 0.001 · " \
                   "epochs 300 · seed 1"
    assert title({}, "/abs/folder/run/") == "gpumlp run run"
    history = [{"epoch": e, "loss": 1.5 * (0.05 / 1.5) ** (e / 300), "accuracy": 0.5 + e / 700,
                "test_loss": 1.6 * (0.06 / 1.6) ** (e / 300), "test_accuracy": 0.5 + e / 800} for e in range(1, 301)]
    fig = curves_figure(history, name)
    try:
        width, height = fig.get_size_inches() * fig.dpi
        assert width >= 1200 and height >= 500 and fig._suptitle.get_text() == name
        loss_ax, acc_ax = fig.axes
        assert all(line.get_marker() in ("None", "", None) for ax in fig.axes for line in ax.get_lines())
        fig.canvas.draw()
        minor = [t.get_text() for t in loss_ax.get_yticklabels(minor=True) if t.get_visible() and t.get_text()]
        major = [t.get_text() for t in loss_ax.get_yticklabels() if t.get_text()]
        assert loss_ax.get_yscale() == "log" and len(minor) + len(major) >= 4, (major, minor)
        assert min(t.get_fontsize() for t in loss_ax.get_xticklabels()) >= 10
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)
    few = curves_figure(history[:10])
    assert all(line.get_marker() not in ("None", "", None) for line in few.axes[0].get_lines())


# -- friction 8: the job ------------------------------------------------------------------------------------

class FakeParallel:
    """A stand-in for DataParallel: only what Job reads."""

    def __init__(self, rank, size):
        self.rank, self.size, self.comm, self.local_size = rank, size, None, size
        self.gpu = 0

    def use_local_gpu(self):
        self.gpu += 1


def test_the_job_speaks_on_rank_0_alone_and_names_its_launch(capsys):
    assert Job().launch == "gpumlp" and Job().is_root
    root, other = Job(FakeParallel(0, 2)), Job(FakeParallel(1, 2))
    assert root.launch == other.launch == "mpiexec -n 2 gpumlp"
    root.say("from 0")
    other.say("from 1")
    assert capsys.readouterr().out == "from 0\n"
    other.backend("cpu")
    assert other.parallel.gpu == 0                       # --device cpu takes no GPU
    with pytest.raises(ValueError, match="one rank's problem"):
        Job().share("one rank's problem")
    Job().share(None)


def test_only_rank_0_says_it_uses_the_cpu():
    code = ("import sys; from gpumlp.cli.job import Job\n"
            "class P: rank, size, comm, local_size = int(sys.argv[1]), 2, None, 2\n"
            "P.use_local_gpu = lambda self: None\n"
            "print(Job(P()).backend('auto').name)")
    said = [subprocess.run([sys.executable, "-c", code, rank], capture_output=True, text=True,
                           env=env(GPUMLP_DEVICE="auto")) for rank in ("0", "1")]
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed: the CPU note may not be printed")
    except ImportError:
        pass
    assert said[0].stdout == said[1].stdout == "numpy\n"
    assert "using the CPU" in said[0].stderr and said[1].stderr == ""
