"""Batch-size sweeps: what a training step costs at each batch size (--mode step), and
how the batch size changes training (--mode train).

--mode step (the default) times one training step (forward, softmax cross-entropy,
backward, SGD with momentum) of gpumlp, of the floor (the step's GEMMs on
preallocated outputs plus one in-place update) and of PyTorch when it is installed,
on the same device, dtype and threads, warmed up and interleaved round after round
(scripts/steptiming.py).  --noise-scale also prices the noise-scale measurement:
gpumlp's step without and with it, in alternating blocks of consecutive steps on
the same net, as a training loop runs them.

--mode train trains on the data (the embedded digits, or --data F.npz) at every
batch size until a target test accuracy, scoring the test split every --eval-every
training examples.  Each batch size gets its learning rate from --lr-grid (tuned:
the one with the fewest median steps to the target over the seeds; the default) or
from a rule, --lr-scaling none|linear|sqrt relative to --base-batch-size, with an
optional warm-up.  Every run measures the gradient noise scale B_simple.  From the
steps to target it fits S(B) = S_min + E_min/B and reports B_crit = E_min/S_min
beside B_simple (McCandlish et al. 2018).

Both write DIR/sweep.csv, DIR/sweep.json (command, date, machine, device, versions,
every raw timing, or every run with the test-score traces of the runs in the
table) and DIR/sweep.png (with matplotlib; without it the sweep
says so and writes the rest).  Train mode also writes DIR/runs.csv, one row per run.

  python scripts/sweep_batch_sizes.py --device cpu --batch-sizes 32,256 --out DIR   # quick check
  python scripts/sweep_batch_sizes.py --mode train --out DIR
  python scripts/sweep_batch_sizes.py --replot DIR/sweep.json                      # the plot again
It measures and prints; it never asserts a timing.
"""
import argparse
import csv
import json
import math
import os
import re
import signal
import statistics
import sys
from pathlib import Path

from steptiming import Contenders, Context, count_kernels, step_flops

from gpumlp import DeviceUnavailableError

STEP_BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
TRAIN_BATCH_SIZES = [8, 16, 32, 64, 128, 256, 512, 1024]
STEP_SIZES = [784, 1024, 1024, 10]        # the benchmark's wide net (MNIST-shaped)
TRAIN_HIDDEN = [256]                      # gpumlp train's default net on the data


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


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", choices=["step", "train"], default="step")
    p.add_argument("--batch-sizes", type=int_list, default=None,
                   help=f"default: step {','.join(map(str, STEP_BATCH_SIZES))}; "
                        f"train {','.join(map(str, TRAIN_BATCH_SIZES))}")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    net = p.add_mutually_exclusive_group()
    net.add_argument("--sizes", type=int_list, default=None,
                     help="every layer width, d0,...,dL (default: step 784,1024,1024,10; "
                          "train the data's d0, --hidden, its classes)")
    net.add_argument("--hidden", type=int_list, default=None,
                     help="hidden widths between the input and output widths (default: step 1024,1024; train 256)")
    p.add_argument("--seed", type=int, default=0, help="data and weights (step); the first seed (train)")
    p.add_argument("--threads", type=positive(int), default=1, help="BLAS and torch threads")
    p.add_argument("--out", metavar="DIR", default=None, help="where the files go (default sweep-MODE)")
    p.add_argument("--replot", metavar="SWEEP.json", default=None,
                   help="only draw the plot of an earlier sweep's JSON, beside it (e.g. one run where "
                        "matplotlib was missing)")
    s = p.add_argument_group("--mode step")
    s.add_argument("--rounds", type=positive(int), default=10, help="timed interleaved rounds per batch size")
    s.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    s.add_argument("--tf32", action="store_true", help="allow TF32 GEMMs on the GPU (both libraries)")
    s.add_argument("--noise-scale", action="store_true",
                   help="also time gpumlp's step with the noise-scale measurement (blocks of consecutive steps)")
    t = p.add_argument_group("--mode train")
    t.add_argument("--data", metavar="FILE.npz", help="X (d0 × N) and y; default: the embedded digits")
    t.add_argument("--seeds", type=positive(int), default=5, help="runs per batch size and lr: seeds SEED, SEED+1, ...")
    t.add_argument("--target", type=float, default=0.96, help="the test accuracy to reach")
    t.add_argument("--max-epochs", type=positive(int), default=50, help="the budget of one run")
    t.add_argument("--eval-every", type=positive(int), default=64, help="score the test split every this many examples")
    t.add_argument("--lr-grid", type=float_list, default=[0.05, 0.1, 0.2, 0.5, 1.0, 2.0],
                   help="learning rates tried at every batch size (the tuned default)")
    t.add_argument("--lr-scaling", choices=["none", "linear", "sqrt"], default=None,
                   help="instead of tuning, lr = --base-lr scaled from --base-batch-size by this rule")
    t.add_argument("--base-lr", type=positive(float), default=0.3, help="the rule's lr at --base-batch-size")
    t.add_argument("--base-batch-size", type=positive(int), default=32)
    t.add_argument("--warmup-epochs", type=float, default=0.0,
                   help="ramp the lr up linearly over this many epochs (0: no warm-up)")
    t.add_argument("--momentum", type=float, default=0.0,
                   help="SGD momentum (default 0: plain SGD, the setting of the noise-scale model)")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--loss", choices=["ce", "hinge", "mse"], default="ce")
    t.add_argument("--micro-batch", type=positive(int), default=None,
                   help="compute each batch in chunks of at most this many columns (the same steps)")
    t.add_argument("--workers", type=positive(int), default=None,
                   help="fan the runs out over this many mpi4py.futures workers (their results merge into "
                        "the same files); step mode is never fanned out")
    t.add_argument("--test-fraction", type=float, default=0.2)
    return p


def _interrupted(signum, frame):
    raise KeyboardInterrupt       # a timeout's SIGTERM, like Ctrl-C: write what was measured


def main(argv=None):
    a = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    if a.replot:
        try:
            with open(a.replot) as f:
                record = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"sweep: --replot {a.replot}: {e}")
        path = Path(a.replot).with_suffix(".png")
        why_not = plot(record, path)
        print(f"no plot: {why_not}" if why_not else f"wrote {path}")
        return 1 if why_not else 0
    if a.mode == "train" and not 0 < a.target <= 1:
        sys.exit(f"sweep: --target must be a test accuracy in (0, 1]; got {a.target}")
    if a.mode == "step" and a.workers:
        sys.exit("sweep: step timings are never fanned out over workers (concurrent processes corrupt "
                 "interleaved timings); --workers is for --mode train")
    if a.warmup_epochs < 0 or not 0 <= a.momentum < 1 or a.weight_decay < 0:
        sys.exit("sweep: --warmup-epochs and --weight-decay must be >= 0 and --momentum in [0, 1)")
    a.batch_sizes = a.batch_sizes or (STEP_BATCH_SIZES if a.mode == "step" else TRAIN_BATCH_SIZES)
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
        record = step_sweep(ctx, a) if a.mode == "step" else train_sweep(ctx, a)
    except ValueError as e:                 # gpumlp's checks: a bad --test-fraction, data, ...
        sys.exit(f"sweep: {e}")
    write_csv(out / "sweep.csv", record["table"])
    if a.mode == "train":
        write_csv(out / "runs.csv", [{k: v for k, v in r.items() if k != "evaluations"} for r in record["runs"]])
    # the JSON: the header and tables readable, the long lists of numbers one per line no more
    text = json.dumps(record, indent=1)
    text = re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    with open(out / "sweep.json", "w") as f:
        f.write(text)
    why_not = plot(record, out / "sweep.png")
    written = ["sweep.csv", "sweep.json"] + (["runs.csv"] if a.mode == "train" else [])
    if why_not:
        print(f"no plot: {why_not}")
    else:
        written.append("sweep.png")
    print(f"wrote {', '.join(str(out / w) for w in written)}")
    return 0


# -- step mode ----------------------------------------------------------------------------

def net_sizes(a, d0, k, default_hidden):
    return a.sizes or [d0, *(a.hidden or default_hidden), k]


def step_sweep(ctx, a):
    from tqdm.auto import tqdm
    sizes = net_sizes(a, STEP_SIZES[0], STEP_SIZES[-1], STEP_SIZES[1:-1])
    header = ctx.header(mode="step", sizes=sizes, rounds=a.rounds, warmup=a.warmup, batch_sizes=a.batch_sizes)
    kernels = count_kernels(ctx, sizes, min(a.batch_sizes))
    active = kernels["fused" if ctx.backend.fused else "twins"]
    rows, raw_all = [], {}
    try:
        for N in tqdm(a.batch_sizes, desc="batch sizes", unit="N", leave=False, disable=None):
            rows.append(step_row(ctx, a, sizes, N, kernels, active, raw_all))
    except KeyboardInterrupt:
        header["interrupted"] = f"after {len(rows)} of {len(a.batch_sizes)} batch sizes"
        print(f"interrupted after {len(rows)} of {len(a.batch_sizes)} batch sizes: writing those", file=sys.stderr)
    header["load_average_after"] = os.getloadavg()
    print_table(rows, [("batch_size", "N", "d"), ("gpumlp_ms_min", "gpumlp ms", ".3f"),
                       ("floor_ms_min", "floor ms", ".3f"), ("torch_ms_min", "torch ms", ".3f"),
                       ("gpumlp_over_floor", "g/floor", ".2f"), ("gpumlp_over_torch", "g/torch", ".2f"),
                       ("samples_per_s", "samples/s", ",.0f"), ("gflops", "GFLOP/s", ".1f"),
                       ("peak_memory_bytes", "peak MiB", "mib"), ("kernels_per_step", "kernels", "d")]
                + ([("noise_scale_overhead", "noise +%", "pct")] if a.noise_scale else []))
    print(f"{ctx.device_name()}, {ctx.backend.name}, {a.dtype}, {a.threads} thread(s); net "
          f"{'-'.join(map(str, sizes))}; min over {a.rounds} interleaved rounds; kernels per step "
          f"{'compiled' if ctx.backend.fused else 'twins'} ({kernels['fused']['other']} fused, "
          f"{kernels['twins']['other']} as twins) + {active['gemm']} GEMM/GEMV")
    return {"mode": "step", "header": header, "sizes": sizes, "kernels": kernels, "table": rows, "raw_ms": raw_all}


def step_row(ctx, a, sizes, N, kernels, active, raw_all):
    """The table's row for batch size N (its raw times go into raw_all[N])."""
    contenders = Contenders(ctx, sizes, N, noise_scale=a.noise_scale)
    raw = contenders.rounds(a.warmup, a.rounds)
    blocks = contenders.noise_blocks() if a.noise_scale else {}
    mem = contenders.memory()
    raw_all[N] = {k: [1e3 * t for t in v] for k, v in raw.items()}
    if blocks:
        raw_all[N]["noise_scale_blocks"] = {k: [1e3 * t for t in v] for k, v in blocks.items()}
    best = {k: 1e3 * min(v) for k, v in raw.items()}
    median = {k: 1e3 * statistics.median(v) for k, v in raw.items()}
    g = best["gpumlp"]
    row = {"batch_size": N}
    for name in ("gpumlp", "floor", "torch"):
        row[f"{name}_ms_min"], row[f"{name}_ms_median"] = best.get(name), median.get(name)
    row.update(samples_per_s=N / (g / 1e3), gflops=step_flops(sizes, N) / (g / 1e3) / 1e9,
               gpumlp_over_floor=g / best["floor"],
               gpumlp_over_torch=g / best["torch"] if "torch" in best else None,
               peak_memory_bytes=mem["peak_bytes"], peak_memory_over_model=mem["ratio"],
               kernels_per_step=active["other"], gemms_per_step=active["gemm"],
               kernels_per_step_fused=kernels["fused"]["other"], kernels_per_step_twins=kernels["twins"]["other"])
    if blocks:
        plain, noisy = blocks["gpumlp"], blocks["gpumlp+noise"]
        row["noise_scale_overhead"] = min(noisy) / min(plain) - 1
        row["noise_scale_overhead_median"] = statistics.median(noisy) / statistics.median(plain) - 1
    return row


# -- train mode ---------------------------------------------------------------------------

def load_data(a):
    from gpumlp.sweep import load_split
    try:
        return load_split(os.path.abspath(a.data) if a.data else None, a.test_fraction)
    except ValueError as e:
        sys.exit(f"sweep: {e}")


def lr_choices(a, B):
    """The learning rates a batch size is run with: the grid, or the rule's one."""
    from gpumlp.sweep import scaled_lr
    if a.lr_scaling is None:
        return a.lr_grid, "tuned"
    return [scaled_lr(a.base_lr, B, a.base_batch_size, a.lr_scaling)], a.lr_scaling


def train_sweep(ctx, a):
    from tqdm.auto import tqdm

    from gpumlp.sweep import fit_critical_batch, run_job
    Xtr, ytr, Xte, yte, K, source = load_data(a)
    sizes = net_sizes(a, Xtr.shape[0], K, TRAIN_HIDDEN)
    if sizes[0] != Xtr.shape[0] or sizes[-1] != K:
        sys.exit(f"sweep: --sizes must start with the data's d0 = {Xtr.shape[0]} and end with its {K} classes")
    D = Xtr.shape[1]
    seeds = list(range(a.seed, a.seed + a.seeds))
    header = ctx.header(mode="train", sizes=sizes, data=source, train_samples=D, test_samples=Xte.shape[1],
                        batch_sizes=a.batch_sizes, seeds=seeds, target=a.target, max_epochs=a.max_epochs,
                        eval_every=a.eval_every, lr_grid=a.lr_grid, lr_scaling=a.lr_scaling, base_lr=a.base_lr,
                        base_batch_size=a.base_batch_size, warmup_epochs=a.warmup_epochs, momentum=a.momentum,
                        weight_decay=a.weight_decay, loss=a.loss)
    header["settings"].pop("lr"), header["settings"].pop("momentum")     # the step timer's, not used here
    header["settings"]["momentum"] = a.momentum
    jobs = [(B, lr, seed) for B in a.batch_sizes for lr in lr_choices(a, B)[0] for seed in seeds]
    common = {"data": os.path.abspath(a.data) if a.data else None, "test_fraction": a.test_fraction, "sizes": sizes,
              "dtype": a.dtype, "device": a.device, "threads": a.threads, "momentum": a.momentum,
              "weight_decay": a.weight_decay, "target": a.target, "max_epochs": a.max_epochs,
              "eval_every": a.eval_every, "loss": a.loss, "warmup_samples": a.warmup_epochs * D,
              "micro_batch": a.micro_batch}
    specs = [{**common, "batch_size": B, "lr": lr, "seed": seed} for B, lr, seed in jobs]
    runs = []
    try:
        if a.workers:
            header["workers"] = a.workers
            runs = fan_out(specs, a.workers, runs)
        else:
            for spec in tqdm(specs, desc="runs", unit="run", leave=False, disable=None):
                runs.append(run_job(spec))
    except KeyboardInterrupt:
        header["interrupted"] = f"after {len(runs)} of {len(jobs)} runs"
        print(f"interrupted after {len(runs)} of {len(jobs)} runs: writing those", file=sys.stderr)
    table = summarize(a, runs, seeds)
    chosen = {(r["batch_size"], r["lr"]) for r in table}
    for r in runs:          # the JSON keeps the test-score traces of the runs in the table, as columns
        trace = r.pop("evaluations")
        if (r["batch_size"], r["lr"]) in chosen:
            r["evaluations"] = {k: [e[k] for e in trace] for k in trace[0]}
    reached = [r for r in table if r["steps_to_target"] is not None]
    fit = fit_critical_batch([r["batch_size"] for r in reached], [r["steps_to_target"] for r in reached])
    predicted = [r["b_simple"] for r in table if r["b_simple"] is not None]
    start = [r["b_simple_init"] for r in table if r["b_simple_init"] is not None]
    model = {"fit": fit, "b_crit_fitted": fit["b_crit"],
             "b_simple_predicted": statistics.median(predicted) if predicted else None,
             "b_simple_predicted_range": [min(predicted), max(predicted)] if predicted else None,
             "b_simple_init": statistics.median(start) if start else None,
             "how": "b_crit_fitted = E_min/S_min of S(B) = S_min + E_min/B fitted to the median steps to target; "
                    "b_simple_predicted = the median over batch sizes of B_simple averaged over each run up to "
                    "the target (tr(Σ) and |G|² averaged apart), over the runs that reached it; b_simple_init = the "
                    "median of the same at the starting parameters (one pass without updates)"}
    header["load_average_after"] = os.getloadavg()
    print_table(table, [("batch_size", "B", "d"), ("lr", "lr", "g"), ("reached", "reached", "s"),
                        ("final_test_accuracy", "final acc", ".4f"), ("steps_to_target", "steps", "g"),
                        ("steps_spread", "steps min-max", "s"), ("samples_to_target", "samples", "g"),
                        ("epochs_to_target", "epochs", ".2f"), ("seconds_to_target", "seconds", ".3f"),
                        ("b_simple", "B_simple", ".0f"), ("b_simple_init", "at init", ".0f")])
    fmt = lambda v: "-" if v is None else f"{v:.0f}"      # noqa: E731
    print(f"net {'-'.join(map(str, sizes))} on {source} ({D} training samples), target test accuracy "
          f"{a.target}, {len(seeds)} seeds, lr {'tuned from ' + str(a.lr_grid) if a.lr_scaling is None else a.lr_scaling}")
    print(f"critical batch size: fitted B_crit = E_min/S_min = {fmt(fit['b_crit'])}"
          + (f" (S_min {fit['s_min']:.1f} steps, E_min {fit['e_min']:.0f} samples, rms residual "
             f"{fit['rms_relative_residual']:.0%})" if fit["b_crit"] else f" ({fit.get('why')})")
          + f"; predicted B_simple = {fmt(model['b_simple_predicted'])} averaged to the target "
            f"(range {' to '.join(fmt(v) for v in model['b_simple_predicted_range'] or [None])}), "
            f"{fmt(model['b_simple_init'])} at the starting parameters")
    return {"mode": "train", "header": header, "sizes": sizes, "model": model, "table": table, "runs": runs}


def fan_out(specs, workers, runs):
    """The runs on ``workers`` processes of mpi4py.futures (spawned here, or the workers of
    `mpiexec -n W+1 python -m mpi4py.futures ...`), in the order of ``specs``.  On an
    interrupt the finished runs are left in ``runs`` (in that order) and the rest dropped."""
    try:
        from mpi4py.futures import MPIPoolExecutor
    except ImportError as e:
        sys.exit(f"sweep: --workers needs mpi4py ({e}); pip install 'gpumlp[mpi]'")
    from concurrent.futures import as_completed

    from gpumlp.sweep import run_job
    pool = MPIPoolExecutor(max_workers=workers)
    futures = {pool.submit(run_job, spec): i for i, spec in enumerate(specs)}
    done = {}
    try:
        for future in as_completed(futures):
            done[futures[future]] = future.result()
    except KeyboardInterrupt:             # keep the finished runs, drop the queued ones
        pool.shutdown(wait=False, cancel_futures=True)
        runs[:] = [done[i] for i in sorted(done)]
        raise
    pool.shutdown()
    return [done[i] for i in range(len(specs))]


def summarize(a, runs, seeds):
    """One row per batch size, at its learning rate: for a grid, the lr with the most seeds
    reaching the target, then the fewest median steps.  Unreached runs count as infinitely
    many steps in the median, and the row says how many reached."""
    table = []
    for B in a.batch_sizes:
        lrs, rule = lr_choices(a, B)
        by_lr = {lr: [r for r in runs if r["batch_size"] == B and r["lr"] == lr] for lr in lrs}
        lrs = [lr for lr in lrs if by_lr[lr]]          # an interrupted sweep lacks some
        if not lrs:
            continue

        def key(lr):
            rs = by_lr[lr]
            steps = [r["steps"] if r["reached"] else math.inf for r in rs]
            return (-sum(r["reached"] for r in rs), statistics.median(steps), lr)
        lr = min(lrs, key=key)
        rs = by_lr[lr]
        ok = [r for r in rs if r["reached"]]

        def med(field):            # over the seeds, an unreached run counting as infinitely many
            m = statistics.median([r[field] if r["reached"] else math.inf for r in rs])
            return m if math.isfinite(m) else None

        def med_all(field):        # over the seeds that reached the target
            values = [r[field] for r in ok if r.get(field) is not None]
            return statistics.median(values) if values else None
        steps = [r["steps"] for r in ok]
        table.append({
            "batch_size": B, "lr": lr, "lr_rule": rule, "reached": f"{len(ok)}/{len(rs)}",
            "diverged": sum(r["diverged"] for r in rs),
            "final_test_accuracy": statistics.median(r["final_test_accuracy"] for r in rs),
            "steps_to_target": med("steps"), "steps_spread": f"{min(steps)}-{max(steps)}" if steps else "-",
            "samples_to_target": med("samples"), "epochs_to_target": med("epochs"),
            "seconds_to_target": med("seconds"),
            "b_simple": med_all("b_simple_to_target"), "b_simple_init": med_all("b_simple_init"),
            "seeds": len(rs)})
    return table


# -- output -------------------------------------------------------------------------------

def write_csv(path, rows):
    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})


def print_table(rows, columns):
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
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


def plot(record, path):
    """Draw the sweep into ``path``; returns why not, or None."""
    if not record["table"]:
        return "nothing was measured"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib is not installed ({e}); pip install 'gpumlp[plot]'"
    if record["mode"] == "step":
        fig = _plot_step(plt, record)
    else:
        fig = _plot_train(plt, record)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None


def _plot_step(plt, record):
    rows, h = record["table"], record["header"]
    B = [r["batch_size"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label, style in (("gpumlp", "gpumlp", "o-"), ("torch", "PyTorch", "s--"),
                              ("floor", "floor (GEMMs + update)", "k.-")):
        ms = [r.get(f"{key}_ms_min") for r in rows]
        if any(v is None for v in ms):
            continue
        ax1.plot(B, [1e3 * m / n for m, n in zip(ms, B)], style, label=label)
        ax2.plot(B, [n / (m / 1e3) for m, n in zip(ms, B)], style, label=label)
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
    from matplotlib.ticker import NullFormatter
    rows, model = record["table"], record["model"]
    fit = model["fit"]
    ok = [r for r in rows if r["steps_to_target"] is not None]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.2))
    B = np.array([r["batch_size"] for r in ok], float)
    S = np.array([r["steps_to_target"] for r in ok], float)
    E = np.array([r["samples_to_target"] for r in ok], float)
    runs = [r for r in record["runs"] if r["reached"]]
    chosen = {(r["batch_size"], r["lr"]) for r in rows}
    per_seed = [r for r in runs if (r["batch_size"], r["lr"]) in chosen]
    ax1.plot([r["samples"] for r in per_seed], [r["steps"] for r in per_seed], ".", color="0.6", label="each seed")
    ax1.plot(E, S, "o", label="median over seeds")
    for b, e, s in zip(B, E, S):
        ax1.annotate(f"{b:.0f}", (e, s), textcoords="offset points", xytext=(4, 4), fontsize=7)
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
    ax3.plot(B, [r["seconds_to_target"] for r in ok], "s-", color="C2")
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
            ax.axvline(model["b_simple_init"], color="C4", ls="-.", label=f"B_simple at init = {model['b_simple_init']:.0f}")
    for ax in (ax1, ax2, ax3):
        if ok:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no batch size reached the target", ha="center", transform=ax.transAxes)
        ax.grid(True, which="both", alpha=0.3)
    h = record["header"]["settings"]
    fig.suptitle(f"{'-'.join(map(str, record['sizes']))} on {os.path.basename(str(h['data']))}: "
                 f"test accuracy {h['target']}, lr {'tuned' if h['lr_scaling'] is None else h['lr_scaling']}, "
                 f"momentum {h['momentum']}, {len(h['seeds'])} seeds", fontsize=9)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    sys.exit(main())
