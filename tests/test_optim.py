"""SGD: the update against its formula with momentum and weight decay (the gradients left
untouched), gradients from before the last forward refused, its messages, and the passes
plain SGD makes."""
import numpy as np
import pytest

import gpumlp
from gpumlp.losses import cross_entropy
from gpumlp.optim import L2Penalty
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


# -- the update, piece by piece, against float64 arithmetic done here -----------------------

def _net(sizes=(3, 4, 2), dtype="float64", seed=0, device="cpu"):
    return gpumlp.MLP(list(sizes), activation="tanh", dtype=dtype, device=device, seed=seed)


def _backprop(net, n=4):
    """A forward and backward pass (which makes net.dW and net.db, views of net.grads)."""
    X, y = labelled_problem(d0=net.sizes[0], n=n, k=net.sizes[-1], seed=11)
    net.backward(cross_entropy(net.forward(X), y)[1])


def _set_grads(net, seed):
    """Gradients of our own choosing in net.grads (the engine's contract: update reads net.grads)."""
    g = np.random.default_rng(seed).normal(size=net.params.shape)
    net.grads[...] = g
    return g


def test_update_is_the_torch_rule_step_by_step_with_momentum_and_weight_decay():
    """Three updates with gradients set by hand: v ← μ·v + g + λ·θ, θ ← θ − lr·v, in float64."""
    net = _net()
    opt = gpumlp.SGD(0.3, momentum=0.7, weight_decay=0.05)
    theta, v = np.array(net.params), np.zeros(net.params.shape)
    for seed in range(3):
        g = _set_grads(net, seed)
        opt.update(net, 5)
        v = 0.7 * v + g + 0.05 * theta
        theta = theta - 0.3 * v
        np.testing.assert_allclose(net.params, theta, rtol=1e-14, atol=1e-15)
        np.testing.assert_array_equal(net.grads, g)                   # the gradient is left as it was
    np.testing.assert_allclose(opt.state_dict(net)["velocity"], v, rtol=1e-14)


def test_plain_sgd_is_theta_minus_lr_g_and_keeps_no_velocity():
    net = _net()
    opt = gpumlp.SGD(0.25)
    assert (opt.lr, opt.momentum, opt.weight_decay, opt.clip_norm, opt.hooks) == (0.25, 0.0, 0.0, None, [])
    theta = np.array(net.params)
    g = _set_grads(net, 1)
    opt.update(net, 3)
    np.testing.assert_array_equal(net.params, theta - 0.25 * g)
    assert opt.state_dict(net) == {"velocity": None}


def test_momentum_turned_on_between_steps_starts_its_velocity_then():
    net = _net()
    opt = gpumlp.SGD(0.1)
    g0 = _set_grads(net, 0)
    theta = np.array(net.params)
    opt.update(net, 2)
    theta = theta - 0.1 * g0
    opt.momentum = 0.5
    v = np.zeros_like(theta)
    for seed in (1, 2):
        g = _set_grads(net, seed)
        opt.update(net, 2)
        v = 0.5 * v + g
        theta = theta - 0.1 * v
        np.testing.assert_allclose(net.params, theta, rtol=1e-14, atol=1e-15)


def test_each_network_has_its_own_velocity():
    a, b = _net(seed=0), _net(seed=1)
    opt = gpumlp.SGD(0.1, momentum=0.9)
    ga, gb = _set_grads(a, 3), _set_grads(b, 4)
    opt.update(a, 1)
    opt.update(b, 1)
    np.testing.assert_array_equal(opt.state_dict(a)["velocity"], ga)
    np.testing.assert_array_equal(opt.state_dict(b)["velocity"], gb)


class _CPUCounting(CountingBackend):
    is_gpu = False          # the host's twin: walked in passes of its scratch's length


@pytest.mark.parametrize("sizes, passes", [
    ((3, 4, 2), 1),           # 26 parameters: one pass (never more than there are)
    ((300, 200), 2),          # 60,200: passes of SGD.chunk = 32,768
    ((1000, 600), 16),        # 600,600: 16 passes of ⌈n/16⌉ = 37,538
])
def test_the_host_twin_walks_the_parameters_in_passes_of_its_scratch(sizes, passes):
    net = _net(sizes, device=_CPUCounting(fused=False))
    opt = gpumlp.SGD(0.5)
    g = _set_grads(net, 0)
    theta = np.array(net.params)
    opt.update(net, 1)
    TALLY.clear()
    opt.update(net, 1)
    assert TALLY.other == ["multiply", "subtract"] * passes
    np.testing.assert_array_equal(np.asarray(net.params), theta - 0.5 * g - 0.5 * g)


def test_a_step_after_the_first_allocates_nothing(monkeypatch):
    """The velocity, the twin's scratch and the clip's norm are made once per network, with or
    without momentum, clip and an L2 penalty."""
    for kwargs in ({}, {"momentum": 0.9}, {"clip_norm": 0.1, "hooks": [L2Penalty(0.5)]}):
        net, made = _net(), []
        _backprop(net)

        def counted(name, real, made=made):
            return lambda *a: made.append(name) or real(*a)

        for name in ("empty", "zeros"):
            monkeypatch.setattr(net.backend, name, counted(name, getattr(net.backend, name)))
        opt = gpumlp.SGD(0.1, **kwargs)
        _set_grads(net, 0)
        opt.update(net, 4)
        assert made, kwargs
        made.clear()
        for _ in range(2):
            opt.update(net, 4)
        assert made == [], kwargs
        monkeypatch.undo()


def test_hooks_run_in_order_before_the_clip_and_the_update():
    net = _net()
    calls = []

    def double(n, grads, normalizer):
        calls.append(("double", n is net, grads is net.grads, normalizer))
        grads *= 2

    def add_one(n, grads, normalizer):
        calls.append(("add_one", n is net, grads is net.grads, normalizer))
        grads += 1

    opt = gpumlp.SGD(0.1, hooks=(h for h in [double, add_one]))       # any iterable, kept as a list
    assert opt.hooks == [double, add_one]
    theta, g = np.array(net.params), _set_grads(net, 2)
    opt.update(net, 7)
    assert calls == [("double", True, True, 7), ("add_one", True, True, 7)]
    np.testing.assert_array_equal(net.grads, 2 * g + 1)
    np.testing.assert_allclose(net.params, theta - 0.1 * (2 * g + 1), rtol=1e-15)


def test_the_clip_rescales_a_long_gradient_to_clip_norm_and_leaves_a_short_one():
    net = _net()
    g = _set_grads(net, 5)
    norm = float(np.sqrt(g @ g))
    assert norm > 2
    opt = gpumlp.SGD(0.1, clip_norm=norm / 4)
    theta = np.array(net.params)
    for scale in (1, 3, 2):                                              # long: scaled to clip_norm, step by step
        net.grads[...] = scale * g
        opt.update(net, 1)
        np.testing.assert_allclose(net.grads, g / 4, rtol=1e-14)
        theta = theta - 0.1 * g / 4
        np.testing.assert_allclose(net.params, theta, rtol=1e-14, atol=1e-16)
    for clip in (norm * 1.5, norm * 1.0000001):                          # short: untouched
        net2 = _net()
        net2.grads[...] = g
        before = np.array(net2.params)
        gpumlp.SGD(0.1, clip_norm=clip).update(net2, 1)
        np.testing.assert_array_equal(net2.grads, g)
        np.testing.assert_array_equal(net2.params, before - 0.1 * g)


def test_the_clip_comes_after_the_hooks_and_before_momentum():
    net = _net()
    g = _set_grads(net, 6)
    doubled = 2 * g
    clip = float(np.sqrt(doubled @ doubled)) / 2                         # the hook's gradient, halved

    def double(n, grads, normalizer):
        grads *= 2

    opt = gpumlp.SGD(0.2, momentum=0.5, clip_norm=clip, hooks=[double])
    theta = np.array(net.params)
    opt.update(net, 1)
    np.testing.assert_allclose(net.grads, g, rtol=1e-14)
    np.testing.assert_allclose(opt.state_dict(net)["velocity"], g, rtol=1e-14)
    np.testing.assert_allclose(net.params, theta - 0.2 * g, rtol=1e-14, atol=1e-16)


def test_step_takes_the_last_forward_passes_columns_as_normalizer():
    net = _net()
    seen = []
    X, y = labelled_problem(d0=3, n=6, k=2, seed=1)
    net.backward(cross_entropy(net.forward(X), y)[1])
    gpumlp.SGD(0.1, hooks=[lambda n, g, normalizer: seen.append(normalizer)]).step(net)
    assert seen == [6] and type(seen[0]) is int


# -- the L2 penalty ------------------------------------------------------------------------

def test_an_l2_penalty_of_0_leaves_the_gradient_bit_for_bit():
    net = _net()
    _backprop(net)
    net.grads[...] = -0.0                                                # −0 + 0·W would be +0
    L2Penalty(0)(net, net.grads, 4)
    assert np.all(np.signbit(net.grads))
    assert repr(L2Penalty(0)) == "L2Penalty(alpha=0.0)" and repr(L2Penalty(2)) == "L2Penalty(alpha=2.0)"


def test_the_l2_penalty_of_a_float32_network_is_computed_in_float32():
    """dW_k + float32(W_k · alpha/n), rounded twice as float32 arithmetic rounds (a float64
    scratch would round once), and the same again with the scratch reused."""
    net = _net((5, 7, 3), dtype="float32")
    _backprop(net)
    W = [np.array(w) for w in net.W]
    penalty, c = L2Penalty(0.3), 0.3 / 3
    for seed in (2, 3):
        _set_grads(net, seed)
        dW = [np.array(d) for d in net.dW]
        penalty(net, net.grads, 3)
        for k in range(2):
            assert net.dW[k].dtype == np.float32
            np.testing.assert_array_equal(net.dW[k], dW[k] + np.multiply(W[k], c, dtype=np.float32))


@pytest.mark.parametrize("alpha, message", [(-1, "alpha must be a finite number >= 0; got -1"),
                                            (np.inf, "alpha must be a finite number >= 0; got inf")])
def test_the_l2_penalty_refuses_a_negative_or_infinite_alpha(alpha, message):
    with pytest.raises(ValueError, match=exact(message)):
        L2Penalty(alpha)


# -- construction, state and repr -------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"lr": 0}, "lr must be a finite number > 0; got 0"),
    ({"lr": -0.1}, "lr must be a finite number > 0; got -0.1"),
    ({"lr": 0.1, "momentum": 1}, "momentum must be a number in [0, 1); got 1"),
    ({"lr": 0.1, "momentum": -0.1}, "momentum must be a number in [0, 1); got -0.1"),
    ({"lr": 0.1, "clip_norm": 0}, "clip_norm must be a finite number > 0, or None; got 0"),
    ({"lr": 0.1, "weight_decay": -1e-9}, "weight_decay must be a finite number >= 0; got -1e-09"),
    ({"lr": 0.1, "hooks": [print, 3]}, "a gradient hook must be a function hook(net, grads, normalizer); got 3"),
])
def test_sgd_refuses_each_bad_setting_in_so_many_words(kwargs, message):
    with pytest.raises(ValueError, match=exact(message)):
        gpumlp.SGD(**kwargs)


def test_sgd_takes_the_edges_of_its_ranges():
    opt = gpumlp.SGD(1e-12, momentum=0, weight_decay=0, clip_norm=1e-12)
    assert (opt.lr, opt.momentum, opt.weight_decay, opt.clip_norm) == (1e-12, 0.0, 0.0, 1e-12)
    assert gpumlp.SGD(2.5, momentum=0.999).momentum == 0.999


def test_sgd_repr_names_its_settings():
    assert repr(gpumlp.SGD(0.1)) == "SGD(lr=0.1, momentum=0.0, weight_decay=0.0)"
    assert repr(gpumlp.SGD(0.1, 0.9, 0.01, clip_norm=2)) == \
        "SGD(lr=0.1, momentum=0.9, weight_decay=0.01, clip_norm=2.0)"
    assert repr(gpumlp.SGD(0.5, hooks=[L2Penalty(1e-4)])) == \
        "SGD(lr=0.5, momentum=0.0, weight_decay=0.0, hooks=[L2Penalty(alpha=0.0001)])"


def test_state_dict_is_none_without_momentum_and_a_host_copy_with_it():
    net = _net()
    plain = gpumlp.SGD(0.1)
    _set_grads(net, 0)
    plain.update(net, 1)
    assert plain.state_dict(net) == {"velocity": None}
    opt = gpumlp.SGD(0.1, momentum=0.9)
    g = _set_grads(net, 1)
    opt.update(net, 1)
    state = opt.state_dict(net)
    assert type(state["velocity"]) is np.ndarray
    np.testing.assert_array_equal(state["velocity"], g)
    state["velocity"][:] = 5                                             # a copy: the optimizer's own is untouched
    np.testing.assert_array_equal(opt.state_dict(net)["velocity"], g)


def test_a_loaded_velocity_is_what_the_next_step_continues_from():
    net = _net()
    v0 = np.random.default_rng(8).normal(size=net.params.shape)
    opt = gpumlp.SGD(0.1, momentum=0.5)
    opt.load_state_dict(net, {"velocity": v0.tolist() and v0})
    theta, g = np.array(net.params), _set_grads(net, 9)
    opt.update(net, 1)
    v = 0.5 * v0 + g
    np.testing.assert_allclose(net.params, theta - 0.1 * v, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(opt.state_dict(net)["velocity"], v, rtol=1e-15)


def test_loading_no_velocity_restarts_the_momentum():
    net = _net()
    opt = gpumlp.SGD(0.1, momentum=0.5)
    _set_grads(net, 0)
    opt.update(net, 1)
    opt.load_state_dict(net, {"velocity": None})
    np.testing.assert_array_equal(opt.state_dict(net)["velocity"], np.zeros(net.params.shape))
    theta, g = np.array(net.params), _set_grads(net, 1)
    opt.update(net, 1)
    np.testing.assert_allclose(net.params, theta - 0.1 * g, rtol=1e-15, atol=1e-16)


def test_a_float64_velocity_loads_into_a_float32_network():
    net = _net(dtype="float32")
    v0 = np.linspace(-1, 1, net.params.shape[0])
    opt = gpumlp.SGD(0.1, momentum=0.5)
    opt.load_state_dict(net, {"velocity": v0})
    velocity = opt.state_dict(net)["velocity"]
    assert velocity.dtype == np.float32
    np.testing.assert_array_equal(velocity, v0.astype(np.float32))


def test_a_state_with_momentum_is_refused_by_an_sgd_without():
    net = _net()
    with pytest.raises(ValueError, match=exact(
            "the saved optimizer state has momentum buffers, but this SGD has momentum 0")):
        gpumlp.SGD(0.1).load_state_dict(net, {"velocity": np.zeros(net.params.shape)})


@pytest.mark.parametrize("state", [None, [1, 2], {"velocity": np.zeros(25)}, {"velocity": np.zeros((26, 1))},
                                   {"velocity": [0.0] * 26}])
def test_a_state_of_another_shape_is_refused(state):
    net = _net()
    assert net.params.shape == (26,)
    with pytest.raises(ValueError, match=exact(
            "the optimizer state must be {'velocity': None or an array of shape (26,)}; got " + f"{state!r:.200}")):
        gpumlp.SGD(0.1, momentum=0.9).load_state_dict(net, state)


def test_a_refused_states_repr_is_cut_at_200_characters():
    net = _net()
    state = {"velocity": "x" * 500}
    with pytest.raises(ValueError) as e:
        gpumlp.SGD(0.1, momentum=0.9).load_state_dict(net, state)
    assert str(e.value).endswith("got " + repr(state)[:200])


def test_a_float32_clip_is_float32_arithmetic():
    """‖(3, 4, 0, …)‖ = 5 exactly; clip_norm 3 scales by fl32(5/3), and 3 / fl32(5/3) rounds to
    1.8000001 in float32 (float64 buffers would give 1.8)."""
    net = _net(dtype="float32")
    net.grads[...] = 0
    net.grads[:2] = [3, 4]
    gpumlp.SGD(0.1, clip_norm=3.0).update(net, 1)
    scale = np.float32(5) / np.float32(3)
    expected = np.zeros(net.params.shape, np.float32)
    expected[:2] = np.array([3, 4], np.float32) / scale
    assert expected[0] == np.float32(1.8000001) != np.float32(1.8)
    np.testing.assert_array_equal(net.grads, expected)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_float32_update_rounds_each_step_to_float32(momentum):
    """The twin's scratch has the model's dtype: t = fl32(θ·λ), t = fl32(t + g), (v = fl32(fl32(μv) + t)),
    θ = fl32(θ − fl32(lr·t)) — a float64 scratch would skip some of those roundings."""
    net = _net((20, 30, 10), dtype="float32")
    rng = np.random.default_rng(3)
    net.params[...] = rng.normal(size=net.params.shape).astype(np.float32)
    opt = gpumlp.SGD(0.3, momentum=momentum, weight_decay=0.07)
    theta, v = np.array(net.params), np.zeros(net.params.shape, np.float32)
    for _ in range(2):
        g = rng.normal(size=net.params.shape).astype(np.float32)
        net.grads[...] = g
        opt.update(net, 1)
        d = theta * 0.07 + g
        if momentum:
            v = v * 0.9 + d
            d = v
        theta = theta - d * 0.3
        assert theta.dtype == np.float32
        np.testing.assert_array_equal(net.params, theta)


def test_on_a_device_the_twin_makes_one_pass_and_a_fused_kernel_gets_no_scratch(monkeypatch):
    net = _net((300, 200), device=CountingBackend(fused=False))          # 60,200 parameters: one pass on a GPU
    opt = gpumlp.SGD(0.5)
    _set_grads(net, 0)
    opt.update(net, 1)
    TALLY.clear()
    opt.update(net, 1)
    assert TALLY.other == ["multiply", "subtract"]
    for fused, shapes in ((True, [(1, 1)]), (False, [(26,), (1, 1)])):
        net = _net(device=CountingBackend(fused=fused))
        made = []

        def counted(shape, dtype, made=made, empty=net.backend.empty):
            made.append(tuple(shape))
            return empty(shape, dtype)

        monkeypatch.setattr(net.backend, "empty", counted)
        _set_grads(net, 1)
        gpumlp.SGD(0.5, clip_norm=1.0).update(net, 1)
        assert made == shapes, fused
