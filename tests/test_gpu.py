"""The NumPy float64 path as the oracle for the CuPy float32 path (needs a CUDA GPU).

Run on a CUDA machine with:  pytest -m gpu -v
Every test here is skipped, with the reason, where CuPy or a device is missing.
"""
import os

os.environ.setdefault("CUPY_TF32", "0")        # full float32 GEMMs: TF32 would break 1e-4

import numpy as np
import pytest

import gpumlp
from gpumlp.activations import ACTIVATIONS
from gpumlp.backend import CupyBackend, _probe_cupy

from conftest import host, random_problem, rel_err

gpu_backend, why_not = _probe_cupy()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(gpu_backend is None, reason=f"no GPU: {why_not}")]

LOSSES = {"mse": lambda Y, t: gpumlp.losses.mse(Y, t),
          "hinge": lambda Y, t: gpumlp.losses.hinge(Y, t, margin=0.5),
          "ce": lambda Y, t: gpumlp.losses.cross_entropy(Y, t)}


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


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_cupy_float32_step_matches_numpy_float64(activation, loss):
    sizes = [32, 64, 48, 10]
    X, t = random_problem(sizes, 256, 0, loss)
    ref = gpumlp.MLP(sizes, activation=activation, dtype="float64", device="cpu", seed=0)
    W, b = ref.get_params()
    gpu_net, gpu = one_step("gpu", "float32", sizes, activation, loss, X, t, W, b)
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
