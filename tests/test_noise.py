"""Per-example gradient norms from the cached Δ and Z, and the gradient noise scale.

The norms are checked against explicit per-sample gradients (one-column backward
passes; torch.func's vmap(grad) when PyTorch is installed).  The estimator is
checked on problems whose tr(Σ) and |G|² are known exactly, with tolerances of a
few standard errors of the mean over the draws, and under the sampling training
uses (each epoch a permutation, cut into consecutive batches).
"""
import json
import math

import numpy as np
import pytest

import gpumlp
from gpumlp.losses import LOSSES
from gpumlp.noise import NoiseScale, estimate
from gpumlp.testing import TALLY, CountingBackend, host
from gpumlp.train import fit

Z_SIGMAS = 5.0          # a mean is within 5 standard errors: a false alarm is a 1-in-3.5-million event


def _per_sample_sq_norms(net, X, labels, loss, normalizer=None):
    """‖column n's term of (dW, db)‖² for a mean loss over the N columns, one
    one-column backward pass each (the loss normalised by the whole N, or by
    ``normalizer``)."""
    N, out = X.shape[1], []
    for n in range(N):
        Y = net.forward(X[:, n:n + 1])
        _, dY = LOSSES[loss](Y, labels[n:n + 1], normalizer=normalizer or N)
        net.backward(dY)
        out.append(float(np.sum(host(net.grads).astype(np.float64) ** 2)))
    return np.array(out)


@pytest.mark.parametrize("loss", ["ce", "hinge", "mse"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation,output", [("relu", "linear"), ("tanh", "sigmoid"), ("leaky_relu", "linear")])
def test_sample_norms_equal_one_column_backward_passes(backend, loss, bias, activation, output):
    sizes, N = [5, 7, 6, 4], 9
    rng = np.random.default_rng(3)
    X, labels = rng.standard_normal((sizes[0], N)), rng.integers(0, sizes[-1], N)
    net = gpumlp.MLP(sizes, activation=activation, output=output, bias=bias, dtype="float64",
                     device=backend, seed=1)
    if bias:
        net.set_params(net.get_params()[0], [rng.standard_normal((d, 1)) for d in sizes[1:]])
    oracle = _per_sample_sq_norms(net, X, labels, loss)
    net.backward(LOSSES[loss](net.forward(X), labels)[1])
    s = host(net.sample_grad_sq_norms())
    assert s.shape == (N,)
    np.testing.assert_allclose(s, oracle, rtol=1e-10, atol=0)
    # the per-example gradient g_n = ∇ℓ_n (its loss not divided by N) has |g_n|² = N² s_n
    if loss == "ce" and activation == "relu":
        g_sq = _per_sample_sq_norms(net, X, labels, loss, normalizer=1)
        np.testing.assert_allclose(N ** 2 * s, g_sq, rtol=1e-10)


def test_sample_norms_of_one_layer_are_the_outer_product_norm():
    """L = 1 by hand: dW = Δ X^T, so column n's term has norm² ‖Δ[:,n]‖² (‖x_n‖² + 1)."""
    net = gpumlp.MLP([3, 2], dtype="float64", device="cpu", seed=0)
    X = np.array([[1.0, 0.0], [2.0, -1.0], [0.0, 3.0]])
    dY = np.array([[0.5, -2.0], [1.0, 0.25]])
    net.forward(X)
    net.backward(dY)
    expected = (dY ** 2).sum(0) * ((X ** 2).sum(0) + 1)           # [1.25 * 6, 4.0625 * 11]
    np.testing.assert_allclose(host(net.sample_grad_sq_norms()), expected, rtol=1e-15)
    np.testing.assert_allclose(expected, [7.5, 44.6875])
    # and the sum over n of the terms is the batch gradient: Σ_n term_n = (dW, db)
    assert np.allclose(host(net.grads), np.concatenate([(dY @ X.T).ravel(), dY.sum(1)]))


def test_sample_norms_need_a_fresh_backward_and_return_a_copy():
    net = gpumlp.MLP([3, 4, 2], dtype="float64", device="cpu", seed=0)
    X = np.ones((3, 5))
    with pytest.raises(RuntimeError, match="backward"):
        net.sample_grad_sq_norms()
    net.backward(LOSSES["ce"](net.forward(X), np.zeros(5, int))[1])
    a = net.sample_grad_sq_norms()
    b = net.sample_grad_sq_norms()
    a[...] = -1
    assert np.all(b > 0) and np.all(net.sample_grad_sq_norms() == b)
    net.forward(X)
    with pytest.raises(RuntimeError, match="backward"):
        net.sample_grad_sq_norms()


@pytest.mark.torch
def test_sample_norms_equal_torch_func_per_sample_gradients():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from torch.func import functional_call, grad, vmap
    sizes, N = [6, 8, 5, 3], 11
    rng = np.random.default_rng(7)
    X, labels = rng.standard_normal((sizes[0], N)), rng.integers(0, sizes[-1], N)
    net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=2)
    W, _ = net.get_params()
    b = [rng.standard_normal((d, 1)) for d in sizes[1:]]
    net.set_params(W, b)
    net.backward(LOSSES["ce"](net.forward(X), labels)[1])
    s = host(net.sample_grad_sq_norms())

    layers = []
    for k in range(len(W)):
        lin = torch.nn.Linear(sizes[k], sizes[k + 1]).double()
        layers += [lin] if k == len(W) - 1 else [lin, torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers)
    params = {}
    for k, i in enumerate(range(0, len(layers), 2)):
        params[f"{i}.weight"] = torch.tensor(W[k])
        params[f"{i}.bias"] = torch.tensor(b[k].ravel())

    def loss_one(p, x, y):          # ℓ_n of one sample: its per-example gradient g_n
        out = functional_call(model, p, (x[None, :],))
        return torch.nn.functional.cross_entropy(out, y[None])

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, torch.tensor(X.T), torch.tensor(labels))
    g_sq = sum((v.reshape(N, -1) ** 2).sum(1) for v in g.values()).numpy()
    np.testing.assert_allclose(N ** 2 * s, g_sq, rtol=1e-10)


# -- the estimator on known problems -------------------------------------------------------

def _finite_population(D=60, p=4, seed=0):
    """D fixed per-example gradients with a small mean: |G|² and tr(Σ) exactly."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((D, p)) + 0.3
    G = g.mean(0)
    return g, float(G @ G), float(np.mean(np.sum((g - G) ** 2, axis=1)))


def _batch_values(g_batch):
    """What a training step measures: Σ_n s_n (terms g_n / B) and |ḡ|²."""
    B = len(g_batch)
    mean = g_batch.mean(0)
    return float(np.sum(g_batch ** 2) / B ** 2), float(mean @ mean), B


def _within(samples, exact):
    """|mean − exact| in standard errors of the mean."""
    samples = np.asarray(samples)
    return abs(samples.mean() - exact) / (samples.std(ddof=1) / math.sqrt(len(samples)))


def _draws_without_replacement(g, B, epochs, seed):
    """Training's sampling: each epoch a permutation of the D, cut into batches of B."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(g))
        for s in range(0, len(g), B):
            yield _batch_values(g[order[s:s + B]])


@pytest.mark.parametrize("B", [2, 7, 25])
def test_estimates_are_unbiased_under_training_sampling(B):
    g, G2, trace = _finite_population()
    est = np.array([estimate(*v, population=len(g)) for v in _draws_without_replacement(g, B, 3000, seed=B)])
    assert _within(est[:, 0], trace) < Z_SIGMAS
    assert _within(est[:, 1], G2) < Z_SIGMAS
    # the last batch of an epoch (60 % 7 = 4 columns, 60 % 25 = 10) used its own B: no bias either


def test_without_the_finite_population_factor_g2_is_biased_low_by_about_trace_over_D():
    """The power of the test above: the i.i.d. formula, on the same draws, misses |G|²."""
    g, G2, trace = _finite_population()
    D, B = len(g), 7
    draws = list(_draws_without_replacement(g, B, 3000, seed=1))
    iid = np.array([estimate(*v) for v in draws])
    assert _within(iid[:, 1], G2) > 3 * Z_SIGMAS
    bias = iid[:, 1].mean() - G2
    assert bias == pytest.approx(-trace / (D - 1), rel=0.1)     # the derivation's −tr(Σ)/(D − 1)


def test_estimates_are_unbiased_for_iid_draws():
    g, G2, trace = _finite_population()
    rng, B = np.random.default_rng(2), 5
    est = np.array([estimate(*_batch_values(g[rng.integers(0, len(g), B)])) for _ in range(20000)])
    assert _within(est[:, 0], trace) < Z_SIGMAS
    assert _within(est[:, 1], G2) < Z_SIGMAS


def test_a_full_batch_gives_the_exact_values():
    g, G2, trace = _finite_population()
    t, g2 = estimate(*_batch_values(g), population=len(g))
    assert t == pytest.approx(trace, rel=1e-12) and g2 == pytest.approx(G2, rel=1e-12)


def test_linear_least_squares_with_gaussian_inputs():
    """ℓ(w) = ½ (x·w − y)² with x ~ N(0, I_p), y = x·w* + ε, ε ~ N(0, σ²): at w, with
    r = w − w*, g = x (x·r − ε), so G = r, and E|g|² = (p + 2)|r|² + p σ², hence
    tr(Σ) = (p + 1)|r|² + p σ², in closed form.  Draws are i.i.d."""
    rng = np.random.default_rng(4)
    p, sigma, B = 5, 0.7, 8
    r = rng.standard_normal(p) * 0.2
    G2, trace = float(r @ r), float((p + 1) * (r @ r) + p * sigma ** 2)
    est = []
    for _ in range(20000):
        x = rng.standard_normal((B, p))
        g = x * (x @ r - sigma * rng.standard_normal(B))[:, None]
        est.append(estimate(*_batch_values(g)))
    est = np.array(est)
    assert _within(est[:, 0], trace) < Z_SIGMAS
    assert _within(est[:, 1], G2) < Z_SIGMAS


def _network_problem(D=40):
    sizes = [4, 6, 3]
    rng = np.random.default_rng(5)
    X, labels = rng.standard_normal((sizes[0], D)), rng.integers(0, sizes[-1], D)
    return sizes, X, labels


def _exact_per_example_gradients(net, X, labels):
    rows = []
    for n in range(X.shape[1]):
        net.backward(LOSSES["ce"](net.forward(X[:, n:n + 1]), labels[n:n + 1])[1])
        rows.append(host(net.grads).astype(np.float64))
    return np.array(rows)


def test_the_network_estimator_is_unbiased_under_training_sampling():
    """On a real net: the exact tr(Σ) and |G|² from all D per-example gradients, against
    the estimates from sample_grad_sq_norms and the batch gradient, batch by batch."""
    sizes, X, labels = _network_problem()
    net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=0)
    g = _exact_per_example_gradients(net, X, labels)
    G = g.mean(0)
    G2, trace = float(G @ G), float(np.mean(np.sum((g - G) ** 2, axis=1)))
    D, B = X.shape[1], 6
    rng, est = np.random.default_rng(0), []
    for _ in range(1500):
        order = rng.permutation(D)
        for s in range(0, D, B):
            cols = order[s:s + B]
            net.backward(LOSSES["ce"](net.forward(X[:, cols]), labels[cols])[1])
            grads = host(net.grads)
            est.append(estimate(host(net.sample_grad_sq_norms()).sum(), grads @ grads, len(cols), D))
    est = np.array(est)
    assert _within(est[:, 0], trace) < Z_SIGMAS
    assert _within(est[:, 1], G2) < Z_SIGMAS


def test_fit_measures_what_the_public_path_measures():
    """fit(noise_scale=True) with a learning rate too small to move a float64 weight sees
    the same batches (same seed, same permutations) as a hand-written loop."""
    sizes, X, labels = _network_problem(D=37)
    D, B, epochs = X.shape[1], 8, 4
    net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=0)
    W0, b0 = net.get_params()
    history = fit(net, X, labels, gpumlp.SGD(1e-300), epochs=epochs, batch_size=B, seed=3,
                  progress=False, log=lambda line: None, noise_scale=True)
    assert all(np.array_equal(a, b) for a, b in zip(net.get_params()[0], W0, strict=True))

    ref, rng = NoiseScale(population=D), np.random.default_rng(3)
    for epoch in range(epochs):
        order = rng.permutation(D)
        for s in range(0, D, B):
            cols = order[s:s + B]
            net.backward(LOSSES["ce"](net.forward(X[:, cols]), labels[cols])[1])
            grads = host(net.grads)
            ref.update(host(net.sample_grad_sq_norms()).sum(), grads @ grads, len(cols))
        h = history[epoch]
        assert h["b_simple"] == pytest.approx(ref.b_simple, rel=1e-9)
        assert h["b_simple_mean"] == pytest.approx(ref.b_simple_mean, rel=1e-9)
        assert h["b_simple_start"] == pytest.approx(ref.b_simple_start, rel=1e-9)
    assert ref.steps == epochs * math.ceil(D / B) and ref.samples == epochs * D


def test_noise_scale_averages_are_ratios_of_averages():
    ns = NoiseScale(population=None, decay=0.5)
    # two batches of B = 2: (tr, G2) = (V, g2 − V/2) with V = 2 (m − g2), m = 2 Σs
    ns.update([1.0, 2.0], [1.8, 3.0], 2)
    t, _g2 = np.array([0.4, 2.0]), np.array([1.6, 2.0])
    assert ns.b_simple_mean == pytest.approx(2.4 / 3.6)              # not the mean of ratios, 0.625
    ema_t = (0.5 * 0.5 * t[0] + 0.5 * t[1]) / 0.75
    assert ns.trace == pytest.approx(ema_t)
    assert ns.b_simple_start == pytest.approx(0.4 / 1.6)   # start_samples = 1 without a population: the first batch
    assert NoiseScale().b_simple is None


def test_noise_scale_skips_batches_of_one_and_reports_unresolved_as_none():
    ns = NoiseScale(population=10)
    ns.update(1.0, 1.0, 1)
    assert ns.steps == 0 and ns.samples == 1 and ns.b_simple is None
    ns.update(0.1, 0.001, 5)          # m = 0.5, V = 5/4 · 0.499: |G|² estimate < 0
    assert ns.grad_sq < 0 and ns.b_simple is None and ns.b_simple_mean is None
    with pytest.raises(ValueError, match="population"):
        NoiseScale(population=1)
    with pytest.raises(ValueError, match="decay"):
        NoiseScale(decay=1.0)
    with pytest.raises(ValueError, match="noise_scale"):
        fit(gpumlp.MLP([2, 2], device="cpu"), np.ones((2, 4)), [0, 1, 0, 1], gpumlp.SGD(0.1), noise_scale="yes")


def test_a_step_with_noise_records_allocates_nothing():
    """The noise-scale records are per-step device rows: a steady step still allocates no
    buffer, and the records cost only a sample_sq kernel per layer and two dot products
    (cuBLAS's on a GPU; 1 × 1 GEMMs here)."""
    from gpumlp.engine import Trainer
    from gpumlp.noise import StepRecords
    net = gpumlp.MLP([20, 16, 16, 4], dtype="float32", device=CountingBackend(fused=True), seed=0)
    trainer = Trainer(net, gpumlp.SGD(0.1, 0.9), "ce")
    data = trainer.data(np.zeros((20, 32)), np.zeros(32, int))
    counts = []
    for records in (None, StepRecords(net, 3)):
        for i in range(3):
            TALLY.clear()
            trainer.step(data, 0, 32, records, i)
        assert TALLY.allocs == []
        counts.append((len(TALLY.gemm), list(TALLY.other)))
    (gemm0, other0), (gemm1, other1) = counts
    assert gemm1 == gemm0 + 2                          # Σ_n s_n and |ḡ|², dot products (cuBLAS's on a GPU)
    extra = list(other1)
    for name in other0:
        extra.remove(name)
    assert extra == ["sample_sq"] * 3                  # one compiled kernel per layer


def test_cli_logs_the_noise_scale_each_epoch(tmp_path, capsys):
    """gpumlp train --noise-scale on the digits: B_simple on every epoch's line and in the
    metrics history.  McCandlish et al. found about 50 at the start of MNIST training,
    growing to about 900; the digits land in the same decades (tens to thousands)."""
    from gpumlp import cli
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "4", "--noise-scale", "--no-progress",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("B_simple") == 4 + 1 and "gradient noise scale B_simple" in printed
    history = json.loads((out / "metrics.json").read_text())["history"]
    for h in history:
        assert 10 < h["b_simple"] < 10_000 and 10 < h["b_simple_mean"] < 10_000
    assert history[0]["b_simple_start"] == history[-1]["b_simple_start"]
    assert history[-1]["b_simple"] > history[0]["b_simple_start"]           # it grows as training goes on


def test_without_the_flag_nothing_is_measured(capsys):
    from gpumlp import cli
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress"]) == 0
    assert "B_simple" not in capsys.readouterr().out


def test_a_foreign_optimizer_gets_the_same_noise_scale():
    sizes, X, labels = _network_problem(D=30)

    class Plain:                        # only the public step(net)
        lr = 1e-300

        def step(self, net):
            gpumlp.SGD(self.lr).step(net)
    out = []
    for opt in (gpumlp.SGD(1e-300), Plain()):
        net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=0)
        out.append(fit(net, X, labels, opt, epochs=2, batch_size=7, progress=False, log=lambda line: None,
                       noise_scale=True)[-1]["b_simple"])
    assert out[0] == pytest.approx(out[1], rel=1e-12)


def test_after_fit_the_norms_ask_for_a_new_pass():
    """fit releases the cached batches (they are views of the caller's data): the norms then
    say what they need instead of failing inside the computation."""
    sizes, X, labels = _network_problem(D=20)
    net = gpumlp.MLP(sizes, device="cpu", seed=0)
    fit(net, X, labels, gpumlp.SGD(0.1), epochs=1, batch_size=8, progress=False, log=lambda line: None)
    with pytest.raises(RuntimeError, match="backward"):
        net.sample_grad_sq_norms()
    with pytest.raises(RuntimeError, match="forward"):
        net.backward(np.zeros((3, 4)))


def test_the_estimator_and_its_settings_are_checked():
    with pytest.raises(ValueError, match="fewer than 2"):
        estimate(1.0, 1.0, 1)
    with pytest.raises(ValueError, match="fewer than 2"):
        estimate([1.0, 1.0], [1.0, 1.0], [4, 1], population=10)
    for kw, match in [(dict(population=True), "population"), (dict(decay=np.float64(1.5)), "decay"),
                      (dict(start_samples=0), "start_samples"), (dict(start_samples=2.5), "start_samples")]:
        with pytest.raises(ValueError, match=match):
            NoiseScale(**kw)
    assert NoiseScale(decay=np.float32(0.5)).decay == 0.5
    sizes, X, labels = _network_problem(D=20)
    with pytest.raises(ValueError, match="population is 30"):
        fit(gpumlp.MLP(sizes, device="cpu"), X, labels, gpumlp.SGD(0.1), progress=False,
            noise_scale=NoiseScale(population=30))
