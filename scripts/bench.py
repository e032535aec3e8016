"""Side-by-side timing of one training step: gpumlp vs PyTorch vs the floor.

One step is forward, softmax cross-entropy, backward and SGD with momentum 0.9, on
the same data, layer sizes and starting weights:

  gpumlp   the step ``gpumlp train`` runs (``gpumlp.engine.Trainer.step``: no checks, no host reads);
  torch    nn.Linear + ReLU, F.cross_entropy and torch.optim.SGD on the same device
           (skipped when PyTorch is absent or cannot use the device);
  floor    the step's GEMMs on preallocated outputs (W_k Z_{k-1}, W_k^T Δ_k, Δ_k Z_{k-1}^T, and
           the GEMVs Δ_k 1) plus one in-place update of the parameters (θ −= lr·g): the work
           no step can skip.

The three run interleaved, round after round, so machine noise hits all alike.  The
minimum over the rounds is the least noisy estimate of the code's own cost and the
ratios use it; the median and the spread (max/min) are reported beside it, with the
load average.  BLAS runs 1 thread unless --threads says otherwise (threadpoolctl
for NumPy's BLAS, torch.set_num_threads).  On a GPU every timed region is bracketed
by synchronisations, and TF32 is off unless --tf32.

Besides time, for each net: the device kernels of one step (gpumlp's counting
backend, GEMMs apart, as CuPy would launch them with the compiled kernels and with
the twins), the buffers a steady step allocates, and the peak memory during steps
against parameters + gradients + momentum + S, Z, Δ of the batch.

  python scripts/bench.py                         # both nets, CPU, 1 thread
  python scripts/bench.py --device gpu --json bench-gpu.json
It measures and prints; it never asserts timings.
"""
import argparse
import json
import os
import statistics
import sys

from steptiming import Contenders, Context, count_kernels, oracle_error

from gpumlp import DeviceUnavailableError


def int_list(text):
    return [int(v) for v in text.split(",") if v.strip()]


def net_list(text):
    return [int_list(net) for net in text.split(";") if net.strip()]


p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--nets", type=net_list, default=[[784, 1024, 1024, 10], [64, 256, 10]],
               help="layer widths, nets separated by ';' (default '784,1024,1024,10;64,256,10')")
p.add_argument("--batch-sizes", type=int_list, default=None,
               help="default: 64,256,1024,4096 for the first net, 32,256,1024 for the others")
p.add_argument("--rounds", type=int, default=20, help="timed interleaved rounds (default 20)")
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
p.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
p.add_argument("--tf32", action="store_true", help="allow TF32 GEMMs on the GPU (both libraries)")
p.add_argument("--json", metavar="FILE", help="also write everything, raw times included, here")
args = p.parse_args()

try:
    ctx = Context(args.device, args.dtype, args.threads, args.tf32)
except DeviceUnavailableError as e:
    sys.exit(f"bench.py: {e}")
for note in ctx.notes:
    print(f"note: {note}")
backend = ctx.backend
header = ctx.header(rounds=args.rounds, warmup=args.warmup)
print(f"{header['date']}  {header['hostname']}  {header['device']}  [{backend.name}, {args.dtype}, "
      f"fused kernels {'on' if backend.fused else 'off'}, TF32 {'on' if args.tf32 else 'off'}]")
print("versions: " + ", ".join(f"{k} {v}" for k, v in header["versions"].items() if v))
print(f"threads {args.threads}: " + "; ".join(header["threadpools"]) + f"; torch {header['torch_threads']}")
print(f"min over {args.rounds} interleaved rounds after {args.warmup} warm-up; load average "
      + " ".join(f"{v:.2f}" for v in header["load_average_before"]))

nets = []
row = "{:>6} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10} {:>9}"
for i, sizes in enumerate(args.nets):
    batch_sizes = args.batch_sizes or ([64, 256, 1024, 4096] if i == 0 else [32, 256, 1024])
    kernels_per_step = count_kernels(ctx, sizes, min(batch_sizes))
    fused, twins = kernels_per_step["fused"], kernels_per_step["twins"]
    error = oracle_error(ctx, sizes, 256)
    print(f"\none step's gradients vs the float64 CPU oracle (N=256): relative error {error:.2e}")
    print(f"net {'-'.join(map(str, sizes))}: kernels per step {fused['other']} fused + {fused['gemm']} GEMM "
          f"({', '.join(fused['names'])}); with the twins {twins['other']} + {twins['gemm']}; "
          f"buffers allocated per step: {len(fused['allocations']) + len(twins['allocations'])}")
    print(row.format("N", "gpumlp ms", "torch ms", "floor ms", "g/torch", "g/floor", "spread", "samples/s",
                     "mem ratio"))
    results = []
    for N in batch_sizes:
        contenders = Contenders(ctx, sizes, N)
        raw = contenders.rounds(args.warmup, args.rounds)      # interleaved: gpumlp, torch, floor, ...
        mem = contenders.memory()
        best = {k: 1e3 * min(v) for k, v in raw.items()}
        median = {k: 1e3 * statistics.median(v) for k, v in raw.items()}
        g, t, f = best["gpumlp"], best.get("torch"), best["floor"]
        res = {"N": N, "min_ms": best, "median_ms": median,
               "spread": {k: max(v) / min(v) for k, v in raw.items()},
               "gpumlp_over_torch": g / t if t else None, "gpumlp_over_floor": g / f,
               "samples_per_s": N / (g / 1e3), "memory": mem,
               "raw_ms": {k: [1e3 * x for x in v] for k, v in raw.items()}}
        results.append(res)
        fmt = lambda v, spec: "-" if v is None else format(v, spec)   # noqa: E731
        print(row.format(N, fmt(g, ".3f"), fmt(t, ".3f"), fmt(f, ".3f"), fmt(res["gpumlp_over_torch"], ".2f"),
                         fmt(res["gpumlp_over_floor"], ".2f"), fmt(res["spread"]["gpumlp"], ".2f"),
                         fmt(res["samples_per_s"], ",.0f"), fmt(mem["ratio"], ".3f")))
        print(row.format("", "median", fmt(median["gpumlp"], ".3f"), fmt(median.get("torch"), ".3f"),
                         fmt(median["floor"], ".3f"), "", "", "", ""))
    nets.append({"sizes": sizes, "kernels_per_step": {"gemm": fused["gemm"], "other": fused["other"]},
                 "kernels": kernels_per_step, "gradient_error_vs_float64_oracle": error, "results": results})

header["load_average_after"] = os.getloadavg()
print("\nload average after: " + " ".join(f"{v:.2f}" for v in header["load_average_after"]))
print("memory ratio: peak during steps / (params + grads + momentum + S, Z, Δ of the batch); "
      "the training data on the device is apart")
if args.json:
    with open(args.json, "w") as fh:
        json.dump({"header": header, "nets": nets}, fh, indent=2)
    print(f"wrote {args.json}")
