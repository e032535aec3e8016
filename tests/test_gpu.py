"""The NumPy float64 path as the oracle for the CuPy float32 path.

On a CUDA machine (``scripts/gpu_check.sh`` runs this file there) every test runs on the
real card.  Without one, every test here runs in CPU CI on the stand-in device of
``tests/standin`` (a CuPy whose kernels are the CUDA source built as host C++, with a
memory pool that behaves like CuPy's), so that a defect in a test shows up in CI before a
card sees it.  A CuPy that is installed but broken (too old, NVRTC or cuBLAS failing) fails
these tests; it never skips them.  Each step test runs with the twins (GPUMLP_FUSED=0), the
compiled kernels unchecked (1) and, where it says so, behind the first-launch check (auto).
"""
import os
import sys
import warnings

os.environ.setdefault("CUPY_TF32", "0")        # full float32 GEMMs: TF32 would break 1e-4

import numpy as np
import pytest

import gpumlp
from gpumlp import backend as B
from gpumlp import kernels
from gpumlp.activations import ACTIVATIONS
from gpumlp.backend import CupyBackend
from gpumlp.kernels import check
from gpumlp.losses import LOSSES as TABLE
from gpumlp.testing import host, random_problem, rel_err

pytestmark = pytest.mark.gpu
PROBE = B.probe_cupy()                        # a real CuPy and device, if this machine has them

LOSSES = {"mse": lambda Y, t: gpumlp.losses.mse(Y, t),
          "hinge": lambda Y, t: gpumlp.losses.hinge(Y, t, margin=0.5),
          "ce": lambda Y, t: gpumlp.losses.cross_entropy(Y, t),
          "squared_error": lambda Y, t: gpumlp.losses.squared_error(Y, t)}
TARGETS = {"mse", "squared_error"}            # losses whose t is real targets (K × N), not labels


@pytest.fixture
def cupy(request):
    """The real CuPy where there is a device; else the stand-in, as ``cupy`` for this test."""
    if PROBE[0] is not None:
        return sys.modules["cupy"]
    if not PROBE.absent:
        pytest.fail(f"CuPy is installed but broken: {PROBE[1]}")
    return request.getfixturevalue("standin")


def backends(cupy):
    return {"twins": CupyBackend(cupy, fused=False), "fused": CupyBackend(cupy, fused=True),
            "auto": CupyBackend(cupy, fused="auto")}


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
def test_cupy_float32_step_matches_numpy_float64(cupy, activation, loss, mode, monkeypatch):
    monkeypatch.setenv("GPUMLP_FUSED", "1" if mode == "fused" else "0")   # the public losses follow it
    sizes = [32, 64, 48, 10]
    X, t = random_problem(sizes, 256, 0, "mse" if loss in TARGETS else loss)
    ref = gpumlp.MLP(sizes, activation=activation, dtype="float64", device="cpu", seed=0)
    W, b = ref.get_params()
    gpu_net, gpu = one_step(backends(cupy)[mode], "float32", sizes, activation, loss, X, t, W, b)
    _, cpu = one_step("cpu", "float64", sizes, activation, loss, X, t, W, b)
    assert isinstance(gpu_net.backend, CupyBackend) and gpu_net.backend.mode == ("on" if mode == "fused" else "off")
    assert isinstance(gpu_net.params, cupy.ndarray)
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-4)
    for name in ("S", "Z", "Delta", "dW", "db", "W_new", "b_new"):
        for k, (g, c) in enumerate(zip(gpu[name], cpu[name], strict=True)):
            assert g.dtype == np.float32 and c.dtype == np.float64
            assert rel_err(g, c) < 1e-4, (name, k, rel_err(g, c))


def test_host_arrays_go_to_the_gpu_and_cupy_arrays_are_taken_as_they_are(cupy):
    net = gpumlp.MLP([3, 4, 2], device="gpu", seed=0)
    x = np.ones((3, 5))
    y_host = net.forward(x)
    y_dev = net.forward(cupy.asarray(x))
    assert isinstance(y_host, cupy.ndarray) and bool(cupy.array_equal(y_host, y_dev))
    cpu = gpumlp.MLP([3, 4, 2], device="cpu", seed=0)
    with pytest.raises(ValueError, match="another library or device"):
        cpu.forward(cupy.asarray(x))


def test_a_training_run_on_the_gpu_learns_the_digits(cupy):
    """On "gpu" with the default GPUMLP_FUSED=auto: every compiled kernel passes its first-launch
    check (no warning), and the digits are learnt."""
    from gpumlp import data
    from gpumlp.train import fit
    X, y = data.load_digits()
    train, test = data.split(y, 0.2, 0)
    s = data.Standardizer.fit(X[:, train])
    net = gpumlp.MLP([64, 256, 10], device="gpu", seed=0)
    assert net.backend.mode == kernels.fused_mode()          # "auto" unless GPUMLP_FUSED says otherwise
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="gpumlp: the compiled kernel")
        h = fit(net, s(X[:, train]), y[train], gpumlp.SGD(0.1, 0.9, 1e-3), epochs=30,
                X_test=s(X[:, test]), y_test=y[test], progress=False, log=lambda line: None)
    assert h[-1]["test_accuracy"] >= 0.97
    if net.backend.mode == "auto":
        assert check.verdicts and all(check.verdicts.values()), check.verdicts


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_compiled_kernel_matches_its_twin_on_the_gpu(cupy, dtype):
    """Same inputs through the compiled kernel and through its twin on CuPy; every output buffer
    starts from the same values, so a result a kernel never writes cannot pass by chance."""
    be = backends(cupy)
    rng = np.random.default_rng(0)
    tol = 1e-5 if dtype == "float32" else 1e-12

    def dev(a):
        return cupy.asarray(np.asarray(a, dtype))

    def same(fused, twins, what):
        for a, c in zip(fused, twins, strict=True):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(c), err_msg=what)
            assert rel_err(np.nan_to_num(a), np.nan_to_num(c)) <= tol, what
    for f in ACTIVATIONS.values():
        for bias in (False, True):
            S0, b, D0 = (rng.standard_normal(shape) for shape in ((37, 53), (37, 1), (37, 53)))
            S0[3, 4] = np.nan                       # NaN must stay NaN in both forms, as in numpy.maximum
            out = {}
            for mode in ("fused", "twins"):
                S, Z, D = dev(S0), cupy.zeros((37, 53), dtype), dev(D0)
                be[mode].kernel(kernels.bias_act(f, bias))(S, dev(b) if bias else None, Z)
                Z = S if f.identity else Z
                be[mode].kernel(kernels.act_grad(f))(S, Z, D, cupy.empty((37, 53), bool), cupy.empty((37, 53), dtype))
                out[mode] = [host(a) for a in (S, Z, D)]
            same(out["fused"], out["twins"], (f.name, bias))
    for name, entry in TABLE.items():
        K, n = 10, 301
        Y = rng.standard_normal((K, n)) * 4
        Y[:, 7] = np.nan                            # a NaN column: no hit, in both forms
        Y[3, 8] = np.nan
        targets = rng.integers(0, K, n) if entry.kind == "labels" else rng.standard_normal((n, K))
        out = {}
        for mode in ("fused", "twins"):
            D, loss, hit = cupy.zeros((K, n), dtype), cupy.zeros(n, dtype), cupy.zeros(n, bool)
            s = kernels.LossScratch(be["twins"], K, n, np.dtype(dtype))
            t = cupy.asarray(targets) if entry.kind == "labels" else dev(targets)
            be[mode].kernel(entry.kernel)(dev(Y), t, D, loss, hit, 1 / 301, 0.5, s)
            out[mode] = [host(a) for a in (D, loss, hit)]
        same(out["fused"][:2], out["twins"][:2], name)
        np.testing.assert_array_equal(out["fused"][2], out["twins"][2])
        if entry.kind == "labels":
            assert not out["fused"][2][7] and not out["fused"][2][8]
    for momentum, wd in ((0.0, 0.0), (0.9, 1e-3), (0.0, 1e-50)):
        p0, g = rng.standard_normal(1000), rng.standard_normal(1000)
        p0[5] = np.inf                              # with a decay too small for float32: inf·0 = NaN in both
        out = {}
        for mode in ("fused", "twins"):
            p, v = dev(p0), (cupy.zeros(1000, dtype) if momentum else None)
            for _ in range(3):
                be[mode].kernel(kernels.SGD_KERNEL)(p, dev(g), v, 0.1, momentum, wd, cupy.empty(1000, dtype))
            out[mode] = [host(p)]
        same(out["fused"], out["twins"], ("sgd", momentum, wd))


@pytest.mark.parametrize("net", ["wide", "wide+noise", "regression"])
@pytest.mark.parametrize("mode", ["twins", "fused"])
def test_a_steady_gpu_step_takes_no_memory_from_the_pool(cupy, mode, net):
    """Also with the noise scale's records (per-example norms and |ḡ|²) and gradient clipping,
    and for regression onto one output (db of a layer of width 1 is a 1 × 1 product).  The
    pool's cached free blocks are dropped first: a temporary taken and given back during the
    step would otherwise come from the cache and go unseen."""
    from gpumlp.engine import Trainer
    from gpumlp.noise import StepRecords
    noise, loss = net == "wide+noise", "squared_error" if net == "regression" else "ce"
    sizes = [16, 32, 1] if net == "regression" else [784, 1024, 1024, 10]
    net = gpumlp.MLP(sizes, device=backends(cupy)[mode], seed=0)
    X, y = random_problem(sizes, 256, 0, "mse" if loss == "squared_error" else loss)
    trainer = Trainer(net, gpumlp.SGD(0.01, 0.9, 1e-3, clip_norm=1.0 if noise else None), loss)
    data = trainer.data(X, y)
    records = StepRecords(net, 1) if noise else None
    for _ in range(2):
        trainer.step(data, 0, data.N, records)
    cupy.cuda.get_current_stream().synchronize()
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    before = pool.used_bytes(), pool.total_bytes()
    trainer.step(data, 0, data.N, records)
    cupy.cuda.get_current_stream().synchronize()
    assert (pool.used_bytes(), pool.total_bytes()) == before


@pytest.mark.parametrize("mode", ["twins", "fused"])
def test_per_example_norms_and_the_noise_scale_on_the_gpu(cupy, mode):
    """sample_grad_sq_norms on CuPy float32 against NumPy float64 (Z_0 an F-contiguous batch
    view, as fit gives it), and fit's noise scale on the GPU against the CPU's."""
    from gpumlp.train import fit
    sizes = [32, 64, 48, 10]
    X, y = random_problem(sizes, 256, 1, "ce")
    norms = []
    for dev, dtype in ((backends(cupy)[mode], "float32"), ("cpu", "float64")):
        net = gpumlp.MLP(sizes, dtype=dtype, device=dev, seed=0)
        net.backward(gpumlp.losses.cross_entropy(net.forward(X), y)[1])
        norms.append(host(net.sample_grad_sq_norms()))
    assert rel_err(norms[0], norms[1]) < 1e-4
    b = []
    for dev, dtype in ((backends(cupy)[mode], "float32"), ("cpu", "float64")):
        net = gpumlp.MLP(sizes, dtype=dtype, device=dev, seed=0)
        h = fit(net, X, y, gpumlp.SGD(0.05), epochs=2, batch_size=32, progress=False, log=lambda line: None,
                noise_scale=True)
        b.append(h[-1]["b_simple_mean"])
    assert b[0] == pytest.approx(b[1], rel=1e-3)


@pytest.mark.parametrize("mode", ["fused", "auto"])
def test_regression_and_micro_batches_with_the_compiled_kernels(cupy, mode):
    """squared_error (real targets) and micro-batches through the compiled kernels, against the
    NumPy float64 run (GPUMLP_FUSED=1 once crashed on regression)."""
    from gpumlp.train import fit
    sizes = [8, 16, 2]
    X, T = random_problem(sizes, 96, 2, "mse")
    params = []
    for dev, dtype in ((backends(cupy)[mode], "float32"), ("cpu", "float64")):
        net = gpumlp.MLP(sizes, activation="tanh", dtype=dtype, device=dev, seed=0)
        fit(net, X, T, gpumlp.SGD(0.01, 0.9), loss="squared_error", epochs=3, batch_size=32, micro_batch=12,
            progress=False, log=lambda line: None)
        params.append(host(net.params))
    assert rel_err(params[0], params[1]) < 1e-4


def test_a_checkpoint_moves_between_gpu_and_cpu(cupy, tmp_path):
    """A checkpoint written from a GPU run loads on the CPU with the same parameters and
    momentum, and the reverse."""
    from gpumlp import io
    from gpumlp.train import TrainState, fit
    X, y = random_problem([8, 16, 3], 64, 0, "ce")
    for src, dst in ((backends(cupy)["twins"], "cpu"), ("cpu", backends(cupy)["twins"])):
        net, opt = gpumlp.MLP([8, 16, 3], dtype="float32", device=src, seed=0), gpumlp.SGD(0.1, 0.9)
        state = TrainState(0)
        fit(net, X, y, opt, epochs=2, batch_size=16, state=state, progress=False)
        io.save_checkpoint(tmp_path / "c.npz", net, opt.get_state(net), state)
        ck = io.load_checkpoint(tmp_path / "c.npz", device=dst)
        assert np.array_equal(host(ck.net.params), host(net.params))
        opt2 = gpumlp.SGD(0.1, 0.9)
        opt2.set_state(ck.net, ck.optimizer_state)
        assert np.array_equal(opt2.get_state(ck.net)["velocity"], opt.get_state(net)["velocity"])


def test_running_out_of_gpu_memory_names_the_batch_size_and_changes_nothing(cupy):
    """With the pool capped, a batch too large for the device fails at its first step (the
    workspace): an error naming the batch size, and the parameters as they were.  The cap
    counts from the pool's total after its cached free blocks are dropped: CuPy reuses a cached
    block without looking at the limit, so earlier tests' blocks would let the batch through."""
    from gpumlp.train import OutOfDeviceMemory, fit
    pool = cupy.get_default_memory_pool()
    net = gpumlp.MLP([64, 512, 10], dtype="float32", device=backends(cupy)["twins"], seed=0)
    X, y = random_problem([64, 512, 10], 4096, 0, "ce")
    before = host(net.params)
    pool.free_all_blocks()
    pool.set_limit(size=pool.total_bytes() + 4 * 2**20)      # 4 MiB more: the data fits, the batch does not
    try:
        with pytest.raises(OutOfDeviceMemory, match="batch size 4096"):
            fit(net, X[:, :1024], y[:1024], gpumlp.SGD(0.1, 0.9), epochs=1, batch_size=4096, progress=False)
    finally:
        pool.set_limit(size=0)
    assert np.array_equal(host(net.params), before)
