"""The lean step: how many kernels a training step launches, that it allocates nothing,
that every fused kernel's NumPy twin computes the homework's formulas, and that the
CUDA source of the compiled forms builds."""
import os
import shutil
import subprocess
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest

import gpumlp
from gpumlp import kernels
from gpumlp.activations import ACTIVATIONS
from gpumlp.engine import DeviceData, Trainer
from gpumlp.kernels import launch, source
from gpumlp.losses import LOSSES, softmax
from gpumlp.testing import TALLY, CountingBackend, exact, random_problem
from gpumlp.train import evaluate, fit

WIDE = [784, 1024, 1024, 10]


def steady_step(backend, sizes, n, loss="ce", opt=None, dtype="float32"):
    """A model, its data on ``backend`` and a step function, warmed up (buffers exist)."""
    net = gpumlp.MLP(sizes, dtype=dtype, device=backend, seed=0)
    X, y = random_problem(sizes, n, 0, "ce")
    trainer = Trainer(net, opt or gpumlp.SGD(0.01, momentum=0.9), loss)
    data = trainer.data(X, y)

    def step():
        trainer.step(data, 0, n)
    for _ in range(2):
        step()
    return net, step


def counted(step):
    TALLY.clear()
    step()
    return list(TALLY.gemm), list(TALLY.other), list(TALLY.allocs)


def test_a_wide_step_launches_7_fused_kernels_and_11_gemms():
    """784-1024-1024-10, softmax cross-entropy, SGD with momentum: the issue's budget is 12."""
    _, step = steady_step(CountingBackend(fused=True), WIDE, 64)
    gemm, other, allocs = counted(step)
    assert other == ["bias+relu", "bias+relu", "bias", "ce", "relu'", "relu'", "sgd"]
    assert len(other) <= 12
    # 3 forward, 2 for W^T Δ, 3 for dW and 3 GEMVs for db = Δ 1
    assert gemm == ["matmul"] * 11
    assert allocs == []


def test_weight_decay_and_other_losses_keep_the_count():
    opt = gpumlp.SGD(0.01, momentum=0.9, weight_decay=1e-3)
    for loss in ("hinge", "mse"):
        _, step = steady_step(CountingBackend(fused=True), [20, 16, 12, 5], 8, loss, opt)
        gemm, other, allocs = counted(step)
        assert other == ["bias+relu", "bias+relu", "bias", loss, "relu'", "relu'", "sgd"] and allocs == []


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_allocates_nothing_with_the_twins(activation):
    """With the switch off, CuPy would run the twins call by call: more kernels, still no buffers."""
    net = gpumlp.MLP([6, 9, 7, 4], activation=activation, output=activation, device=CountingBackend(fused=False))
    X, y = random_problem([6, 9, 7, 4], 10, 0, "ce")
    data = DeviceData(net, X, y)
    for loss in ("ce", "hinge", "mse"):
        trainer = Trainer(net, gpumlp.SGD(0.01, momentum=0.9, weight_decay=0.1), loss)

        def step(trainer=trainer):
            trainer.step(data, 0, data.N)
        step()
        gemm, other, allocs = counted(step)
        assert allocs == [], (loss, allocs)
        assert len(gemm) == 11 and len(other) > 7


def test_with_the_switch_off_a_gpu_step_runs_29_twin_kernels():
    """CuPy without the compiled kernels runs the twins call by call: 29 kernels, no buffers
    (the landed core launched about 46 and allocated 36 buffers)."""
    _, step = steady_step(CountingBackend(fused=False), WIDE, 64)
    gemm, other, allocs = counted(step)
    assert allocs == [] and len(gemm) == 11
    assert other == ["add", "maximum", "add", "maximum", "add",                       # forward
                     "equal", "max", "subtract", "multiply", "add", "take", "exp", "sum", "divide",
                     "log", "subtract", "multiply", "subtract", "multiply", "argmax", "equal",  # loss
                     "greater", "multiply", "greater", "multiply",                     # f'
                     "multiply", "add", "multiply", "subtract"], other                 # sgd


def test_a_steady_numpy_step_allocates_no_array_memory():
    """tracemalloc sees NumPy's buffers.  A step's peak stays below 64 KiB: NumPy's own
    casting buffer (8192 elements, for D ⊙ mask) and a few Python objects, far below one
    S, Z or Δ buffer (1024 × 64 float32 = 256 KiB) or the parameters (7 MiB)."""
    _, step = steady_step("cpu", WIDE, 64, opt=gpumlp.SGD(0.01, momentum=0.9, weight_decay=1e-3))
    tracemalloc.start()
    try:
        step()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"a step allocated {peak} bytes at its peak"


# -- the twins against the homework's formulas, in float64 ----------------------------------
def reference_loss(name, Y, labels, margin, inv_norm):
    """(per-column loss, ∂L/∂Y, hit) from the formulas, written plainly."""
    K, N = Y.shape
    onehot = np.eye(K)[:, labels]
    P = softmax(np, Y)
    if name == "ce":
        shifted = Y - Y.max(axis=0)
        col = np.log(np.exp(shifted).sum(axis=0)) - shifted[labels, np.arange(N)]
        dY = P - onehot
    elif name == "mse":
        col = 0.5 * ((Y - onehot) ** 2).sum(axis=0)
        dY = Y - onehot
    else:
        M = P - P[labels, np.arange(N)] + margin
        active = (M >= 0) & (onehot == 0)
        col = (M * active).sum(axis=0)
        G = active - onehot * active.sum(axis=0)
        dY = P * (G - (P * G).sum(axis=0))
    return col * inv_norm, dY * inv_norm, Y.argmax(axis=0) == labels


@pytest.mark.parametrize("name", ["ce", "hinge", "mse"])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_loss_twins_match_the_formulas(name, scale):
    rng = np.random.default_rng(3)
    K, N = 5, 11
    Y, labels = rng.standard_normal((K, N)) * scale, rng.integers(0, K, N)
    be = gpumlp.get_backend("cpu")
    D, loss, hit = np.empty((K, N)), np.empty(N), np.empty(N, bool)
    s = kernels.LossScratch(be, K, N, np.float64)
    be.kernel(LOSSES[name].kernel)(Y, labels, D, loss, hit, 1 / 7, 0.3, s)
    col, dY, hits = reference_loss(name, Y, labels, 0.3, 1 / 7)
    np.testing.assert_allclose(loss, col, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(D, dY, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(hit, hits)
    assert np.isfinite(loss).all() and np.isfinite(D).all()


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_layer_twins_match_the_formulas(activation):
    f = ACTIVATIONS[activation]
    rng = np.random.default_rng(4)
    S0, b, D0 = rng.standard_normal((6, 9)), rng.standard_normal((6, 1)), rng.standard_normal((6, 9))
    S, Z = S0.copy(), np.empty((6, 9))
    be = gpumlp.get_backend("cpu")
    be.kernel(kernels.bias_act(f, True))(S, b, Z)
    s = S0 + b
    expected = {"relu": np.maximum(s, 0), "leaky_relu": np.where(s > 0, s, 0.01 * s), "tanh": np.tanh(s),
                "sigmoid": 1 / (1 + np.exp(-s)), "linear": s}[activation]
    np.testing.assert_array_equal(S, s)
    np.testing.assert_allclose(S if f.identity else Z, expected, rtol=1e-14, atol=1e-15)
    Z = S if f.identity else Z
    D = D0.copy()
    be.kernel(kernels.act_grad(f))(S, Z, D, np.empty(D.shape, bool), np.empty(D.shape))
    fprime = {"relu": s > 0, "leaky_relu": np.where(s > 0, 1, 0.01), "tanh": 1 - np.tanh(s) ** 2,
              "sigmoid": expected * (1 - expected), "linear": np.ones_like(s)}[activation]
    np.testing.assert_allclose(D, D0 * fprime, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.5, 0.01)])
def test_the_sgd_twin_matches_the_rule_across_chunk_boundaries(momentum, weight_decay, monkeypatch):
    monkeypatch.setattr(gpumlp.SGD, "chunk", 7)              # 3 whole chunks and a ragged one
    net = gpumlp.MLP([4, 5], dtype="float64", device="cpu", seed=0)     # 25 parameters
    X, y = random_problem([4, 5], 6, 0, "ce")
    opt = gpumlp.SGD(0.1, momentum, weight_decay)
    p, v = net.params.copy(), np.zeros(25)
    for _ in range(3):
        net.backward(gpumlp.losses.cross_entropy(net.forward(X), y)[1])
        g = net.grads.copy()
        opt.step(net)
        d = g + weight_decay * p
        v = momentum * v + d if momentum else d
        p = p - 0.1 * v
        np.testing.assert_allclose(net.params, p, rtol=1e-15, atol=1e-16)
        np.testing.assert_array_equal(net.grads, g)          # the gradient is left as it was


def test_fused_and_twin_steps_agree_bit_for_bit_on_the_cpu():
    """The counting backend's fused mode runs the same twins: same numbers, fewer kernels."""
    nets = []
    for fused in (True, False):
        net, step = steady_step(CountingBackend(fused=fused), [8, 16, 12, 4], 10, "hinge")
        step()
        nets.append(net)
    np.testing.assert_array_equal(nets[0].params, nets[1].params)


# -- the CUDA source ---------------------------------------------------------------------
def test_the_cuda_source_compiles_for_sm_90(tmp_path):
    """Every instance the library can launch, built by nvcc for Hopper without a GPU."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        pytest.skip("nvcc is not installed: the CUDA source was not compiled")
    refs = ",\n".join(f"    (const void*)&{name}" for name in kernels.instantiations())
    source = tmp_path / "gpumlp_kernels.cu"
    source.write_text(kernels.CUDA_SOURCE + f"\nconst void* gpumlp_all_kernels[] = {{\n{refs}\n}};\n")
    run = subprocess.run([nvcc, "-arch=sm_90", "--std=c++14", "--fmad=false", "-c", str(source),
                          "-o", str(tmp_path / "k.o")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert len(kernels.instantiations()) == 2 * (9 + 4 + 4 + 4 + 4)      # layers, f', losses, sgd, sample_sq


# -- found in review --------------------------------------------------------------------------
def test_labels_reach_the_kernels_contiguous():
    """The compiled loss kernels read labels[c] at unit stride: a strided view is copied."""
    from gpumlp.checks import to_labels
    labels = to_labels(gpumlp.get_backend("cpu"), (np.arange(20) % 10)[::2], 10, 10)
    assert labels.flags.c_contiguous and labels.tolist() == [0, 2, 4, 6, 8, 0, 2, 4, 6, 8]


def test_cross_entropy_with_a_minus_inf_logit_off_the_label_is_finite():
    """exp(−inf) = 0 is a valid softmax term; the twin gathers Y_y as the kernel does."""
    Y = np.array([[0.5, -np.inf], [1.0, 2.0], [-np.inf, 0.0]])
    labels = np.array([1, 2])
    loss, dY = gpumlp.losses.cross_entropy(Y, labels)
    col = [np.log(np.exp(0.5) + np.exp(1.0)) - 1.0, np.log(np.exp(2.0) + 1.0) - 0.0]
    assert float(loss) == pytest.approx(np.mean(col), rel=1e-14)
    assert np.isfinite(dY).all() and dY[0, 1] == 0 and dY[2, 0] == 0


def test_fit_takes_any_optimizer_with_a_public_step():
    class HalfStep:                                   # not a gpumlp.SGD: only step(net)
        lr = 0.05

        def step(self, net):
            net.params -= self.lr * net.grads
    sizes = [4, 6, 3]
    X, y = random_problem(sizes, 30, 0, "ce")
    nets = [gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=1) for _ in range(2)]
    quiet = {"progress": False, "log": lambda line: None, "epochs": 3, "batch_size": 7}
    fit(nets[0], X, y, HalfStep(), **quiet)
    fit(nets[1], X, y, gpumlp.SGD(0.05), **quiet)
    np.testing.assert_allclose(nets[0].params, nets[1].params, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match=r"optimizer must have an update\(net, normalizer\) or a step\(net\) method"):
        fit(nets[0], X, y, object(), **quiet)


def test_a_foreign_optimizer_that_diverges_is_named_by_its_lr():
    from gpumlp.train import TrainingDiverged

    class Blowup:
        def step(self, net):
            net.params *= 1e200
    sizes = [4, 6, 3]
    X, y = random_problem(sizes, 30, 0, "ce")
    quiet = {"progress": False, "log": lambda line: None, "epochs": 2, "batch_size": 10}
    net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=1)
    with pytest.raises(TrainingDiverged, match=r"try a lower learning rate \(it is \?\)$"):
        fit(net, X, y, Blowup(), **quiet)
    Blowup.lr = 0.25
    with pytest.raises(TrainingDiverged, match=r"try a lower learning rate \(it is 0\.25\)$"):
        fit(gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=1), X, y, Blowup(), **quiet)


def test_momentum_turned_on_after_the_first_step_is_used():
    sizes = [4, 5]
    X, y = random_problem(sizes, 6, 0, "ce")
    net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=0)
    opt = gpumlp.SGD(0.1)
    net.backward(gpumlp.losses.cross_entropy(net.forward(X), y)[1])
    opt.step(net)
    opt.momentum = 0.9
    p, v = net.params.copy(), np.zeros_like(net.params)
    for _ in range(2):
        net.backward(gpumlp.losses.cross_entropy(net.forward(X), y)[1])
        v = 0.9 * v + net.grads
        p = p - 0.1 * v
        opt.step(net)
        np.testing.assert_allclose(net.params, p, rtol=1e-14, atol=1e-16)


def test_fit_evaluate_and_predict_do_not_keep_the_data_alive():
    """The private path caches each batch (a view of the data) as Z_0; once fit, evaluate or
    predict returns, no cached workspace may still hold one."""
    sizes = [4, 6, 3]
    X, y = random_problem(sizes, 40, 0, "ce")
    net = gpumlp.MLP(sizes, device="cpu", seed=0)
    for run in (lambda: fit(net, X, y, gpumlp.SGD(0.1), epochs=1, batch_size=16, X_test=X, y_test=y,
                            progress=False, log=lambda line: None),
                lambda: evaluate(net, X, y), lambda: net.predict(X, batch_size=16)):
        run()
        assert len(net._workspaces) >= 1
        assert all(ws.Z[0] is None for ws in net._workspaces.values())


# -- the CUDA source file ------------------------------------------------------------------------
def test_the_activation_block_of_the_cuda_file_is_generated_from_the_table():
    """fused.cu keeps the generated switch checked in; it must be what the table generates now
    (after editing an activation: python -m gpumlp.kernels.source)."""
    from gpumlp.kernels import source
    assert source.with_activation_block(source.CUDA_SOURCE) == source.CUDA_SOURCE
    block = source.activation_block()
    for f in ACTIVATIONS.values():
        assert f"    if (ACT == {f.code}) return {f.cuda};" in block
        assert f"    if (ACT == {f.code}) return {f.cuda_grad};" in block
    assert len({f.code for f in ACTIVATIONS.values()}) == len(ACTIVATIONS)      # one number each


def test_a_new_activation_is_one_edit_away_from_the_generated_switch():
    from gpumlp.kernels import source

    class Softsign:
        name, code, identity, scratch = "softsign", 5, False, "float"
        cuda = "s / (T(1) + (s < T(0) ? -s : s))"
        cuda_grad = "(T(1) - (z < T(0) ? -z : z)) * (T(1) - (z < T(0) ? -z : z))"
    table = dict(ACTIVATIONS, softsign=Softsign())
    text = source.with_activation_block(source.CUDA_SOURCE, table)
    assert "if (ACT == 5) return s / (T(1) + (s < T(0) ? -s : s));" in text
    assert text.count("// BEGIN GENERATED BLOCK") == 1 and text.count("// END GENERATED BLOCK") == 1
    assert text.replace(source.activation_block(table), source.activation_block()) == source.CUDA_SOURCE


def test_the_cuda_source_is_the_package_file():
    from importlib import resources

    from gpumlp.kernels import source
    assert resources.files("gpumlp.kernels").joinpath("fused.cu").read_text(encoding="utf-8") == source.CUDA_SOURCE
    assert "__global__ void sample_sq" in source.CUDA_SOURCE and "squared_error_loss" in source.CUDA_SOURCE


# -- the fused switch, the kernels' names and templates, their scratch, the launchers ----------
@pytest.mark.parametrize("value,mode", [("1", "on"), ("true", "on"), (" TRUE ", "on"), ("yes", "on"),
                                        ("on", "on"), ("ON", "on"), ("0", "off"), ("off", "off"), ("No", "off"),
                                        ("false", "off"), ("auto", "auto"), (" Auto ", "auto"), ("", "auto"),
                                        (None, "auto")])
def test_the_fused_switch(monkeypatch, value, mode):
    if value is None:
        monkeypatch.delenv("GPUMLP_FUSED", raising=False)
    else:
        monkeypatch.setenv("GPUMLP_FUSED", value)
    assert kernels.fused_mode() == mode
    assert kernels.fused_mode(True) == "on" and kernels.fused_mode(False) == "off"
    assert kernels.fused_mode("auto") == "auto" and kernels.fused_mode(0) == "off"


def test_a_bad_fused_switch_is_an_error(monkeypatch):
    monkeypatch.setenv("GPUMLP_FUSED", "2")
    with pytest.raises(ValueError, match=exact("$GPUMLP_FUSED must be auto, 1 (compiled kernels, unchecked) or 0 "
                                               "(the twins); got '2'")):
        kernels.fused_mode()
    with pytest.raises(ValueError, match="fused must be auto"):
        kernels.fused_mode("maybe")


def test_every_kernel_names_a_compiled_template():
    """Each kernel's name, and its CUDA template, which must be one of the instances
    compiled (``instantiations()``) for both float and double."""
    compiled = kernels.instantiations()
    assert len(compiled) == len(set(compiled)) == 50
    expected = {  # activation: (bias_act without bias, with bias, act_grad, f' scratch)
        "linear": (("linear", None), ("bias", "bias_act<{T}, 0, 1>"), ("linear'", None), None),
        "relu": (("relu", "bias_act<{T}, 1, 0>"), ("bias+relu", "bias_act<{T}, 1, 1>"),
                 ("relu'", "act_grad<{T}, 1>"), "bool"),
        "leaky_relu": (("leaky_relu", "bias_act<{T}, 2, 0>"), ("bias+leaky_relu", "bias_act<{T}, 2, 1>"),
                       ("leaky_relu'", "act_grad<{T}, 2>"), "float"),
        "tanh": (("tanh", "bias_act<{T}, 3, 0>"), ("bias+tanh", "bias_act<{T}, 3, 1>"),
                 ("tanh'", "act_grad<{T}, 3>"), "float"),
        "sigmoid": (("sigmoid", "bias_act<{T}, 4, 0>"), ("bias+sigmoid", "bias_act<{T}, 4, 1>"),
                    ("sigmoid'", "act_grad<{T}, 4>"), "float"),
    }
    templates = []
    for name, (plain, biased, grad, scratch) in expected.items():
        f = ACTIVATIONS[name]
        for k, (kname, cuda) in ((kernels.bias_act(f, False), plain), (kernels.bias_act(f, True), biased),
                                 (kernels.act_grad(f), grad)):
            assert (k.name, k.cuda) == (kname, cuda)
            assert repr(k) == f"<gpumlp kernel {kname}>"
            templates += [cuda] if cuda else []
        assert f.scratch == scratch                 # what the workspace lends its twin
    templates += [k.cuda for k in kernels.LOSS_KERNELS.values()] + ["squared_error_loss<{T}>"]
    assert [k.cuda for k in kernels.TARGET_LOSS_KERNELS.values()] == ["squared_error_loss<{T}>"]
    templates += [f"sgd<{{T}}, {m}, {d}>" for m in "01" for d in "01"]
    templates += [f"sample_sq<{{T}}, {b}, {f}>" for b in "01" for f in "01"]
    assert (kernels.SGD_KERNEL.cuda, kernels.SAMPLE_SQ_KERNEL.cuda) == ("sgd<{T}, {M}, {D}>",
                                                                        "sample_sq<{T}, {B}, {F}>")
    instances = [t.format(T=T) for t in templates for T in ("float", "double")]
    assert sorted(instances) == sorted(compiled)


def test_loss_scratch_is_in_the_given_dtype():
    s = kernels.LossScratch(gpumlp.get_backend("cpu"), 3, 4, np.float32)
    for a in (s.onehot, s.a, s.b):
        assert a.shape == (3, 4) and a.dtype == np.float32
    for a in (s.m, s.sum, s.py):
        assert a.shape == (1, 4) and a.dtype == np.float32
    assert s.argmax.dtype == np.int64
    np.testing.assert_array_equal(s.rows, [[0], [1], [2]])


def test_each_kernel_fills_only_the_scratch_it_is_not_given():
    cpu = gpumlp.get_backend("cpu")
    D = np.ones((3, 4))
    given = kernels.LossScratch(cpu, 3, 4, np.float64)
    args = (D, np.zeros(4, np.int64), D, np.ones(4), np.ones(4, bool), 0.25, 1.0, given)
    assert kernels.LOSS_KERNELS["ce"].scratch(cpu, args) is args
    filled = kernels.LOSS_KERNELS["ce"].scratch(cpu, args[:7] + (None,))
    assert isinstance(filled[7], kernels.LossScratch) and filled[7].onehot.shape == (3, 4)
    p, tmp = np.ones(5, np.float32), np.ones(5, np.float32)
    args = (p, np.ones(6), None, 0.1, 0.0, 0.0, tmp)
    assert kernels.SGD_KERNEL.scratch(cpu, args) is args
    filled = kernels.SGD_KERNEL.scratch(cpu, args[:6] + (None,))
    assert filled[6].shape == (5,) and filled[6].dtype == np.float32
    Z = np.ones((7, 4))
    filled = kernels.SAMPLE_SQ_KERNEL.scratch(cpu, (D, Z, True, False, np.ones(4), None, None, None))
    assert [a.shape for a in filled[5:]] == [(7, 4), (4,), (4,)]
    relu = kernels.act_grad(ACTIVATIONS["relu"])
    mask, tmp = np.ones((3, 4), bool), np.ones((3, 4))
    assert relu.scratch(cpu, (D, D, D, mask, tmp))[3:] == (mask, tmp)
    filled = relu.scratch(cpu, (D, D, D, None, None))
    assert ((filled[3].dtype, filled[3].shape, filled[4].dtype, filled[4].shape)
            == (np.bool_, (3, 4), np.float64, (3, 4)))


def test_the_module_is_built_once_with_the_options_and_every_function_fetched_once():
    built, fetched = [], []

    class Module:
        def __init__(self, code, options=(), name_expressions=()):
            built.append((code, options, tuple(name_expressions)))

        def get_function(self, name):
            fetched.append(name)
            return lambda grid, block, args: None
    fake = types.ModuleType("fakecupy")
    fake.RawModule = Module
    run = launch.sgd(fake, kernels.SGD_KERNEL)
    p = np.zeros(3, np.float32)
    for _ in range(3):
        run(p, p, None, 0.1, 0.0, 0.0)
    assert built == [(source.CUDA_SOURCE, ("--std=c++14", "--fmad=false"), tuple(source.instantiations()))]
    assert fetched == ["sgd<float, 0, 0>"]
    assert launch.build(fake) == len(source.instantiations()) and len(built) == 1
    assert fetched[1:] == source.instantiations()                        # build fetches every instance
    del launch._modules[fake]


def test_the_grid_covers_n_with_the_fewest_blocks_up_to_the_limit():
    assert launch._grid(1) == ((1,), (256,)) and launch._grid(0) == ((1,), (256,))
    assert launch._grid(256) == ((1,), (256,)) and launch._grid(257) == ((2,), (256,))
    assert launch._grid(256 * 65535) == ((65535,), (256,)) and launch._grid(10**9) == ((65535,), (256,))


def test_the_source_is_read_from_the_package_file():
    assert source._read() == (Path(source.__file__).with_name("fused.cu")).read_text(encoding="utf-8")
    assert "‖" in source._read()                 # not ASCII: read as UTF-8 whatever the locale
