"""Pre-flight of the GPU checks (scripts/gpu_check.sh, scripts/gpu_sweeps.sh): is this
machine ready to spend its device time on them?

  python scripts/gpu_preflight.py [--json FILE]

In order, printing each finding:
  * the date, Python, and which Python packages are missing: those the checks need
    (numpy, cupy, pytest, tqdm, threadpoolctl) fail the pre-flight; those only the
    rest of the test suite or the benchmark's torch column use are named as notes.
    Each missing pure-Python package comes with the exact ``pip install --no-deps
    --target .gpu-deps ...`` to run on a machine that reaches a registry: carry
    ``.gpu-deps`` along, the scripts put it on PYTHONPATH.  Nothing is installed here.
  * the card and driver (nvidia-smi), the CUDA runtime and driver versions, CuPy's and
    NumPy's versions (as CuPy reports them);
  * one GEMM (cuBLAS) against NumPy;
  * gpumlp's CUDA module compiled with NVRTC, every template instance fetched
    (``gpumlp.kernels.launch.build(cupy)``, the RawModule the library launches from);
  * one compiled kernel (the SGD update) launched through gpumlp against its twin;
  * gpumlp's own probe (what tests/test_gpu.py runs on): it must find the GPU.

Exit status 0 when all of it holds; else 1, with one last line
``gpu_preflight: FAILED: <reason>`` (a broken CuPy fails here, loudly: it never skips).
With --json, everything found (versions, card, timings, the reason) is also written there.
"""
import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("CUPY_TF32", "0")        # read when CuPy is imported: full float32 GEMMs

# import name -> (what to pip install, why it is needed)
NEEDED = {
    "numpy": ("numpy", "gpumlp"),
    "cupy": (None, "the GPU"),
    "pytest": ("pytest pluggy iniconfig packaging", "the gpu tests"),
    "tqdm": ("tqdm", "gpumlp train"),
    "threadpoolctl": ("threadpoolctl", "gpumlp, scripts/bench.py"),
}
WANTED = {
    "array_api_strict": ("array-api-strict", "the CPU suite's strict backend (gpumlp.testing.strict_backend)"),
    "hypothesis": ("hypothesis", "the CPU suite's property tests"),
    "sklearn": ("scikit-learn", "gpumlp.sklearn and its tests"),
    "torch": (None, "the torch column of scripts/bench.py (skipped without it)"),
}
COMPILED = {"numpy"}          # a wheel for this very Python and platform, not a pure-Python one


class PreflightError(Exception):
    """One line saying what is wrong."""


def say(line=""):
    print(line, flush=True)


def version_of(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def packages(info):
    missing_needed = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    missing_wanted = [m for m in WANTED if importlib.util.find_spec(m) is None]
    info["packages"] = {"missing_needed": missing_needed, "missing_wanted": missing_wanted}
    for m in missing_needed:
        say(f"MISSING (needed by {NEEDED[m][1]}): {m}")
    for m in missing_wanted:
        say(f"missing (used by {WANTED[m][1]}; not needed by this check): {m}")
    pure = [NEEDED[m][0] for m in missing_needed if NEEDED[m][0] and m not in COMPILED]
    pure += [WANTED[m][0] for m in missing_wanted if WANTED[m][0]]
    if pure:
        say("  on a machine that reaches a package registry, in this source tree, run")
        say(f"    pip install --no-deps --target .gpu-deps {' '.join(pure)}")
        say("  and carry .gpu-deps along (the GPU scripts put it on PYTHONPATH); never pip install on the GPU machine")
    if "numpy" in missing_needed:
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        say(f"  numpy is compiled: carry a wheel for Python {py} on {platform.machine()}, e.g.")
        say(f"    pip install --no-deps --target .gpu-deps --only-binary=:all: --python-version {py} "
            f"--platform manylinux2014_{platform.machine()} numpy")
    if "cupy" in missing_needed:
        say("  CuPy is not installed: this is not a GPU machine set up for gpumlp. Where a registry is reachable:")
        say("    pip install 'gpumlp[gpu]'   (CUDA 12)   or   pip install 'gpumlp[gpu-cuda13]'   (CUDA 13)")
    return missing_needed


def nvidia_smi(info):
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        r = subprocess.run(query, capture_output=True, text=True, timeout=20)
        line = (r.stdout.strip().splitlines() or [""])[0] if r.returncode == 0 else None
        note = None if line else f"nvidia-smi failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[:200]}"
    except FileNotFoundError:
        line, note = None, "nvidia-smi is not on the PATH"
    except subprocess.TimeoutExpired:
        line, note = None, "nvidia-smi did not answer in 20 s"
    info["nvidia_smi"] = line
    if line:
        parts = [p.strip() for p in line.split(",")]
        info["card"]["name"] = parts[0]
        if len(parts) > 1:
            info["versions"]["nvidia_driver"] = parts[1]
        if len(parts) > 2:
            info["card"]["memory"] = parts[2]
        say(f"card: {line}")
    else:
        say(f"card: unknown ({note}); CuPy is asked below")


def cuda_version(v):
    return f"{v // 1000}.{(v % 1000) // 10}"


def cupy_versions(info):
    try:
        import cupy
    except Exception as e:       # an installed CuPy that does not import is broken: fail loudly
        raise PreflightError(f"CuPy does not import ({type(e).__name__}: {e})") from e
    info["versions"]["cupy"] = cupy.__version__
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        raise PreflightError(f"CuPy is installed but the CUDA driver is not usable ({type(e).__name__}: {e})") from e
    if count == 0:
        raise PreflightError("CuPy and the CUDA driver are present but no CUDA device was found")
    info["card"]["devices"] = count
    for key, call in (("cuda_runtime", "runtimeGetVersion"), ("cuda_driver", "driverGetVersion")):
        try:          # not fatal: the GEMM and the kernel below are what must work
            info["versions"][key] = cuda_version(int(getattr(cupy.cuda.runtime, call)()))
        except Exception as e:
            info["versions"][key] = f"unknown ({type(e).__name__}: {first_line(e)})"
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        info["card"]["cupy_name"] = name.decode() if isinstance(name, bytes) else str(name)
        if "major" in props:
            info["card"]["compute_capability"] = f"{props['major']}.{props['minor']}"
        if "totalGlobalMem" in props:
            info["card"]["memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
    except Exception as e:       # scripts/bench.py names the device with it
        raise PreflightError(f"cupy.cuda.runtime.getDeviceProperties(0) failed ({type(e).__name__}: {e})") from e
    info["card"].setdefault("name", info["card"]["cupy_name"])
    v = info["versions"]
    say(f"CuPy {v['cupy']} on {count} device(s): {info['card']['cupy_name']}"
        + (f", compute capability {info['card']['compute_capability']}" if "compute_capability" in info["card"] else "")
        + f"; CUDA runtime {v['cuda_runtime']}, CUDA driver {v['cuda_driver']}")
    return cupy


def gemm(cupy, info):
    import numpy as np
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((96, 80)), rng.standard_normal((80, 64))
    t = time.perf_counter()
    try:
        c = cupy.asnumpy(cupy.asarray(a, dtype=cupy.float32) @ cupy.asarray(b, dtype=cupy.float32))
    except Exception as e:
        raise PreflightError(f"a float32 GEMM on the GPU failed: cuBLAS does not load or run "
                             f"({type(e).__name__}: {first_line(e)})") from e
    ref = a @ b
    err = float(np.max(np.abs(c - ref)) / np.max(np.abs(ref)))
    info["checks"]["gemm"] = {"relative_error": err, "seconds": time.perf_counter() - t}
    say(f"GEMM 96x80 @ 80x64 float32: relative error {err:.1e} against NumPy float64")
    if not err < 1e-5:
        raise PreflightError(f"a float32 GEMM on the GPU is wrong: relative error {err:.1e} (TF32 on? CUPY_TF32=0)")


def compile_module(cupy, info):
    t = time.perf_counter()
    try:
        from gpumlp.kernels import launch
        via, n = "gpumlp.kernels.launch.build", launch.build(cupy)
    except Exception as e:
        traceback.print_exc(file=sys.stdout)
        raise PreflightError(f"NVRTC could not build gpumlp's CUDA module ({type(e).__name__}: {first_line(e)})") from e
    seconds = time.perf_counter() - t
    info["checks"]["compile"] = {"via": via, "instances": n, "seconds": seconds}
    say(f"gpumlp's CUDA module built with NVRTC through {via}: {n} kernel instances in {seconds:.1f} s")


def compiled_kernel(cupy, info):
    import numpy as np

    from gpumlp import kernels
    from gpumlp.backend import CupyBackend
    rng = np.random.default_rng(1)
    p0, g, v0 = (rng.standard_normal(1000).astype(np.float32) for _ in range(3))
    out = {}
    t = time.perf_counter()
    try:
        for mode in ("fused", "twins"):
            be = CupyBackend(cupy, fused=(mode == "fused"))
            p, v = cupy.asarray(p0.copy()), cupy.asarray(v0.copy())      # fresh for each form
            be.kernel(kernels.SGD_KERNEL)(p, cupy.asarray(g.copy()), v, 0.1, 0.9, 1e-3, cupy.empty(1000, cupy.float32))
            out[mode] = cupy.asnumpy(p)
    except Exception as e:
        traceback.print_exc(file=sys.stdout)
        raise PreflightError(f"a compiled kernel (sgd) failed to launch ({type(e).__name__}: {first_line(e)})") from e
    err = float(np.max(np.abs(out["fused"] - out["twins"])) / np.max(np.abs(out["twins"])))
    info["checks"]["kernel"] = {"name": "sgd (float32, momentum, weight decay)", "relative_error_vs_twin": err,
                                "seconds": time.perf_counter() - t}
    say(f"compiled kernel sgd (float32, momentum, weight decay) against its twin: relative error {err:.1e}")
    if not err < 1e-5:
        raise PreflightError(f"the compiled sgd kernel disagrees with its twin: relative error {err:.1e}")


def probe(info):
    from gpumlp.backend import probe_cupy
    backend, why_not = probe_cupy()
    if backend is None:
        raise PreflightError(f"gpumlp's own probe finds no GPU, so the gpu tests would only skip: {why_not}")
    say("gpumlp's probe: the GPU backend is usable (the gpu tests will run, not skip)")


def first_line(e):
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else "no message"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", metavar="FILE", help="also write what was found here")
    args = p.parse_args()
    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "python": platform.python_version(), "executable": sys.executable,
            "card": {}, "versions": {}, "checks": {}, "ok": False, "reason": None}
    say(f"date: {info['date']}")
    say(f"python {info['python']} ({sys.executable})")
    t = time.perf_counter()
    try:
        missing = packages(info)
        for dist in ("numpy", "torch", "pytest"):
            info["versions"][dist] = version_of(dist)
        say("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v))
        nvidia_smi(info)
        if missing:
            raise PreflightError(f"missing Python packages: {', '.join(missing)} (see above)")
        cupy = cupy_versions(info)
        gemm(cupy, info)
        compile_module(cupy, info)
        compiled_kernel(cupy, info)
        probe(info)
        info["ok"] = True
    except PreflightError as e:
        info["reason"] = str(e)
    except Exception as e:                  # anything unforeseen is a failure too, never a skip
        traceback.print_exc(file=sys.stdout)
        info["reason"] = f"unexpected {type(e).__name__}: {first_line(e)}"
    info["seconds"] = time.perf_counter() - t
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(info, fh, indent=2)
    if not info["ok"]:
        say(f"gpu_preflight: FAILED: {info['reason']}")
        return 1
    say(f"gpu_preflight: ready ({info['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
