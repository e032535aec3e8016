"""The NumPy float64 path as the oracle for the CuPy float32 path (needs a CUDA GPU).

Run on a CUDA machine with:  pytest -m gpu -v
Every test here is skipped, with the reason, where CuPy or a device is missing.
Each step test runs twice: with the twins (CuPy's own kernels, the default) and
with the compiled kernels of gpumlp/kernels.py (GPUMLP_FUSED=1).
"""
import os

os.environ.setdefault("CUPY_TF32", "0")        # full float32 GEMMs: TF32 would break 1e-4

import numpy as np
import pytest

import gpumlp
from gpumlp.activations import ACTIVATIONS
from gpumlp import kernels
from gpumlp.backend import CupyBackend, _probe_cupy
from gpumlp.losses import LOSSES as TABLE

from conftest import host, random_problem, rel_err

gpu_backend, why_not = _probe_cupy()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(gpu_backend is None, reason=f"no GPU: {why_not}")]

LOSSES = {"mse": lambda Y, t: gpumlp.losses.mse(Y, t),
          "hinge": lambda Y, t: gpumlp.losses.hinge(Y, t, margin=0.5),
          "ce": lambda Y, t: gpumlp.losses.cross_entropy(Y, t)}


def backends():
    import cupy
    return {"twins": CupyBackend(cupy, fused=False), "fused": CupyBackend(cupy, fused=True)}


def one_step(device, dtype, sizes, activation, loss, X, t, W, b):
    net = gpumlp.MLP(sizes, activation=activation, dtype=dtype, device=device)
    net.set_params(W, b)
    value, dY = LOSSES[loss](net.forward(X), t)
    net.backward(dY)
    cache = {"S": [host(a) for a in net.S], "Z": [host(a) for a in net.Z[1:]],
             "Delta": [host(a) for a in net.deltas], "dW": [host(a) for a in net.dW],
             "db": [host(a) for a in net.db], "loss": float(value)}
    gpumlp.SGD(0.1, momentum=0.9, weight_decay=1e-3).step(net)
    cache["W_new"], cache["b_new"] = net.get_params()
    return net, cache


@pytest.mark.parametrize("mode", ["twins", "fused"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_cupy_float32_step_matches_numpy_float64(activation, loss, mode, monkeypatch):
    monkeypatch.setenv("GPUMLP_FUSED", "1" if mode == "fused" else "0")   # the public losses follow it
    sizes = [32, 64, 48, 10]
    X, t = random_problem(sizes, 256, 0, loss)
    ref = gpumlp.MLP(sizes, activation=activation, dtype="float64", device="cpu", seed=0)
    W, b = ref.get_params()
    gpu_net, gpu = one_step(backends()[mode], "float32", sizes, activation, loss, X, t, W, b)
    _, cpu = one_step("cpu", "float64", sizes, activation, loss, X, t, W, b)
    assert isinstance(gpu_net.backend, CupyBackend)
    assert type(gpu_net.params).__module__.startswith("cupy")
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-4)
    for name in ("S", "Z", "Delta", "dW", "db", "W_new", "b_new"):
        for k, (g, c) in enumerate(zip(gpu[name], cpu[name])):
            assert g.dtype == np.float32 and c.dtype == np.float64
            assert rel_err(g, c) < 1e-4, (name, k, rel_err(g, c))


def test_host_arrays_go_to_the_gpu_and_cupy_arrays_are_taken_as_they_are():
    import cupy
    net = gpumlp.MLP([3, 4, 2], device="gpu", seed=0)
    x = np.ones((3, 5))
    y_host = net.forward(x)
    y_dev = net.forward(cupy.asarray(x))
    assert isinstance(y_host, cupy.ndarray) and cupy.array_equal(y_host, y_dev)
    cpu = gpumlp.MLP([3, 4, 2], device="cpu", seed=0)
    with pytest.raises(ValueError, match="another library or device"):
        cpu.forward(cupy.asarray(x))


def test_a_training_run_on_the_gpu_learns_the_digits():
    from gpumlp import data
    from gpumlp.train import fit
    X, y = data.load_digits()
    train, test = data.split(y, 0.2, 0)
    s = data.Standardizer.fit(X[:, train])
    net = gpumlp.MLP([64, 256, 10], device="gpu", seed=0)
    h = fit(net, s(X[:, train]), y[train], gpumlp.SGD(0.1, 0.9, 1e-3), epochs=30,
            X_test=s(X[:, test]), y_test=y[test], progress=False, log=lambda line: None)
    assert h[-1]["test_accuracy"] >= 0.97


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_compiled_kernel_matches_its_twin_on_the_gpu(dtype):
    """Same inputs through the compiled kernel and through its twin on CuPy."""
    import cupy
    be = backends()
    rng = np.random.default_rng(0)
    tol = 1e-5 if dtype == "float32" else 1e-12

    def dev(a):
        return cupy.asarray(np.asarray(a, dtype))
    for f in ACTIVATIONS.values():
        S0, b, D0 = (rng.standard_normal(shape) for shape in ((37, 53), (37, 1), (37, 53)))
        S0[3, 4] = np.nan                       # NaN must stay NaN in both forms, as in numpy.maximum
        out = {}
        for mode in be:
            S, Z, D = dev(S0), cupy.empty((37, 53), dtype), dev(D0)
            be[mode].kernel(kernels.bias_act(f, True))(S, dev(b), Z)
            Z = S if f.identity else Z
            be[mode].kernel(kernels.act_grad(f))(S, Z, D, cupy.empty((37, 53), bool), cupy.empty((37, 53), dtype))
            out[mode] = [cupy.asnumpy(a) for a in (S, Z, D)]
        for a, c in zip(out["fused"], out["twins"]):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(c))
            a, c = np.nan_to_num(a), np.nan_to_num(c)
            assert rel_err(a, c) < tol, f.name
    for name, entry in TABLE.items():
        Y, labels = rng.standard_normal((10, 301)) * 4, rng.integers(0, 10, 301)
        out = {}
        for mode in be:
            D, loss, hit = cupy.empty((10, 301), dtype), cupy.empty(301, dtype), cupy.empty(301, bool)
            s = kernels.LossScratch(be["twins"], 10, 301, np.dtype(dtype))
            be[mode].kernel(entry.kernel)(dev(Y), cupy.asarray(labels), D, loss, hit, 1 / 301, 0.5, s)
            out[mode] = [cupy.asnumpy(a) for a in (D, loss, hit)]
        assert rel_err(out["fused"][0], out["twins"][0]) < tol and rel_err(out["fused"][1], out["twins"][1]) < tol
        np.testing.assert_array_equal(out["fused"][2], out["twins"][2])
    for momentum, wd in ((0.0, 0.0), (0.9, 1e-3)):
        p0, g = rng.standard_normal(1000), rng.standard_normal(1000)
        out = {}
        for mode in be:
            p, v = dev(p0), (cupy.zeros(1000, dtype) if momentum else None)
            for _ in range(3):
                be[mode].kernel(kernels.SGD_KERNEL)(p, dev(g), v, 0.1, momentum, wd, cupy.empty(1000, dtype))
            out[mode] = cupy.asnumpy(p)
        assert rel_err(out["fused"], out["twins"]) < tol


@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("mode", ["twins", "fused"])
def test_a_steady_gpu_step_takes_no_memory_from_the_pool(mode, noise):
    """Also with the noise scale's records (per-example norms and |ḡ|²)."""
    import cupy
    from gpumlp.noise import _StepRecords
    from gpumlp.train import _Data, _step
    net = gpumlp.MLP([784, 1024, 1024, 10], device=backends()[mode], seed=0)
    X, y = random_problem([784, 1024, 1024, 10], 256, 0, "ce")
    data, opt = _Data(net, X, y), gpumlp.SGD(0.01, 0.9, 1e-3)
    k = net.backend.kernel(TABLE["ce"].kernel)
    records = _StepRecords(net, 1) if noise else None
    for _ in range(2):
        _step(net, data.XT.T, data.y, k, 1.0, opt, data.loss, data.hit, records)
    cupy.cuda.get_current_stream().synchronize()
    pool = cupy.get_default_memory_pool()
    before = pool.used_bytes(), pool.total_bytes()
    _step(net, data.XT.T, data.y, k, 1.0, opt, data.loss, data.hit, records)
    cupy.cuda.get_current_stream().synchronize()
    assert (pool.used_bytes(), pool.total_bytes()) == before


@pytest.mark.parametrize("mode", ["twins", "fused"])
def test_per_example_norms_and_the_noise_scale_on_the_gpu(mode):
    """sample_grad_sq_norms on CuPy float32 against NumPy float64 (Z_0 an F-contiguous batch
    view, as fit gives it), and fit's noise scale on the GPU against the CPU's."""
    from gpumlp.train import fit
    sizes = [32, 64, 48, 10]
    X, y = random_problem(sizes, 256, 1, "ce")
    for dev, dtype in ((backends()[mode], "float32"), ("cpu", "float64")):
        net = gpumlp.MLP(sizes, dtype=dtype, device=dev, seed=0)
        net.backward(gpumlp.losses.cross_entropy(net.forward(X), y)[1])
        s = host(net.sample_grad_sq_norms())
        if dtype == "float32":
            gpu_s = s
    assert rel_err(gpu_s, s) < 1e-4
    b = []
    for dev, dtype in ((backends()[mode], "float32"), ("cpu", "float64")):
        net = gpumlp.MLP(sizes, dtype=dtype, device=dev, seed=0)
        h = fit(net, X, y, gpumlp.SGD(0.05), epochs=2, batch_size=32, progress=False, log=lambda line: None,
                noise_scale=True)
        b.append(h[-1]["b_simple_mean"])
    assert b[0] == pytest.approx(b[1], rel=1e-3)


def test_a_checkpoint_moves_between_gpu_and_cpu(tmp_path):
    """A checkpoint written from a GPU run loads on the CPU with the same parameters and
    momentum, and the reverse."""
    from gpumlp import io
    from gpumlp.train import TrainState, fit
    X, y = random_problem([8, 16, 3], 64, 0, "ce")
    for src, dst in ((backends()["twins"], "cpu"), ("cpu", backends()["twins"])):
        net, opt = gpumlp.MLP([8, 16, 3], dtype="float32", device=src, seed=0), gpumlp.SGD(0.1, 0.9)
        state = TrainState(0)
        fit(net, X, y, opt, epochs=2, batch_size=16, state=state, progress=False)
        io.save_checkpoint(tmp_path / "c.npz", net, opt.get_state(net), state)
        ck = io.load_checkpoint(tmp_path / "c.npz", device=dst)
        assert np.array_equal(host(ck.net.params), host(net.params))
        opt2 = gpumlp.SGD(0.1, 0.9)
        opt2.set_state(ck.net, ck.optimizer_state)
        assert np.array_equal(opt2.get_state(ck.net)["velocity"], opt.get_state(net)["velocity"])


def test_running_out_of_gpu_memory_names_the_batch_size_and_changes_nothing():
    """With the pool capped, a batch too large for the device fails at its first step (the
    workspace): an error naming the batch size, and the parameters as they were."""
    import cupy
    from gpumlp.train import OutOfDeviceMemory, fit
    pool = cupy.get_default_memory_pool()
    net = gpumlp.MLP([64, 512, 10], dtype="float32", device=backends()["twins"], seed=0)
    X, y = random_problem([64, 512, 10], 4096, 0, "ce")
    before = host(net.params)
    used = pool.used_bytes()
    pool.set_limit(size=used + 4 * 2**20)                 # 4 MiB more than now: the data fits, the batch does not
    try:
        with pytest.raises(OutOfDeviceMemory, match="batch size 4096"):
            fit(net, X[:, :1024], y[:1024], gpumlp.SGD(0.1, 0.9), epochs=1, batch_size=4096, progress=False)
    finally:
        pool.set_limit(size=0)
    assert np.array_equal(host(net.params), before)
