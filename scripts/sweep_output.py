"""The batch-size sweep's output: its CSV files, its JSON record, the table it prints and
its plots (scripts/sweep_batch_sizes.py; the measuring is in sweep_step.py and
sweep_train.py)."""
import csv
import json
import math
import os
import re


def write_csv(path, rows):
    """One row per dict, the columns in order of first appearance ("" for None)."""
    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})


def write_json(path, record):
    """The record, its header and tables readable, its long lists of numbers one per line."""
    text = json.dumps(record, indent=1)
    text = re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    with open(path, "w") as f:
        f.write(text)


def print_table(rows, columns):
    """``columns``: (key, title, format spec), where "mib" prints bytes as MiB and "pct" a
    fraction as a signed percentage; None prints as "-"."""
    def cell(v, spec):
        if v is None:
            return "-"
        if spec == "mib":
            return f"{v / 2 ** 20:.1f}"
        if spec == "pct":
            return f"{100 * v:+.1f}%"
        return format(v, spec)
    cells = [[title for _, title, _ in columns]] + [[cell(r.get(k), spec) for k, _, spec in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


# -- plots --------------------------------------------------------------------------------

def plot(record, path):
    """Draw the sweep into ``path``; returns why not, or None."""
    if not record["table"]:
        return "nothing was measured"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib is not installed ({e}); pip install -e '.[plot]' in the checkout"
    if record["mode"] == "step":
        fig = _plot_step(plt, record)
    else:
        fig = _plot_train(plt, record)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None


def plain_number(x):
    """A tick label as a plain number: 1,024, 0.5, 0.0105 (never 1.05×10⁻²)."""
    if x >= 1 and math.isclose(x, round(x), rel_tol=1e-9):
        return f"{round(x):,}"
    return f"{x:.3g}"


def _plain_log_axis(axis, ticks=None):
    """Plain-number labels on a log axis: at ``ticks`` alone when given (the batch sizes),
    else at the decades and, where the view holds at most 2 decade ticks, at minor ticks
    between them too (2 and 5 × 10^k; every one where it spans under 0.7 decades)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter, NullFormatter, NullLocator

    class Plain(LogFormatter):
        def _num_to_string(self, x, vmin, vmax):
            return plain_number(x)

        def set_locs(self, locs=None):
            super().set_locs(locs)
            if self._sublabels is not None and len(self._sublabels) not in (1, int(self._base)):
                self._sublabels = {1, 2, 5, 10}         # matplotlib's 1, 2, 3, 4, 6 crowd a short axis
    if ticks is not None:
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FuncFormatter(lambda x, _: plain_number(x)))
        axis.set_minor_locator(NullLocator())
        axis.set_minor_formatter(NullFormatter())
    else:
        axis.set_major_formatter(Plain(labelOnlyBase=False))
        axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.7)))


def _plot_step(plt, record):
    rows, h = record["table"], record["header"]
    B = [r["batch_size"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label, style in (("gpumlp", "gpumlp", "o-"), ("torch", "PyTorch", "s--"),
                              ("floor", "floor (GEMMs + update)", "k.-")):
        ms = [r.get(f"{key}_ms_min") for r in rows]
        if any(v is None for v in ms):
            continue
        ax1.plot(B, [1e3 * m / n for m, n in zip(ms, B, strict=True)], style, label=label)
        ax2.plot(B, [n / (m / 1e3) for m, n in zip(ms, B, strict=True)], style, label=label)
    ax1.set_ylabel("time per sample (µs)")
    ax2.set_ylabel("samples per second")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(f"one training step, {'-'.join(map(str, record['sizes']))}, {h['settings']['dtype']}, "
                 f"{h['threads']} thread(s): {h['device']}", fontsize=9)
    fig.tight_layout()
    return fig


def _plot_train(plt, record):
    import numpy as np
    rows, model = record["table"], record["model"]
    fit = model["fit"]
    ok = [r for r in rows if r["steps_to_target"] is not None]
    # the legends go under the axes, outside the data; constrained layout makes room for them
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 5.2), layout="constrained")
    B = np.array([r["batch_size"] for r in ok], float)
    S = np.array([r["steps_to_target"] for r in ok], float)
    E = np.array([r["samples_to_target"] for r in ok], float)
    runs = [r for r in record["runs"] if r["reached"]]
    chosen = {(r["batch_size"], r["lr"]) for r in rows}
    per_seed = [r for r in runs if (r["batch_size"], r["lr"]) in chosen]
    ax1.plot([r["samples"] for r in per_seed], [r["steps"] for r in per_seed], ".", color="0.6", label="each seed")
    ax1.plot(E, S, "o", label="median over seeds")
    for b, e, s in zip(B, E, S, strict=True):
        # beside the point, on the side away from the fitted curve: a point above the falling
        # curve has it on its left at its height, a point below has it on its right
        right = not fit["b_crit"] or e <= fit["e_min"] or s >= fit["s_min"] * (1 + fit["e_min"] / (e - fit["e_min"]))
        ax1.annotate(f"B={b:.0f}", (e, s), textcoords="offset points", xytext=(6 if right else -6, 0),
                     ha="left" if right else "right", va="center", fontsize=7)
    if fit["b_crit"]:
        t = np.geomspace(1e-2, 1e3, 300)        # (S/S_min − 1)(E/E_min − 1) = 1, parametrised by E/E_min − 1 = t
        curve_E, curve_S = fit["e_min"] * (1 + t), fit["s_min"] * (1 + 1 / t)
        keep = (curve_S <= 2 * max(S)) & (curve_E <= 2 * max(E))
        ax1.plot(curve_E[keep], curve_S[keep], "-", color="C1", label="(S/S_min − 1)(E/E_min − 1) = 1")
        ax1.axhline(fit["s_min"], color="C1", lw=0.8, ls=":")
        ax1.axvline(fit["e_min"], color="C1", lw=0.8, ls=":")
    ax1.set_xlabel("examples to target E")
    ax1.set_ylabel("steps to target S")
    ax1.set_title("steps vs examples (the Pareto front)", fontsize=9)
    ax2.plot(B, S, "o", label="steps to target (median)")
    if fit["b_crit"]:
        grid = np.geomspace(min(B), max(B), 100)
        ax2.plot(grid, fit["s_min"] + fit["e_min"] / grid, "-", color="C1", label="S_min + E_min/B")
    ax2.set_xlabel("batch size B")
    ax2.set_ylabel("steps")
    ax2.set_title("steps to target", fontsize=9)
    ax3.plot(B, [r["seconds_to_target"] for r in ok], "s-", color="C2", label="seconds to target (median)")
    ax3.set_xlabel("batch size B")
    ax3.set_ylabel("seconds of training")
    ax3.set_title(f"time to target ({record['header']['device']})", fontsize=8)
    for ax in (ax2, ax3):
        if fit["b_crit"]:
            ax.axvline(fit["b_crit"], color="C1", ls="--", label=f"fitted B_crit = {fit['b_crit']:.0f}")
        if model["b_simple_predicted"]:
            lo, hi = model["b_simple_predicted_range"]
            ax.axvspan(lo, hi, color="C3", alpha=0.1)
            ax.axvline(model["b_simple_predicted"], color="C3", ls=":",
                       label=f"B_simple = {model['b_simple_predicted']:.0f} (to target)")
        if model["b_simple_init"]:
            ax.axvline(model["b_simple_init"], color="C4", ls="-.",
                       label=f"B_simple at init = {model['b_simple_init']:.0f}")
    for ax in (ax1, ax2, ax3):
        if ok:
            ax.set_xscale("log")
            ax.set_yscale("log")
            _plain_log_axis(ax.xaxis, B if ax is not ax1 else None)
            _plain_log_axis(ax.yaxis)
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
        else:
            ax.text(0.5, 0.5, "no batch size reached the target", ha="center", transform=ax.transAxes)
        ax.grid(True, which="both", alpha=0.3)
    h = record["header"]["settings"]
    fig.suptitle(f"{'-'.join(map(str, record['sizes']))} on {os.path.basename(str(h['data']))}: "
                 f"test accuracy {h['target']}, lr {'tuned' if h['lr_scaling'] is None else h['lr_scaling']}, "
                 f"momentum {h['momentum']}, {len(h['seeds'])} seeds", fontsize=9)
    return fig
