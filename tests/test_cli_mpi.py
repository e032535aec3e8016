"""gpumlp train under mpiexec, as a user launches it: rank 0 alone speaks, an error is one
line without MPI_Abort's noise, and the hints repeat the launch."""
import os
import subprocess
import sys

from gpumlp.testing import mpiexec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def job_env(**extra):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MPIEXEC_TIMEOUT": "120",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}
    return env


def test_two_ranks_print_once_and_an_out_error_is_one_clean_line(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--epochs", "1", "--hidden", "32", "--no-progress", "--out", str(out)]
    env = job_env()
    env.pop("GPUMLP_DEVICE", None)                 # auto: a CPU machine says why, once
    p = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "gpumlp", *args],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("test accuracy") == 1 and "2 MPI ranks" in p.stdout
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert p.stderr.count("gpumlp: using the CPU") == 1, p.stderr
    again = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "gpumlp", *args],
                           capture_output=True, text=True, env=job_env(GPUMLP_DEVICE="cpu"), cwd=ROOT, timeout=180)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == (f"gpumlp: error: --out {out} already holds a run (model.npz, checkpoint.npz): pass --force "
                            f"to replace it, or continue it with: mpiexec -n 2 gpumlp train --resume {out}\n")
    bad = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "gpumlp", "train", "--epochs",
                          "0"], capture_output=True, text=True, env=job_env(GPUMLP_DEVICE="cpu"), cwd=ROOT, timeout=180)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Abort" not in bad.stderr
