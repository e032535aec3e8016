"""Micro-batching in one process, and the real MPI jobs (2 and 3 ranks) that run
tests/test_mpi.py and the data-parallel command line."""
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import gpumlp
from gpumlp.testing import mpiexec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def problem(n=101, sizes=(5, 12, 7, 3), seed=0):
    rng = np.random.default_rng(seed)
    return list(sizes), rng.standard_normal((sizes[0], n)), rng.integers(0, sizes[-1], n)


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("micro", [1, 7, 10, 31])
@pytest.mark.parametrize("loss", ["ce", "hinge", "mse"])
def test_micro_batches_give_the_same_training(micro, loss):
    """Batches of 32 (the last of each epoch 5) in chunks of `micro` columns, with momentum
    and weight decay: every parameter array as without chunks, to 1e-12 in float64."""
    sizes, X, y = problem()
    nets = []
    for m in (micro, None):
        net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=0)
        fit_kw = dict(loss=loss, epochs=3, batch_size=32, seed=4, progress=False, micro_batch=m)
        gpumlp.fit(net, X, y, gpumlp.SGD(0.1, 0.9, 1e-3), **fit_kw)
        nets.append(net)
    (Wa, ba), (Wb, bb) = nets[0].get_params(), nets[1].get_params()
    for a, b in zip(Wa + ba, Wb + bb, strict=True):
        assert rel(a, b) <= 1e-12


def test_micro_batches_keep_the_noise_scale():
    sizes, X, y = problem()
    b = []
    for m in (6, None):
        net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=0)
        h = gpumlp.fit(net, X, y, gpumlp.SGD(1e-300), epochs=2, batch_size=32, progress=False, micro_batch=m,
                       noise_scale=True)
        b.append((h[-1]["b_simple_mean"], h[-1]["b_simple"]))
    assert b[0] == pytest.approx(b[1], rel=1e-10)


def peak_bytes(micro):
    """tracemalloc's peak over a fit of one epoch of 784-512-10 with batches of 1024."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((784, 2048)).astype(np.float32), rng.integers(0, 10, 2048)
    net = gpumlp.MLP([784, 512, 10], dtype="float32", device="cpu", seed=0)
    tracemalloc.start()
    gpumlp.fit(net, X, y, gpumlp.SGD(0.01, 0.9), epochs=1, batch_size=1024, progress=False, micro_batch=micro)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_peak_memory_follows_the_chunk_not_the_batch():
    """The data's device copies (XT and the epoch's shuffled copy: 2 × 6.4 MB) are common to
    both; the batch's S, Z and Δ (1024 columns: ~6.3 MB, and the twins' scratch) shrink to
    those of 128 columns, plus one gradient accumulator (1.6 MB)."""
    whole, chunked = peak_bytes(None), peak_bytes(128)
    assert chunked < whole - 4e6, (whole, chunked)


def test_micro_batch_is_checked():
    sizes, X, y = problem()
    with pytest.raises(ValueError, match="micro_batch"):
        gpumlp.fit(gpumlp.MLP(sizes, device="cpu"), X, y, gpumlp.SGD(0.1), micro_batch=0, progress=False)


# -- real MPI jobs ------------------------------------------------------------------------------

def job_env(ranks):
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MPIEXEC_TIMEOUT": "240", "GPUMLP_TEST_RANKS": str(ranks),
            "GPUMLP_DEVICE": "cpu", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_data_parallel_tests_pass_in_a_real_mpi_job(ranks):
    """mpiexec -n P python -m mpi4py -m pytest tests/test_mpi.py (3 ranks oversubscribe CI's 2 cores)."""
    cmd = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "pytest", "-q", "-p", "no:cacheprovider",
           os.path.join(ROOT, "tests", "test_mpi.py")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=job_env(ranks), cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count("6 passed") == ranks, p.stdout[-2000:]


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_command_trains_the_same_model_on_p_ranks(ranks, tmp_path):
    """The user's contract: `mpiexec -n P python -m mpi4py -m gpumlp train --seed S ...` trains
    the model 1-process `gpumlp train --seed S ...` does, within 1e-9, in float64."""
    args = ["train", "--device", "cpu", "--dtype", "float64", "--epochs", "3", "--seed", "3", "--no-progress"]
    one = subprocess.run([sys.executable, "-m", "gpumlp", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=job_env(1), cwd=ROOT, timeout=300)
    assert one.returncode == 0, one.stderr
    many = subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "gpumlp", *args,
                           "--out", str(tmp_path / "many")], capture_output=True, text=True, env=job_env(ranks),
                          cwd=ROOT, timeout=300)
    assert many.returncode == 0, many.stderr
    assert many.stdout.count("test accuracy") == 1 and f"{ranks} MPI ranks" in many.stdout     # rank 0 alone prints
    with np.load(tmp_path / "one" / "model.npz") as a, np.load(tmp_path / "many" / "model.npz") as b:
        for k in a.files:
            if k[0] in "Wb":
                assert rel(b[k], a[k]) <= 1e-9, k


def test_a_one_rank_launch_is_warned_about(tmp_path):
    """A launcher whose job mpi4py sees as 1 rank (as a mismatched mpiexec gives each copy)."""
    p = subprocess.run([mpiexec(), "-n", "1", sys.executable, "-m", "gpumlp", "train", "--device", "cpu", "--epochs",
                        "1", "--no-progress"], capture_output=True, text=True, env=job_env(1), cwd=ROOT, timeout=300)
    assert p.returncode == 0 and "started by an MPI launcher, but this process's MPI job has 1 rank" in p.stderr


def test_a_killed_data_parallel_run_resumes_on_every_rank(tmp_path):
    """Rank 0 writes the checkpoints; kill -9 the whole 2-rank job after its 3rd epoch
    (checkpoint at 2), resume it on 2 ranks: the model of the uninterrupted 1-process run,
    within 1e-9 in float64, and each epoch once in metrics.jsonl."""
    import json
    import signal
    import time
    args = ["train", "--device", "cpu", "--dtype", "float64", "--hidden", "512,512", "--batch-size", "8", "--lr",
            "0.01", "--epochs", "5", "--checkpoint-every", "2", "--no-progress"]
    one = subprocess.run([sys.executable, "-m", "gpumlp", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=job_env(1), cwd=ROOT, timeout=300)
    assert one.returncode == 0, one.stderr
    cut = tmp_path / "cut"
    p = subprocess.Popen([mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "gpumlp", *args,
                          "--out", str(cut)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=job_env(2), cwd=ROOT,
                         start_new_session=True)
    t0 = time.monotonic()
    while not ((cut / "metrics.jsonl").exists() and len((cut / "metrics.jsonl").read_text().splitlines()) >= 3):
        assert p.poll() is None and time.monotonic() - t0 < 120, "the job ended or stalled before the kill"
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    resumed = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "gpumlp", "train", "--resume",
                              str(cut), "--no-progress"], capture_output=True, text=True, env=job_env(2), cwd=ROOT,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(line)["epoch"] for line in (cut / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]
    with np.load(tmp_path / "one" / "model.npz") as a, np.load(cut / "model.npz") as b:
        for k in a.files:
            if k[0] in "Wb":
                assert rel(b[k], a[k]) <= 1e-9, k


def test_an_error_rank_0_alone_sees_stops_every_rank(tmp_path):
    """--out holding another run is checked on rank 0; every rank must stop (no hang)."""
    out = tmp_path / "run"
    args = ["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]
    assert subprocess.run([sys.executable, "-m", "gpumlp", *args], capture_output=True, env=job_env(1),
                          cwd=ROOT, timeout=300).returncode == 0
    p = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "gpumlp", *args], capture_output=True, text=True,
                       env={**job_env(2), "MPIEXEC_TIMEOUT": "60"}, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and "already holds a run" in p.stderr


def test_a_launcher_of_another_mpi_is_refused(monkeypatch):
    """P copies of a 1-rank job would each train and write alone: refused; a genuine 1-rank
    launch is only warned about."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed")
    import io as textio

    from gpumlp import parallel
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    with pytest.raises(ValueError, match="started 2 processes, but mpi4py sees a 1-rank job"):
        parallel.from_environment()
    monkeypatch.delenv("SLURM_STEP_NUM_TASKS")
    monkeypatch.setenv("PMI_SIZE", "1")
    err = textio.StringIO()
    assert parallel.from_environment(warn=err) is None and "has 1 rank" in err.getvalue()
