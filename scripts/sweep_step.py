"""The batch-size sweep's step mode (scripts/sweep_batch_sizes.py --mode step): one training
step of gpumlp, of the floor and of PyTorch at every batch size (scripts/steptiming.py)."""
import os
import statistics
import sys

from steptiming import Contenders, count_kernels
from sweep_output import print_table

from gpumlp.flops import step_flops

BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
SIZES = [784, 1024, 1024, 10]        # the benchmark's wide net (MNIST-shaped)
FULL = {"batch_sizes": BATCH_SIZES, "rounds": 10}
QUICK = {"batch_sizes": [32, 256], "rounds": 3}


def step_sweep(ctx, a):
    """Every batch size of ``a.batch_sizes``: the record with its table and raw timings."""
    from tqdm.auto import tqdm
    sizes = a.sizes or [SIZES[0], *(a.hidden or SIZES[1:-1]), SIZES[-1]]
    header = ctx.header(mode="step", sizes=sizes, rounds=a.rounds, warmup=a.warmup, batch_sizes=a.batch_sizes,
                        quick=a.quick)
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
