"""SGD: the update against its formula with momentum and weight decay (the gradients left
untouched), gradients from before the last forward refused, its messages, and the passes
plain SGD makes."""
import numpy as np
import pytest

import gpumlp
from gpumlp.losses import cross_entropy
from gpumlp.testing import TALLY, CountingBackend, exact, host, labelled_problem, random_biases


def test_weight_decay_and_momentum_leave_the_gradients_untouched():
    sizes = [4, 6, 3]
    X, y = labelled_problem(d0=sizes[0], n=9, k=sizes[-1], seed=6)
    net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=0)
    random_biases(net, np.random.default_rng(1), 0.5)
    lr, momentum, wd = 0.1, 0.9, 0.1
    optimizer = gpumlp.SGD(lr, momentum=momentum, weight_decay=wd)
    v = np.zeros(net.params.shape[0])
    for _ in range(2):
        net.backward(cross_entropy(net.forward(X), y)[1])
        grads = host(net.grads).copy()
        dW, db = [host(w).copy() for w in net.dW], [host(c).copy() for c in net.db]
        params = host(net.params).copy()
        assert np.abs(grads).max() > 1e-3 and np.abs(params).max() > 1e-3
        optimizer.step(net)
        np.testing.assert_array_equal(host(net.grads), grads)
        for k in range(net.n_layers):
            np.testing.assert_array_equal(host(net.dW[k]), dW[k])
            np.testing.assert_array_equal(host(net.db[k]), db[k])
        v = momentum * v + grads + wd * params
        np.testing.assert_allclose(host(net.params), params - lr * v, rtol=1e-12, atol=1e-14)


def test_step_refuses_gradients_from_before_the_last_forward():
    """New behaviour: fails on code that silently applies the previous step's gradients."""
    sizes = [4, 6, 3]
    X, y = labelled_problem(d0=sizes[0], n=8, k=sizes[-1], seed=2)
    net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=0)
    optimizer = gpumlp.SGD(0.1)
    net.backward(cross_entropy(net.forward(X), y)[1])
    optimizer.step(net)
    net.forward(X)
    before = host(net.params).copy()
    with pytest.raises(RuntimeError, match="backward"):
        optimizer.step(net)
    np.testing.assert_array_equal(host(net.params), before)
    net.backward(cross_entropy(net.forward(X), y)[1])       # a fresh backward: steps again
    optimizer.step(net)
    assert np.max(np.abs(host(net.params) - before)) > 1e-6


def test_sgd_messages():
    with pytest.raises(ValueError, match=exact("weight_decay must be a finite number >= 0; got -1")):
        gpumlp.SGD(0.1, weight_decay=-1)
    net = gpumlp.MLP([3, 2], device="cpu")
    with pytest.raises(RuntimeError, match=exact(
            "SGD.step() needs the gradients of the last forward pass: "
            "call net.backward(dY) after net.forward(X) first")):
        gpumlp.SGD(0.1).step(net)


def test_plain_sgd_makes_two_passes_and_keeps_no_velocity():
    """Without momentum the twin is θ −= lr·g: a multiply and a subtract, nothing else."""
    net = gpumlp.MLP([4, 3, 2], dtype="float64", device=CountingBackend(fused=False), seed=0)
    X, _ = labelled_problem(d0=4, n=5)
    net.forward(X)
    net.backward(np.ones((2, 5)))
    opt = gpumlp.SGD(0.25)
    opt.step(net)                                     # the first step allocates its state
    before, grads = np.array(net.params), np.array(net.grads)
    TALLY.clear()
    opt.step(net)
    assert TALLY.other == ["multiply", "subtract"]
    np.testing.assert_array_equal(np.asarray(net.params), before - 0.25 * grads)
