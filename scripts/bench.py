"""Side-by-side timing of one training step: gpumlp vs PyTorch vs the GEMM floor.

For each batch size N this prints the median wall time of one full training step
(forward, softmax cross-entropy, backward, SGD-with-momentum update) for

  gpumlp   the hand-written column-major MLP, on NumPy (--device cpu) or CuPy (gpu);
  torch    the same step in PyTorch on the same device: an nn.Linear + ReLU stack
           with the same layer sizes and initial weights, F.cross_entropy and
           torch.optim.SGD with the same lr and momentum (skipped if torch is absent);
  floor    only the matmuls a step cannot avoid, per layer k: W_k Z_{k-1} (forward),
           W_k^T Δ_k (backward, all layers but the first) and Δ_k Z_{k-1}^T (dW_k),
           on preallocated arrays with out=, using the same array module as gpumlp.

Both libraries get identical data (numpy default_rng(0)), moved to the device once,
outside the timed region.  Each repeat times gpumlp, torch, floor in turn, so machine
noise hits all three alike; the median over --repeats is reported, after --warmup
untimed steps each.  On a GPU every timed region is bracketed by synchronisations and
TF32 is disabled on both sides (CUPY_TF32=0, torch allow_tf32=False), so all matmuls
run in true float32.  The script only measures and prints; it never asserts timings.

  python scripts/bench.py --device cpu --batch-sizes 64,256
  PYTHONPATH=. python scripts/bench.py --device gpu --json bench-gpu.json

NumPy's BLAS thread count is fixed when NumPy is imported: --threads sets torch's, and
also OMP/OPENBLAS/MKL_NUM_THREADS unless they are already set in the environment.  On a
CPU with few cores, one library's spin-waiting worker threads (OpenMP in torch, the BLAS
pool in NumPy) can slow the other when they alternate; the raw per-repeat times in the
JSON show such noise, and --threads 1 or OMP_WAIT_POLICY=PASSIVE are useful controls.
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
from pathlib import Path


def int_list(text):
    return [int(v) for v in text.split(",") if v.strip()]


p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--sizes", type=int_list, default=[784, 1024, 1024, 10], help="layer widths d0,...,dL")
p.add_argument("--batch-sizes", type=int_list, default=[64, 256, 1024, 4096])
p.add_argument("--repeats", type=int, default=20)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (and BLAS env vars)")
p.add_argument("--json", metavar="FILE", help="also write the results here as JSON")
args = p.parse_args()

if args.threads:   # must happen before NumPy (and its BLAS) is imported
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
if args.device == "gpu":
    os.environ["CUPY_TF32"] = "0"   # read when CuPy is imported

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the checkout's gpumlp
import gpumlp  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    torch = None
    print(f"note: PyTorch is not importable ({e}); the torch column is skipped")
if torch is not None and args.device == "gpu" and not torch.cuda.is_available():
    print(f"note: this PyTorch ({torch.__version__}) cannot use CUDA; the torch column is skipped")
    torch = None

LR, MOMENTUM = 0.01, 0.9
try:
    net = gpumlp.MLP(args.sizes, activation="relu", output="linear", dtype=args.dtype, device=args.device, seed=0)
except (gpumlp.DeviceUnavailableError, ValueError) as e:
    sys.exit(f"bench.py: {e}")
xp, backend = net.backend.xp, net.backend
opt = gpumlp.SGD(LR, momentum=MOMENTUM)

if args.device == "gpu":
    device_name = xp.cuda.runtime.getDeviceProperties(0)["name"]
    device_name = device_name.decode() if isinstance(device_name, bytes) else str(device_name)
else:
    try:
        with open("/proc/cpuinfo") as f:
            device_name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        device_name = platform.processor() or platform.machine()
    device_name += f" ({os.cpu_count()} logical CPUs)"

tmodel = None
if torch is not None:
    if args.threads:
        torch.set_num_threads(args.threads)
    tdev = "cuda" if args.device == "gpu" else "cpu"
    if tdev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    layers, W0, b0 = [], *net.get_params()
    for k, (w, b) in enumerate(zip(W0, b0)):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():                       # the same initial weights as gpumlp
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b.ravel()))
        layers += [lin] if k == len(W0) - 1 else [lin, torch.nn.ReLU()]
    tmodel = torch.nn.Sequential(*layers).to(device=tdev, dtype=getattr(torch, args.dtype))
    topt = torch.optim.SGD(tmodel.parameters(), lr=LR, momentum=MOMENTUM)


def threads_summary():
    """Best effort: which BLAS/OpenMP pools are loaded, with how many threads."""
    try:
        from threadpoolctl import threadpool_info
        return [f"{i.get('internal_api')}/{i.get('user_api')} {i.get('num_threads')} threads "
                f"({os.path.basename(i.get('filepath', '?'))})" for i in threadpool_info()]
    except Exception:
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            return [f"numpy BLAS: {blas.get('name')} {blas.get('version')} (threadpoolctl not available)"]
        except Exception as e:
            return [f"numpy BLAS: unknown ({e})"]


cupy = sys.modules.get("cupy")
header = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "hostname": socket.gethostname(), "device": device_name, "backend": backend.name,
    "versions": {"python": platform.python_version(), "numpy": np.__version__, "gpumlp": gpumlp.__version__,
                 "torch": torch.__version__ if torch else None, "cupy": cupy.__version__ if cupy else None},
    "command": shlex.join([sys.executable] + sys.argv),
    "settings": {k: getattr(args, k) for k in ("sizes", "batch_sizes", "repeats", "warmup", "dtype", "threads")},
    "torch_threads": torch.get_num_threads() if torch else None, "threadpools": threads_summary(),
    "tf32": "off" if args.device == "gpu" else "n/a (CPU)", "lr": LR, "momentum": MOMENTUM,
}
print(f"{header['date']}  {header['hostname']}  {device_name}  [{backend.name}, {args.dtype}]")
print("versions: " + ", ".join(f"{k} {v}" for k, v in header["versions"].items() if v))
print(f"sizes {list(args.sizes)}, SGD lr={LR} momentum={MOMENTUM}, median of {args.repeats} "
      f"(warmup {args.warmup}); torch threads: {header['torch_threads']}")
for line in header["threadpools"]:
    print("threadpool: " + line)
if args.device == "gpu":
    print("TF32 is off: CUPY_TF32=0, torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = False")


sync_gpumlp = backend.synchronize                                     # a no-op on the CPU
sync_torch = torch.cuda.synchronize if torch and args.device == "gpu" else (lambda: None)


def timed(step, sync):
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - t0


def make_steps(N):
    """The three step functions for batch size N, with their data already on the device."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.sizes[0], N)).astype(args.dtype)     # d0 x N, one sample per column
    labels = rng.integers(0, args.sizes[-1], N)
    Xd, yd = backend.asarray(X, backend.dtype(args.dtype)), backend.asarray(labels, backend.dtype("int64"))

    def gpumlp_step():
        Y = net.forward(Xd, check=False)
        _, dY = gpumlp.losses.cross_entropy(Y, yd, check=False)
        net.backward(dY, check=False)
        opt.step(net)

    steps, losses = [("gpumlp", gpumlp_step, sync_gpumlp)], {}
    if tmodel is not None:
        Xt = torch.from_numpy(np.ascontiguousarray(X.T)).to(tdev)      # N x d0, torch's layout
        yt = torch.from_numpy(labels).to(tdev)
        with torch.no_grad():    # untimed sanity check: both models have seen the same updates
            losses = {"gpumlp": float(gpumlp.losses.cross_entropy(net.forward(Xd), yd)[0]),
                      "torch": F.cross_entropy(tmodel(Xt), yt).item()}

        def torch_step():
            topt.zero_grad()
            F.cross_entropy(tmodel(Xt), yt).backward()
            topt.step()
        steps.append(("torch", torch_step, sync_torch))

    dt = backend.dtype(args.dtype)

    def rand(*shape):
        return backend.asarray(rng.standard_normal(shape) * 0.1, dt)
    d = args.sizes
    W = [rand(d[k + 1], d[k]) for k in range(len(d) - 1)]
    Z = [Xd] + [rand(dk, N) for dk in d[1:-1]]            # Z_0 .. Z_{L-1}
    S, D = [rand(dk, N) for dk in d[1:]], [rand(dk, N) for dk in d[1:]]
    dW, G = [xp.empty_like(w) for w in W], [rand(dk, N) for dk in d[1:]]

    def floor_step():
        for k in range(len(W)):
            xp.matmul(W[k], Z[k], out=S[k])                 # S_k = W_k Z_{k-1}
            if k > 0:
                xp.matmul(W[k].T, D[k], out=G[k - 1])       # W_k^T Δ_k
            xp.matmul(D[k], Z[k].T, out=dW[k])              # dW_k = Δ_k Z_{k-1}^T
    steps.append(("floor", floor_step, sync_gpumlp))
    return steps, losses


results = []
row = "{:>7} {:>11} {:>11} {:>11} {:>13} {:>13} {:>17}"
print()
print(row.format("N", "gpumlp ms", "torch ms", "floor ms", "gpumlp/torch", "gpumlp/floor", "gpumlp samples/s"))
for N in args.batch_sizes:
    steps, losses = make_steps(N)
    for _ in range(args.warmup):
        for _, step, sync in steps:
            timed(step, sync)
    times = {name: [] for name, _, _ in steps}
    for _ in range(args.repeats):                            # interleaved: gpumlp, torch, floor, ...
        for name, step, sync in steps:
            times[name].append(timed(step, sync))
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    g, t, f = ms["gpumlp"], ms.get("torch"), ms["floor"]
    res = {"N": N, "gpumlp_ms": g, "torch_ms": t, "floor_ms": f,
           "gpumlp_over_torch": g / t if t else None, "gpumlp_over_floor": g / f,
           "gpumlp_samples_per_s": N / (g / 1e3), "loss_before": losses,
           "raw_ms": {name: [1e3 * v for v in ts] for name, ts in times.items()}}
    results.append(res)
    fmt = lambda v, spec: "-" if v is None else format(v, spec)   # noqa: E731
    print(row.format(N, fmt(g, ".3f"), fmt(t, ".3f"), fmt(f, ".3f"), fmt(res["gpumlp_over_torch"], ".2f"),
                     fmt(res["gpumlp_over_floor"], ".2f"), fmt(res["gpumlp_samples_per_s"], ",.0f")))

if torch is not None:    # the models take the same steps, so their losses should agree closely
    print("loss (gpumlp vs torch) before each N: " + ", ".join(
        f"{r['N']}: {r['loss_before']['gpumlp']:.5f} vs {r['loss_before']['torch']:.5f}" for r in results))
if args.json:
    with open(args.json, "w") as fh:
        json.dump({"header": header, "results": results}, fh, indent=2)
    print(f"\nwrote {args.json}")
