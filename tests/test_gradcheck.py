"""Finite-difference checks of every gradient, in float64.

Each parameter is perturbed in the flat buffer ``net.params`` and the loss is
re-evaluated with a 4th-order central difference, so both dW and db are checked.
Also a non-linear output layer (and Δ_L against its formula) and non-zero biases.
Problems are drawn so that no ReLU input and no hinge sits within reach of its
kink, where the derivative is not defined.
"""
import numpy as np
import pytest

import gpumlp
from gpumlp.activations import ACTIVATIONS
from gpumlp.losses import softmax
from gpumlp.testing import host, random_biases, random_problem

LOSSES = ["mse", "hinge", "ce"]
H = 1e-3


def loss_fn(name, margin=0.3):
    if name == "mse":
        return lambda Y, t: gpumlp.losses.mse(Y, t)
    if name == "hinge":
        return lambda Y, t: gpumlp.losses.hinge(Y, t, margin=margin)
    return gpumlp.losses.cross_entropy


def numeric_gradient(net, X, t, fn):
    p = net.params
    grad = np.zeros(p.shape[0])
    for i in range(p.shape[0]):
        x0 = float(p[i])
        f = []
        for step in (2 * H, H, -H, -2 * H):
            p[i] = x0 + step
            f.append(float(fn(net.forward(X), t)[0]))
        p[i] = x0
        grad[i] = (8 * (f[1] - f[2]) - (f[0] - f[3])) / (12 * H)
    return grad


def away_from_kinks(net, X, t, loss, margin):
    net.forward(X)
    for k, f in enumerate(net.f):
        reach = 20 * H * (1 + np.abs(host(net.Z[k])).max())
        if f.name in ("relu", "leaky_relu") and np.min(np.abs(host(net.S[k]))) < reach:
            return False
    if loss == "hinge":
        P = softmax(np, host(net.Z[-1]))
        M = P - P[t, np.arange(len(t))] + margin
        M[t, np.arange(len(t))] = 1.0
        if np.min(np.abs(M)) < 1e-2:
            return False
    return True


def checked_problem(sizes, n, activation, loss, bias, margin=0.3, device="cpu"):
    for seed in range(200):
        net = gpumlp.MLP(sizes, activation=activation, bias=bias, dtype="float64", device=device, seed=seed)
        X, t = random_problem(sizes, n, seed, loss)
        if away_from_kinks(net, X, t, loss, margin):
            return net, X, t
    raise AssertionError("no kink-free problem found")


def max_rel_err(analytic, numeric):
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), 1e-300)
    both_zero = (analytic == 0) & (np.abs(numeric) < 1e-13)
    return float(np.max(np.where(both_zero, 0.0, np.abs(analytic - numeric) / denom)))


SHAPES = {  # (sizes, N): depths 1 to 4, N = 1 and d = 1 included
    "mse": [([1, 1], 1), ([3, 1], 4), ([1, 4, 1], 1), ([4, 5, 3], 6), ([3, 1, 4, 2], 5), ([2, 3, 4, 3, 2], 3)],
    "ce": [([1, 2], 1), ([3, 3], 4), ([1, 4, 3], 1), ([4, 5, 3], 6), ([3, 1, 4, 2], 5), ([2, 3, 4, 3, 4], 3)],
}
SHAPES["hinge"] = SHAPES["ce"]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_gradients_match_finite_differences(activation, loss, bias):
    fn = loss_fn(loss)
    for sizes, n in SHAPES[loss]:
        net, X, t = checked_problem(sizes, n, activation, loss, bias)
        value, dY = fn(net.forward(X), t)
        net.backward(dY)
        analytic = host(net.grads).copy()
        numeric = numeric_gradient(net, X, t, fn)
        assert np.any(analytic != 0)
        err = max_rel_err(analytic, numeric)
        assert err < 1e-6, (sizes, n, err)


@pytest.mark.parametrize("loss", LOSSES)
def test_gradients_on_the_strict_device_backend(loss):
    from gpumlp.testing import strict_backend
    backend = strict_backend()
    fn = loss_fn(loss)
    net, X, t = checked_problem([3, 4, 3], 5, "tanh", loss, True, device=backend)
    net.backward(fn(net.forward(X), t)[1])
    assert max_rel_err(host(net.grads), numeric_gradient(net, X, t, fn)) < 1e-6


@pytest.mark.parametrize("margin", [1.0, 1.5, 3.0])
def test_hinge_closed_form_when_every_hinge_is_active(margin):
    """For C >= 1 every hinge is active: L_n = 1 − K p_y + (K − 1) C."""
    rng = np.random.default_rng(1)
    K, N = 5, 7
    Y, labels = rng.standard_normal((K, N)) * 3, rng.integers(0, K, N)
    P = softmax(np, Y)
    p_y = P[labels, np.arange(N)]
    loss, dY = gpumlp.losses.hinge(Y, labels, margin=margin)
    assert float(loss) == pytest.approx(np.mean(1 - K * p_y + (K - 1) * margin), rel=1e-14)
    # then ∂L/∂Y = −K ∂p_y/∂Y / N = −K p_y (onehot − p) / N
    onehot = np.eye(K)[:, labels]
    np.testing.assert_allclose(dY, -K * p_y * (onehot - P) / N, rtol=1e-12, atol=1e-15)


def test_hinge_counts_only_false_classes_within_the_margin():
    Y = np.log(np.array([[0.7, 0.1], [0.2, 0.6], [0.1, 0.3]]))     # p = softmax(Y) exactly these
    labels = np.array([0, 1])
    loss, _ = gpumlp.losses.hinge(Y, labels, margin=0.4)
    # column 0: p_y = .7: j=1: .2-.7+.4 < 0 → 0; j=2: .1-.7+.4 < 0 → 0
    # column 1: p_y = .6: j=0: .1-.6+.4 < 0 → 0; j=2: .3-.6+.4 = .1
    assert float(loss) == pytest.approx(0.1 / 2, rel=1e-12)


@pytest.mark.parametrize("draw", range(12))
def test_gradients_on_randomly_drawn_networks(draw):
    """Random depth (1-4), widths (1-6), batch size (1-8), activation, loss and bias."""
    rng = np.random.default_rng(1000 + draw)
    loss = ["mse", "hinge", "ce"][draw % 3]
    depth = int(rng.integers(1, 5))
    sizes = [int(d) for d in rng.integers(1, 7, depth + 1)]
    if loss != "mse":
        sizes[-1] = max(sizes[-1], 2)
    activation = str(rng.choice(sorted(ACTIVATIONS)))
    fn = loss_fn(loss)
    net, X, t = checked_problem(sizes, int(rng.integers(1, 9)), activation, loss, bool(draw % 2))
    net.backward(fn(net.forward(X), t)[1])
    analytic = host(net.grads).copy()
    assert max_rel_err(analytic, numeric_gradient(net, X, t, fn)) < 1e-6, (sizes, activation, loss)


@pytest.mark.parametrize("output", ["tanh", "sigmoid"])
def test_gradient_with_a_nonlinear_output_layer_matches_finite_differences(output):
    sizes, N = [3, 5, 4, 2], 6
    rng = np.random.default_rng(11)
    net = gpumlp.MLP(sizes, activation="tanh", output=output, dtype="float64", device="cpu", seed=3)
    random_biases(net, rng, 0.5)
    X, T = rng.standard_normal((sizes[0], N)), rng.standard_normal((sizes[-1], N))

    def loss(Y, t=T):
        return gpumlp.losses.mse(Y, t)
    net.backward(loss(net.forward(X))[1])
    analytic = host(net.grads).copy()
    numeric = numeric_gradient(net, X, T, loss)
    assert np.abs(numeric).max() > 1e-3
    assert max_rel_err(analytic, numeric) < 1e-6
    # Δ_L itself: ∂L/∂Y ⊙ f_L'(S_L), with f_L' written out from S_L
    net.backward(loss(net.forward(X))[1])
    S_L, Y = host(net.S[-1]), host(net.Z[-1])
    f_prime = 1 - np.tanh(S_L) ** 2 if output == "tanh" else np.exp(-S_L) / (1 + np.exp(-S_L)) ** 2
    np.testing.assert_allclose(host(net.deltas[-1]), (Y - T) / N * f_prime, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
def test_gradient_with_nonzero_biases_matches_finite_differences(activation):
    sizes, N = [3, 6, 5, 3], 5
    for seed in range(200):
        rng = np.random.default_rng(seed)
        net = gpumlp.MLP(sizes, activation=activation, dtype="float64", device="cpu", seed=seed)
        random_biases(net, rng)
        X, labels = rng.standard_normal((sizes[0], N)), rng.integers(0, sizes[-1], N)
        if away_from_kinks(net, X, labels, "ce", margin=0.3):
            break
    else:
        raise AssertionError("no kink-free problem found")
    loss = gpumlp.losses.cross_entropy
    net.backward(loss(net.forward(X), labels)[1])
    analytic = host(net.grads).copy()
    assert max_rel_err(analytic, numeric_gradient(net, X, labels, loss)) < 1e-6
