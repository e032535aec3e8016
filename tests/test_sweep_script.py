"""scripts/sweep_batch_sizes.py as a user meets it: its --help, --quick, what it says when the
critical batch size cannot be fitted, and the train sweep's plot (its axes' labels, and the
legends clear of the data)."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SCRIPT = SCRIPTS / "sweep_batch_sizes.py"


def run(*args):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def option_blocks(text):
    """Each option's help in --help, as one line: {"--seed": "--seed SEED data and ...", ...}."""
    blocks, name = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-\w|--[\w-]+)", line)
        if m:
            name = m.group(1) if not line.startswith("  -h") else "--help"
            blocks[name] = line.strip()
        elif name and line.startswith("    "):
            blocks[name] += " " + line.strip()
        else:
            name = None
    return blocks


def test_help_is_whole_and_says_each_default_once():
    p = run("--help")
    assert p.returncode == 0, p.stderr
    text = " ".join(p.stdout.split())
    assert ("Batch-size sweeps: what a training step costs at each batch size (--mode step), and how the "
            "batch size changes training (--mode train).") in text
    assert "(default: None)" not in text and "(default: False)" not in text
    blocks = option_blocks(p.stdout)
    assert len(blocks) == 32, sorted(blocks)
    for block in blocks.values():
        assert block.count("default") <= 1, block
    for name, default in [("--seed", "(default: 0)"), ("--out", "(default: sweep-MODE)"), ("--threads", "(default: 1)"),
                          ("--rounds", "(default: 10; 3 with --quick)"), ("--mode", "(default: step)"),
                          ("--lr-grid", "(default: 0.05,0.1,0.2,0.5,1,2; 0.1,0.3,1,2 with --quick)"),
                          ("--momentum", "(default: 0, plain SGD"), ("--data", "(default: the embedded digits)")]:
        assert default in blocks[name], (name, blocks[name])
    assert "python scripts/sweep_batch_sizes.py --mode train --quick --out DIR" in p.stdout


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_two_batch_sizes_that_both_reach_the_target_are_said_to_be_too_few(tmp_path):
    p = run("--mode", "train", "--batch-sizes", "64,256", "--lr-grid", "1", "--seeds", "1", "--target", "0.9",
            "--max-epochs", "10", "--hidden", "32", "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    assert [r["reached"] for r in rows(tmp_path / "sweep.csv")] == ["1/1", "1/1"]
    line = next(x for x in p.stdout.splitlines() if x.startswith("critical batch size"))
    assert ("B_crit = E_min/S_min = - (not fitted: 2 batch sizes swept, fewer than 3: fitting S(B) = S_min + "
            "E_min/B needs at least 3 distinct batch sizes that reach the target (2 of the 2 did); give "
            "--batch-sizes at least 3)") in line
    model = json.loads((tmp_path / "sweep.json").read_text())["model"]
    assert model["b_crit_fitted"] is None and model["b_crit_not_fitted"].startswith("not fitted: 2 batch sizes")


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import sweep_output
    import sweep_train
    return sweep_train, sweep_output


def test_why_the_fit_is_missing_names_what_it_needs(scripts):
    sweep_train, _ = scripts
    fit = {"b_crit": None, "why": "the library's reason"}
    assert sweep_train.not_fitted(fit, 1, 1).startswith("not fitted: 1 batch size swept, fewer than 3: ")
    assert sweep_train.not_fitted(fit, 5, 2) == ("not fitted: 2 of the 5 batch sizes swept reached the target, "
                                                 "fewer than 3: fitting S(B) = S_min + E_min/B needs at least 3 "
                                                 "distinct batch sizes that reach the target")
    assert sweep_train.not_fitted(fit, 5, 3) == "the library's reason"      # 3 reached: the fit's own why


def test_quick_train_mode_with_an_explicit_option(tmp_path):
    p = run("--mode", "train", "--quick", "--seeds", "1", "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    assert [int(r["batch_size"]) for r in rows(tmp_path / "sweep.csv")] == [16, 64, 256, 1024]
    runs = rows(tmp_path / "runs.csv")
    assert len(runs) == 4 * 4 * 1 and {float(r["lr"]) for r in runs} == {0.1, 0.3, 1.0, 2.0}
    settings = json.loads((tmp_path / "sweep.json").read_text())["header"]["settings"]
    assert settings["quick"] is True and settings["seeds"] == [0]


def test_quick_step_mode(tmp_path):
    p = run("--quick", "--sizes", "8,8,2", "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["batch_size"] for r in record["table"]] == [32, 256]
    assert len(record["raw_ms"]["32"]["gpumlp"]) == 3 and record["header"]["settings"]["rounds"] == 3


def test_plain_numbers_on_the_axes(scripts):
    _, out = scripts
    assert [out.plain_number(v) for v in (1024, 10000, 0.5, 0.0105, 0.01, 2.5)] == \
           ["1,024", "10,000", "0.5", "0.0105", "0.01", "2.5"]


def train_record(seconds):
    """A train sweep's record, with the seconds to target in a narrow band (as on a fast device)."""
    table, runs = [], []
    for B, s, t in zip([16, 64, 256, 1024], [70, 18, 9, 8], seconds, strict=True):
        table.append({"batch_size": B, "lr": 1.0, "steps_to_target": s, "samples_to_target": s * B,
                      "seconds_to_target": t})
        runs.append({"batch_size": B, "lr": 1.0, "reached": True, "samples": s * B, "steps": s})
    model = {"fit": {"b_crit": 90.0, "s_min": 8.0, "e_min": 720.0}, "b_simple_predicted": 31,
             "b_simple_predicted_range": [29, 44], "b_simple_init": 29}
    header = {"device": "a CPU", "settings": {"data": "digits", "target": 0.96, "lr_scaling": None, "momentum": 0.0,
                                              "seeds": [0, 1]}}
    return {"mode": "train", "table": table, "runs": runs, "model": model, "header": header, "sizes": [64, 256, 10]}


def test_the_train_plot_labels_seconds_plainly_and_keeps_legends_off_the_data(scripts):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    _, out = scripts
    fig = out._plot_train(plt, train_record([0.0105, 0.0071, 0.0142, 0.0153]))
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        axes = fig.axes
        seconds = [t.get_text() for t in axes[2].yaxis.get_ticklabels(minor=True) + axes[2].yaxis.get_ticklabels()
                   if t.get_text() and axes[2].get_ylim()[0] <= t.get_position()[1] <= axes[2].get_ylim()[1]]
        assert sorted(seconds, key=float) == ["0.007", "0.008", "0.009", "0.01"], seconds
        for ax in axes:
            labels = [t.get_text() for axis in (ax.xaxis, ax.yaxis) for minor in (False, True)
                      for t in axis.get_ticklabels(minor=minor)]
            assert not [s for s in labels if "times" in s or "×" in s or "^" in s or "$" in s], labels
            legend = ax.get_legend().get_window_extent(renderer)
            assert legend.y1 < ax.get_window_extent(renderer).y0        # under the axes, off the curves
        assert [t.get_text() for t in axes[1].xaxis.get_ticklabels()] == ["16", "64", "256", "1,024"]
    finally:
        plt.close(fig)
