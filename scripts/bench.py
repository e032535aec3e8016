"""Side-by-side timing of one training step: gpumlp vs PyTorch vs the floor.

One step is forward, softmax cross-entropy, backward and SGD with momentum 0.9, on
the same data, layer sizes and starting weights:

  gpumlp   the step ``gpumlp train`` runs (``gpumlp.train._step``: no checks, no host reads);
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
import datetime
import json
import os
import platform
import shlex
import socket
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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

os.environ["CUPY_TF32"] = "1" if args.tf32 else "0"      # read when CuPy is imported
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

sys.path[:0] = [str(ROOT), str(ROOT / "tests")]          # the checkout's gpumlp, and its counting backend
import gpumlp  # noqa: E402
from gpumlp.losses import LOSSES  # noqa: E402
from gpumlp.train import _Data, _step  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    torch = None
    print(f"note: PyTorch is not importable ({e}); the torch column is skipped")
if torch is not None and args.device == "gpu" and not torch.cuda.is_available():
    print(f"note: this PyTorch ({torch.__version__}) cannot use CUDA; the torch column is skipped")
    torch = None
if torch is not None:
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
limits = threadpool_limits(limits=args.threads)

LR, MOMENTUM = 0.01, 0.9
try:
    backend = gpumlp.get_backend(args.device)
except gpumlp.DeviceUnavailableError as e:
    sys.exit(f"bench.py: {e}")
xp = backend.xp
sync = backend.synchronize
sync_torch = torch.cuda.synchronize if torch and args.device == "gpu" else (lambda: None)
tdev = "cuda" if args.device == "gpu" else "cpu"


def device_name():
    if args.device == "gpu":
        name = xp.cuda.runtime.getDeviceProperties(0)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name} ({os.cpu_count()} logical CPUs)"


def count_kernels(sizes, n):
    """gpumlp's kernels per step on the counting backend: fused (as with GPUMLP_FUSED=1)
    and twins (CuPy with the switch off), GEMMs apart, and the buffers a step allocates."""
    from counting import TALLY, CountingBackend
    out = {}
    for mode in ("fused", "twins"):
        net = gpumlp.MLP(sizes, dtype=args.dtype, device=CountingBackend(fused=mode == "fused"), seed=0)
        X = np.zeros((sizes[0], n))
        data = _Data(net, X, np.zeros(n, int))
        opt, k = gpumlp.SGD(LR, MOMENTUM), net.backend.kernel(LOSSES["ce"].kernel)
        for _ in range(2):
            TALLY.clear()
            _step(net, data.XT.T, data.y, k, 1.0, opt, data.loss, data.hit)
        out[mode] = {"gemm": len(TALLY.gemm), "other": len(TALLY.other), "names": list(TALLY.other),
                     "allocations": list(TALLY.allocs)}
    return out


def contenders(sizes, N):
    """(name, step, sync) for gpumlp, torch and the floor at batch size N, with their data
    on the device outside the timed region; and the memory figures of gpumlp's step."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((sizes[0], N)).astype(args.dtype)         # d0 × N, one sample per column
    labels = rng.integers(0, sizes[-1], N)
    net = gpumlp.MLP(sizes, activation="relu", dtype=args.dtype, device=backend, seed=0)
    data, opt = _Data(net, X, labels), gpumlp.SGD(LR, MOMENTUM)
    kernel, Z0 = backend.kernel(LOSSES["ce"].kernel), data.XT.T

    def gpumlp_step():
        _step(net, Z0, data.y, kernel, 1.0, opt, data.loss, data.hit)
    steps = [("gpumlp", gpumlp_step, sync)]

    if torch is not None:
        layers, (W0, b0) = [], net.get_params()
        for k, (w, b) in enumerate(zip(W0, b0)):
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():                                   # the same starting weights
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b.ravel()))
            layers += [lin] if k == len(W0) - 1 else [lin, torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers).to(device=tdev, dtype=getattr(torch, args.dtype))
        topt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        Xt = torch.from_numpy(np.ascontiguousarray(X.T)).to(tdev)     # N × d0, torch's layout
        yt = torch.from_numpy(labels).to(tdev)

        def torch_step():
            topt.zero_grad()
            F.cross_entropy(model(Xt), yt).backward()
            topt.step()
        steps.append(("torch", torch_step, sync_torch))

    dt = backend.dtype(args.dtype)

    def rand(*shape):
        return backend.asarray(rng.standard_normal(shape) * 0.1, dt)
    L = len(sizes) - 1
    W = [rand(sizes[k + 1], sizes[k]) for k in range(L)]
    Z = [Z0] + [rand(d, N) for d in sizes[1:-1]]
    S, D, G = ([rand(d, N) for d in sizes[1:]] for _ in range(3))
    dW, db = [xp.empty_like(w) for w in W], [rand(d, 1) for d in sizes[1:]]
    ones = xp.ones((N, 1), dtype=dt)
    theta, grad = rand(net.params.shape[0]), rand(net.params.shape[0])
    scaled = xp.empty_like(grad)

    def floor_step():
        for k in range(L):
            xp.matmul(W[k], Z[k], out=S[k])                 # S_k = W_k Z_{k-1}
            if k > 0:
                xp.matmul(W[k].T, D[k], out=G[k - 1])       # W_k^T Δ_k
            xp.matmul(D[k], Z[k].T, out=dW[k])              # dW_k = Δ_k Z_{k-1}^T
            xp.matmul(D[k], ones, out=db[k])                # db_k = Δ_k 1 (a GEMV)
        xp.multiply(grad, LR, out=scaled)                   # θ −= lr g
        xp.subtract(theta, scaled, out=theta)
    steps.append(("floor", floor_step, sync))

    return steps, net, data, opt, gpumlp_step


class _PoolPeak:
    """A CuPy memory hook that follows the bytes the pool hands out, and their peak."""

    def __init__(self, cupy):
        hook = self

        class Hook(cupy.cuda.MemoryHook):
            name = "gpumlp-peak"

            def malloc_postprocess(self, **kw):        # CuPy calls hooks with keywords
                hook.now += kw["mem_size"]
                hook.peak = max(hook.peak, hook.now)

            def free_postprocess(self, **kw):
                hook.now -= kw["mem_size"]
        self.hook, self.now, self.peak = Hook(), 0, 0


def memory(net, data, opt, step, N):
    """Peak memory of gpumlp's steps (NumPy: tracemalloc; CuPy: a memory hook on the pool)
    against params + grads + momentum + S, Z, Δ of one batch; the data on the device apart.
    The workspaces and the optimizer's state are dropped first, so the steps measured make
    them again: the twins' scratch and the optimizer's chunk buffer are counted."""
    item = np.dtype(args.dtype).itemsize
    n_params = net.params.shape[0]
    szd = sum(2 * d * N for d in net.sizes[1:]) + sum(d * N for f, d in zip(net.f, net.sizes[1:]) if not f.identity)
    model_bytes = (3 * n_params + szd) * item
    data_bytes = data.XT.nbytes + data.y.nbytes + data.loss.nbytes + data.hit.nbytes   # fit adds a shuffled copy
    net._workspaces.clear()
    net._ws = net.S = net.Z = net.deltas = None          # nothing may keep the old workspace alive
    opt._state.clear()
    if args.device == "gpu":
        tracker = _PoolPeak(xp)
        sync()
        with tracker.hook:
            step()
            step()
            sync()
        peak = tracker.peak + 2 * n_params * item
        how = "CuPy memory hook: peak bytes taken from the pool over two steps that re-make the workspace and optimizer state, + params and grads"
    else:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        step()
        step()
        peak = tracemalloc.get_traced_memory()[1] - base + 2 * n_params * item
        tracemalloc.stop()
        how = "tracemalloc peak over two steps that re-make the workspace and optimizer state, + params and grads"
    return {"peak_bytes": int(peak), "model_bytes": int(model_bytes), "ratio": peak / model_bytes,
            "data_bytes_separate": int(data_bytes), "how": how}


def oracle_error(sizes, N):
    """One step's gradients on this device against the NumPy float64 oracle: the
    normwise relative error ‖g − g64‖_∞ / ‖g64‖_∞ (what TF32 costs, when it is on)."""
    rng = np.random.default_rng(1)
    X, labels = rng.standard_normal((sizes[0], N)), rng.integers(0, sizes[-1], N)
    grads = []
    for dev, dtype in ((backend, args.dtype), ("cpu", "float64")):
        net = gpumlp.MLP(sizes, dtype=dtype, device=dev, seed=0)
        net.backward(gpumlp.losses.cross_entropy(net.forward(X), labels)[1])
        grads.append(gpumlp.to_numpy(net.grads).astype(np.float64))
    return float(np.max(np.abs(grads[0] - grads[1])) / np.max(np.abs(grads[1])))


def timed(step, sync):
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - t0


header = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "hostname": socket.gethostname(), "device": device_name(), "backend": backend.name,
    "fused_kernels": backend.fused, "versions": {
        "python": platform.python_version(), "numpy": np.__version__, "gpumlp": gpumlp.__version__,
        "torch": torch.__version__ if torch else None,
        "cupy": sys.modules["cupy"].__version__ if "cupy" in sys.modules else None},
    "command": shlex.join([sys.executable] + sys.argv), "threads": args.threads,
    "threadpools": [f"{i['internal_api']} {i['num_threads']} threads ({os.path.basename(i['filepath'])})"
                    for i in threadpool_info()],
    "torch_threads": torch.get_num_threads() if torch else None, "tf32": args.tf32,
    "settings": {"rounds": args.rounds, "warmup": args.warmup, "dtype": args.dtype, "lr": LR, "momentum": MOMENTUM},
    "load_average_before": os.getloadavg(),
}
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
    kernels_per_step = count_kernels(sizes, min(batch_sizes))
    fused, twins = kernels_per_step["fused"], kernels_per_step["twins"]
    error = oracle_error(sizes, 256)
    print(f"\none step's gradients vs the float64 CPU oracle (N=256): relative error {error:.2e}")
    print(f"net {'-'.join(map(str, sizes))}: kernels per step {fused['other']} fused + {fused['gemm']} GEMM "
          f"({', '.join(fused['names'])}); with the twins {twins['other']} + {twins['gemm']}; "
          f"buffers allocated per step: {len(fused['allocations']) + len(twins['allocations'])}")
    print(row.format("N", "gpumlp ms", "torch ms", "floor ms", "g/torch", "g/floor", "spread", "samples/s", "mem ratio"))
    results = []
    for N in batch_sizes:
        steps, net, data, opt, gstep = contenders(sizes, N)
        for _ in range(args.warmup):
            for _, step, s in steps:
                timed(step, s)
        raw = {name: [] for name, _, _ in steps}
        for _ in range(args.rounds):                           # interleaved: gpumlp, torch, floor, ...
            for name, step, s in steps:
                raw[name].append(timed(step, s))
        mem = memory(net, data, opt, gstep, N)
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
