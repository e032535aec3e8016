"""PyTorch autograd as an independent oracle, in float64 (skipped without torch)."""
import numpy as np
import pytest

import gpumlp
from gpumlp.activations import ACTIVATIONS
from gpumlp.testing import host, random_problem

torch = pytest.importorskip("torch", reason="PyTorch is not installed (optional oracle)")
F = torch.nn.functional
pytestmark = pytest.mark.torch

TORCH_ACT = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
             "leaky_relu": lambda s: F.leaky_relu(s, 0.01), "linear": lambda s: s}


def torch_loss(name, Y, t, margin):
    """The same losses, written with torch's own functions (samples are columns of Y)."""
    N = Y.shape[1]
    if name == "mse":
        return 0.5 * ((Y - torch.from_numpy(t)) ** 2).sum() / N
    labels = torch.from_numpy(t)
    if name == "ce":
        return F.cross_entropy(Y.T, labels)
    K = Y.shape[0]
    return K * F.multi_margin_loss(torch.softmax(Y.T, dim=1), labels, p=1, margin=margin)


def gpumlp_loss(name, Y, t, margin):
    if name == "mse":
        return gpumlp.losses.mse(Y, t)
    if name == "ce":
        return gpumlp.losses.cross_entropy(Y, t)
    return gpumlp.losses.hinge(Y, t, margin=margin)


def torch_pass(net, X, t, loss, margin):
    W = [torch.tensor(host(w), requires_grad=True) for w in net.W]
    b = [torch.tensor(host(v), requires_grad=True) for v in net.b] if net.bias else None
    Z, S = torch.from_numpy(X), []
    for k in range(len(W)):
        s = W[k] @ Z + (b[k] if b else 0)
        s.retain_grad()
        S.append(s)
        Z = TORCH_ACT[net.f[k].name](s)
    value = torch_loss(loss, Z, t, margin)
    value.backward()
    return value, W, b, S


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("loss", ["mse", "hinge", "ce"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_gradients_match_torch_autograd(activation, loss, bias):
    margin = 0.3
    for sizes, n in [([4, 6, 3], 5), ([3, 5, 4, 3], 1), ([5, 2, 7, 2, 4], 9)]:
        net = gpumlp.MLP(sizes, activation=activation, bias=bias, dtype="float64", device="cpu", seed=n)
        X, t = random_problem(sizes, n, n, loss)
        value, dY = gpumlp_loss(loss, net.forward(X), t, margin)
        net.backward(dY)
        t_value, W, b, S = torch_pass(net, X, t, loss, margin)
        assert float(value) == pytest.approx(t_value.item(), rel=1e-12, abs=1e-15)
        for k in range(len(W)):
            np.testing.assert_allclose(net.dW[k], W[k].grad.numpy(), rtol=1e-8, atol=1e-13)
            np.testing.assert_allclose(net.deltas[k], S[k].grad.numpy(), rtol=1e-8, atol=1e-13)
            if bias:
                np.testing.assert_allclose(net.db[k], b[k].grad.numpy(), rtol=1e-8, atol=1e-13)


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.5, 0.01)])
def test_sgd_matches_torch_optim_over_several_steps(momentum, weight_decay):
    sizes = [4, 5, 3]
    net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=3)
    X, t = random_problem(sizes, 6, 3, "ce")
    W = [torch.tensor(host(w), requires_grad=True) for w in net.W]
    b = [torch.tensor(host(v), requires_grad=True) for v in net.b]
    opt = torch.optim.SGD([p for pair in zip(W, b, strict=True) for p in pair], lr=0.1, momentum=momentum,
                          weight_decay=weight_decay)
    sgd = gpumlp.SGD(0.1, momentum=momentum, weight_decay=weight_decay)
    for _ in range(4):
        net.backward(gpumlp.losses.cross_entropy(net.forward(X), t)[1])
        sgd.step(net)
        opt.zero_grad()
        Z = torch.from_numpy(X)
        for k in range(2):
            Z = W[k] @ Z + b[k]
            Z = torch.tanh(Z) if k == 0 else Z
        F.cross_entropy(Z.T, torch.from_numpy(t)).backward()
        opt.step()
    for k in range(2):
        np.testing.assert_allclose(net.W[k], W[k].detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(net.b[k], b[k].detach().numpy(), rtol=1e-12, atol=1e-14)
