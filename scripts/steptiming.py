"""Timing one training step side by side: what scripts/bench.py and the step mode of
scripts/sweep_batch_sizes.py share.

One step is forward, softmax cross-entropy, backward and SGD with momentum 0.9, on
the same data, layer sizes and starting weights, for up to three contenders:

  gpumlp   the step ``gpumlp train`` runs (``gpumlp.engine.Trainer.step``: no checks, no host reads);
  torch    nn.Linear + ReLU, F.cross_entropy and torch.optim.SGD on the same device
           (absent when PyTorch is not installed or cannot use the device);
  floor    the step's GEMMs on preallocated outputs (W_k Z_{k-1}, W_k^T Δ_k, Δ_k Z_{k-1}^T, and
           the GEMVs Δ_k 1) plus one in-place update of the parameters (θ −= lr·g): the work
           no step can skip.

They run interleaved, round after round, so machine noise hits all alike; every
timed region is bracketed by synchronisations on a GPU.  Nothing here asserts a time.
"""
import datetime
import os
import platform
import shlex
import socket
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                           # the checkout's gpumlp
LR, MOMENTUM = 0.01, 0.9


class Context:
    """The device, dtype and threads every contender runs with, set up once: BLAS and
    torch threads, TF32 on both sides or neither (CUPY_TF32 is read when CuPy is
    imported, so this comes before the backend)."""

    def __init__(self, device="cpu", dtype="float32", threads=1, tf32=False, torch=True):
        os.environ["CUPY_TF32"] = "1" if tf32 else "0"
        import numpy as np
        from threadpoolctl import threadpool_limits

        import gpumlp
        self.np, self.gpumlp = np, gpumlp
        self.device, self.dtype, self.threads, self.tf32 = device, dtype, threads, tf32
        self.notes = []
        self.torch = self._torch() if torch else None
        self._limits = threadpool_limits(limits=threads)
        self.backend = gpumlp.get_backend(device)          # raises DeviceUnavailableError
        self.xp = self.backend.xp
        self.sync = self.backend.synchronize
        self.sync_torch = self.torch.cuda.synchronize if self.torch and device == "gpu" else (lambda: None)

    def _torch(self):
        try:
            import torch
        except ImportError as e:
            self.notes.append(f"PyTorch is not importable ({e}); the torch column is skipped")
            return None
        if self.device == "gpu" and not torch.cuda.is_available():
            self.notes.append(f"this PyTorch ({torch.__version__}) cannot use CUDA; the torch column is skipped")
            return None
        torch.set_num_threads(self.threads)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32
        return torch

    def device_name(self):
        if self.device == "gpu":
            name = self.xp.cuda.runtime.getDeviceProperties(0)["name"]
            return name.decode() if isinstance(name, bytes) else str(name)
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            name = platform.processor() or platform.machine()
        return f"{name} ({os.cpu_count()} logical CPUs)"

    def header(self, **settings):
        """Date, machine, device, versions, command, threads: what a JSON record starts with."""
        from threadpoolctl import threadpool_info
        torch, np = self.torch, self.np
        return {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "hostname": socket.gethostname(), "device": self.device_name(), "backend": self.backend.name,
            "fused_kernels": self.backend.fused, "versions": {
                "python": platform.python_version(), "numpy": np.__version__, "gpumlp": self.gpumlp.__version__,
                "torch": torch.__version__ if torch else None,
                "cupy": sys.modules["cupy"].__version__ if "cupy" in sys.modules else None},
            "command": shlex.join([sys.executable] + sys.argv), "threads": self.threads,
            "threadpools": [f"{i['internal_api']} {i['num_threads']} threads ({os.path.basename(i['filepath'])})"
                            for i in threadpool_info()],
            "torch_threads": torch.get_num_threads() if torch else None, "tf32": self.tf32,
            "settings": {"dtype": self.dtype, "lr": LR, "momentum": MOMENTUM, **settings},
            "load_average_before": os.getloadavg(),
        }


def count_kernels(ctx, sizes, n):
    """gpumlp's kernels per step on the counting backend: fused (as with GPUMLP_FUSED=1)
    and twins (CuPy with the switch off), GEMMs apart, and the buffers a step allocates."""
    from gpumlp.engine import Trainer
    from gpumlp.testing import TALLY, CountingBackend
    gpumlp, np = ctx.gpumlp, ctx.np
    out = {}
    for mode in ("fused", "twins"):
        net = gpumlp.MLP(sizes, dtype=ctx.dtype, device=CountingBackend(fused=mode == "fused"), seed=0)
        trainer = Trainer(net, gpumlp.SGD(LR, MOMENTUM))
        data = trainer.data(np.zeros((sizes[0], n)), np.zeros(n, int))
        for _ in range(2):
            TALLY.clear()
            trainer.step(data, 0, n)
        out[mode] = {"gemm": len(TALLY.gemm), "other": len(TALLY.other), "names": list(TALLY.other),
                     "allocations": list(TALLY.allocs)}
    return out


class Contenders:
    """gpumlp, torch (when available) and the floor at batch size N, with their data on
    the device outside the timed region.  ``steps`` lists (name, step, sync).  With
    ``noise_scale``, ``noise_step`` is gpumlp's step with the noise-scale records
    (per-example gradient norms and |ḡ|²) on the same net, for :meth:`noise_blocks`."""

    def __init__(self, ctx, sizes, N, noise_scale=False):
        from gpumlp.noise import StepRecords
        np, xp, torch = ctx.np, ctx.xp, ctx.torch
        self.ctx, self.N, self.sizes = ctx, N, sizes
        rng = np.random.default_rng(0)
        X = rng.standard_normal((sizes[0], N)).astype(ctx.dtype)           # d0 × N, one sample per column
        labels = rng.integers(0, sizes[-1], N)
        self.X, self.labels = X, labels
        net, trainer, data = self._gpumlp()
        Z0 = data.XT.T

        def gpumlp_step():
            trainer.step(data, 0, N)
        self.gpumlp_step = gpumlp_step
        self.steps = [("gpumlp", gpumlp_step, ctx.sync)]

        if noise_scale:
            records = StepRecords(net, 1)

            def noise_step():
                trainer.step(data, 0, N, records, 0)
            self.noise_step = noise_step

        if torch is not None:
            F = torch.nn.functional
            tdev = "cuda" if ctx.device == "gpu" else "cpu"
            layers, (W0, b0) = [], net.get_params()
            for k, (w, b) in enumerate(zip(W0, b0, strict=True)):
                lin = torch.nn.Linear(w.shape[1], w.shape[0])
                with torch.no_grad():                                   # the same starting weights
                    lin.weight.copy_(torch.from_numpy(w))
                    lin.bias.copy_(torch.from_numpy(b.ravel()))
                layers += [lin] if k == len(W0) - 1 else [lin, torch.nn.ReLU()]
            model = torch.nn.Sequential(*layers).to(device=tdev, dtype=getattr(torch, ctx.dtype))
            topt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
            Xt = torch.from_numpy(np.ascontiguousarray(X.T)).to(tdev)     # N × d0, torch's layout
            yt = torch.from_numpy(labels).to(tdev)

            def torch_step():
                topt.zero_grad()
                F.cross_entropy(model(Xt), yt).backward()
                topt.step()
            self.steps.append(("torch", torch_step, ctx.sync_torch))

        dt = ctx.backend.dtype(ctx.dtype)

        def rand(*shape):
            return ctx.backend.asarray(rng.standard_normal(shape) * 0.1, dt)
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
        self.steps.append(("floor", floor_step, ctx.sync))

    def _gpumlp(self):
        """A fresh net (the same starting weights), its trainer and its data on the device."""
        from gpumlp.engine import Trainer
        ctx = self.ctx
        net = ctx.gpumlp.MLP(self.sizes, activation="relu", dtype=ctx.dtype, device=ctx.backend, seed=0)
        trainer = Trainer(net, ctx.gpumlp.SGD(LR, MOMENTUM))
        return net, trainer, trainer.data(self.X, self.labels)

    def rounds(self, warmup, rounds):
        """Seconds per step of each contender: ``warmup`` untimed rounds, then ``rounds``
        timed ones, interleaved (gpumlp, ..., floor, gpumlp, ...)."""
        for _ in range(warmup):
            for _, step, s in self.steps:
                timed(step, s)
        raw = {name: [] for name, _, _ in self.steps}
        for _ in range(rounds):
            for name, step, s in self.steps:
                raw[name].append(timed(step, s))
        return raw

    def noise_blocks(self, blocks=6, seconds=0.25):
        """Seconds per step of gpumlp's step without and with the noise-scale records, in
        alternating blocks of consecutive steps on the same net, as a training loop runs
        them (interleaving single steps with other contenders' would charge the records
        for cache misses another net's step caused).  Returns {"gpumlp": [...],
        "gpumlp+noise": [...]}, one mean per block."""
        sync = self.ctx.sync
        self.gpumlp_step(), self.noise_step()
        n = max(3, int(seconds / max(timed(self.gpumlp_step, sync), 1e-6)))
        out = {"gpumlp": [], "gpumlp+noise": []}
        for _ in range(blocks):
            for name, step in (("gpumlp", self.gpumlp_step), ("gpumlp+noise", self.noise_step)):
                sync()
                t0 = time.perf_counter()
                for _ in range(n):
                    step()
                sync()
                out[name].append((time.perf_counter() - t0) / n)
        return out

    def memory(self):
        """Peak memory of gpumlp's steps (NumPy: tracemalloc; CuPy: a memory hook on the pool)
        against params + grads + momentum + S, Z, Δ of one batch; the data on the device apart.
        The steps measured are the first two of a fresh net (the same weights) with a fresh
        optimizer, built outside the measurement with its data: they make the workspace and the
        optimizer's state, so the twins' scratch and the optimizer's chunk buffer are counted."""
        ctx, N = self.ctx, self.N
        net, trainer, data = self._gpumlp()
        item = ctx.np.dtype(ctx.dtype).itemsize
        n_params = net.params.shape[0]
        szd = sum(2 * d * N for d in net.sizes[1:]) + sum(
            d * N for f, d in zip(net.f, net.sizes[1:], strict=True) if not f.identity)
        model_bytes = (3 * n_params + szd) * item
        data_bytes = data.XT.nbytes + data.y.nbytes + data.loss.nbytes + data.hit.nbytes   # fit adds a shuffled copy

        def step():
            trainer.step(data, 0, N)
        if ctx.device == "gpu":
            tracker = _PoolPeak(ctx.xp)
            ctx.sync()
            with tracker.hook:
                step()
                step()
                ctx.sync()
            peak = tracker.peak + 2 * n_params * item
            how = ("CuPy memory hook: peak bytes taken from the pool over two steps that re-make the "
                   "workspace and optimizer state, + params and grads")
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


def oracle_error(ctx, sizes, N):
    """One step's gradients on this device against the NumPy float64 oracle: the
    normwise relative error ‖g − g64‖_∞ / ‖g64‖_∞ (what TF32 costs, when it is on)."""
    np, gpumlp = ctx.np, ctx.gpumlp
    rng = np.random.default_rng(1)
    X, labels = rng.standard_normal((sizes[0], N)), rng.integers(0, sizes[-1], N)
    grads = []
    for dev, dtype in ((ctx.backend, ctx.dtype), ("cpu", "float64")):
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
