"""The batch-size sweep's train mode (scripts/sweep_batch_sizes.py --mode train): training to a
target test accuracy at every batch size, learning rate and seed (gpumlp.sweep.run_job), the
table of the best learning rate per batch size, and the critical batch size fitted from it."""
import math
import os
import statistics
import sys

from sweep_output import print_table

BATCH_SIZES = [8, 16, 32, 64, 128, 256, 512, 1024]
HIDDEN = [256]                      # gpumlp train's default net on the data
LR_GRID = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
FULL = {"batch_sizes": BATCH_SIZES, "seeds": 5, "lr_grid": LR_GRID}
QUICK = {"batch_sizes": [16, 64, 256, 1024], "seeds": 2, "lr_grid": [0.1, 0.3, 1.0, 2.0]}
FIT_POINTS = 3                      # the fewest distinct batch sizes S(B) = S_min + E_min/B is fitted to


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
    """Every run of ``a``'s batch sizes × learning rates × seeds: the record with the table,
    the runs and the model (the fit and the noise scale)."""
    from tqdm.auto import tqdm

    from gpumlp.sweep import fit_critical_batch, run_job
    Xtr, ytr, Xte, yte, K, source = load_data(a)
    sizes = a.sizes or [Xtr.shape[0], *(a.hidden or HIDDEN), K]
    if sizes[0] != Xtr.shape[0] or sizes[-1] != K:
        sys.exit(f"sweep: --sizes must start with the data's d0 = {Xtr.shape[0]} and end with its {K} classes")
    D = Xtr.shape[1]
    seeds = list(range(a.seed, a.seed + a.seeds))
    header = ctx.header(mode="train", sizes=sizes, data=source, train_samples=D, test_samples=Xte.shape[1],
                        batch_sizes=a.batch_sizes, seeds=seeds, target=a.target, max_epochs=a.max_epochs,
                        eval_every=a.eval_every, lr_grid=a.lr_grid, lr_scaling=a.lr_scaling, base_lr=a.base_lr,
                        base_batch_size=a.base_batch_size, warmup_epochs=a.warmup_epochs, momentum=a.momentum,
                        weight_decay=a.weight_decay, loss=a.loss, quick=a.quick)
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
    table = summarize(a, runs)
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
             "b_crit_not_fitted": None if fit["b_crit"] else not_fitted(fit, len(a.batch_sizes), len(reached)),
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
    lr = "tuned from " + ",".join(f"{v:g}" for v in a.lr_grid) if a.lr_scaling is None else a.lr_scaling
    print(f"net {'-'.join(map(str, sizes))} on {source} ({D} training samples), target test accuracy "
          f"{a.target}, {len(seeds)} seeds, lr {lr}")
    print(summary_line(fit, model))
    return {"mode": "train", "header": header, "sizes": sizes, "model": model, "table": table, "runs": runs}


def not_fitted(fit, swept, reached):
    """Why B_crit was not fitted, in the sweep's terms: what the fit needs and what it got."""
    if reached >= FIT_POINTS:
        return fit["why"]
    need = (f"fitting S(B) = S_min + E_min/B needs at least {FIT_POINTS} distinct batch sizes that reach "
            f"the target")
    if swept < FIT_POINTS:
        return (f"not fitted: {swept} batch size{'s' if swept != 1 else ''} swept, fewer than {FIT_POINTS}: "
                f"{need} ({reached} of the {swept} did); give --batch-sizes at least {FIT_POINTS}")
    return f"not fitted: {reached} of the {swept} batch sizes swept reached the target, fewer than {FIT_POINTS}: {need}"


def summary_line(fit, model):
    def fmt(v):
        return "-" if v is None else f"{v:.0f}"
    if fit["b_crit"]:
        detail = (f" (S_min {fit['s_min']:.1f} steps, E_min {fit['e_min']:.0f} samples, rms residual "
                  f"{fit['rms_relative_residual']:.0%})")
    else:
        detail = f" ({model['b_crit_not_fitted']})"
    span = " to ".join(fmt(v) for v in model["b_simple_predicted_range"] or [None])
    return (f"critical batch size: fitted B_crit = E_min/S_min = {fmt(fit['b_crit'])}{detail}; predicted "
            f"B_simple = {fmt(model['b_simple_predicted'])} averaged to the target (range {span}), "
            f"{fmt(model['b_simple_init'])} at the starting parameters")


def fan_out(specs, workers, runs):
    """The runs on ``workers`` processes of mpi4py.futures (spawned here, or the workers of
    `mpiexec -n W+1 python -m mpi4py.futures ...`), in the order of ``specs``.  On an
    interrupt the finished runs are left in ``runs`` (in that order) and the rest dropped."""
    try:
        from mpi4py.futures import MPIPoolExecutor
    except ImportError as e:
        sys.exit(f"sweep: --workers needs mpi4py ({e}); pip install -e '.[mpi]' in the gpumlp checkout")
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


def summarize(a, runs):
    """One row per batch size, at its learning rate: for a grid, the lr with the most seeds
    reaching the target, then the fewest median steps.  Unreached runs count as infinitely
    many steps in the median, and the row says how many reached."""
    table = []
    for B in a.batch_sizes:
        lrs, rule = lr_choices(a, B)
        by_lr = {lr: [r for r in runs if r["batch_size"] == B and r["lr"] == lr] for lr in lrs}
        lrs = [lr for lr in lrs if by_lr[lr]]          # an interrupted sweep lacks some
        if lrs:
            lr = min(lrs, key=lambda lr, by_lr=by_lr: _rank(by_lr[lr], lr))
            table.append(_row(B, lr, rule, by_lr[lr]))
    return table


def _rank(rs, lr):
    """The order of a batch size's learning rates: most seeds reaching, fewest median steps, smallest lr."""
    steps = [r["steps"] if r["reached"] else math.inf for r in rs]
    return (-sum(r["reached"] for r in rs), statistics.median(steps), lr)


def _row(B, lr, rule, rs):
    """The table's row for batch size B at learning rate lr, from its runs ``rs`` (one per seed)."""
    ok = [r for r in rs if r["reached"]]

    def med(field):            # over the seeds, an unreached run counting as infinitely many
        m = statistics.median([r[field] if r["reached"] else math.inf for r in rs])
        return m if math.isfinite(m) else None

    def med_reached(field):    # over the seeds that reached the target
        values = [r[field] for r in ok if r.get(field) is not None]
        return statistics.median(values) if values else None
    steps = [r["steps"] for r in ok]
    return {
        "batch_size": B, "lr": lr, "lr_rule": rule, "reached": f"{len(ok)}/{len(rs)}",
        "diverged": sum(r["diverged"] for r in rs),
        "final_test_accuracy": statistics.median(r["final_test_accuracy"] for r in rs),
        "steps_to_target": med("steps"), "steps_spread": f"{min(steps)}-{max(steps)}" if steps else "-",
        "samples_to_target": med("samples"), "epochs_to_target": med("epochs"),
        "seconds_to_target": med("seconds"),
        "b_simple": med_reached("b_simple_to_target"), "b_simple_init": med_reached("b_simple_init"),
        "seeds": len(rs)}
