"""Properties that must hold whatever the numbers: additivity, precision, determinism,
no aliasing, buffer reuse, and that backward works from the cache alone."""
import numpy as np
import pytest

import gpumlp
from gpumlp import activations
from gpumlp.testing import host, random_problem, rel_err


def grads_of(net, X, T, reduction="sum"):
    net.backward(gpumlp.losses.mse(net.forward(X), T, reduction=reduction)[1])
    return host(net.grads)


def test_sum_of_dW_over_column_chunks_equals_dW_of_the_whole_batch(backend):
    sizes = [5, 7, 6, 3]
    net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device=backend, seed=0)
    X, T = random_problem(sizes, 23, 1)
    whole = grads_of(net, X, T)
    chunks = sum(grads_of(net, X[:, i:j], T[:, i:j]) for i, j in [(0, 1), (1, 9), (9, 16), (16, 23)])
    np.testing.assert_allclose(chunks, whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", sorted(activations.ACTIVATIONS))
def test_float32_tracks_float64(activation):
    sizes = [6, 16, 12, 4]
    X, labels = random_problem(sizes, 32, 0, "ce")
    nets = {dt: gpumlp.MLP(sizes, activation=activation, dtype=dt, device="cpu", seed=7)
            for dt in ("float32", "float64")}
    for net in nets.values():
        net.backward(gpumlp.losses.cross_entropy(net.forward(X), labels)[1])
        gpumlp.SGD(0.1, momentum=0.9).step(net)
    lo, hi = nets["float32"], nets["float64"]
    assert lo.params.dtype == np.float32 and hi.params.dtype == np.float64
    for k in range(3):
        for a, b in [(lo.S[k], hi.S[k]), (lo.Z[k + 1], hi.Z[k + 1]), (lo.deltas[k], hi.deltas[k]),
                     (lo.dW[k], hi.dW[k]), (lo.db[k], hi.db[k]), (lo.W[k], hi.W[k])]:
            assert rel_err(a, b) < 1e-4


def test_same_seed_same_model_and_different_seed_different_model(backend):
    a, b = (gpumlp.MLP([4, 8, 3], device=backend, seed=42) for _ in range(2))
    c = gpumlp.MLP([4, 8, 3], device=backend, seed=43)
    np.testing.assert_array_equal(host(a.params), host(b.params))
    assert not np.array_equal(host(a.params), host(c.params))


def test_cpu_and_other_backend_start_from_identical_weights(backend):
    a = gpumlp.MLP([4, 8, 3], dtype="float64", device="cpu", seed=5)
    b = gpumlp.MLP([4, 8, 3], dtype="float64", device=backend, seed=5)
    np.testing.assert_array_equal(host(a.params), host(b.params))


def test_initial_scale_and_zero_biases():
    net = gpumlp.MLP([400, 300, 10], dtype="float64", device="cpu", seed=0)
    assert np.std(host(net.W[0])) == pytest.approx(np.sqrt(2 / 400), rel=0.02)      # He, before ReLU
    assert np.std(host(net.W[1])) == pytest.approx(np.sqrt(2 / 310), rel=0.05)      # Glorot, linear output
    assert all(not host(v).any() for v in net.b)


def test_model_never_aliases_the_callers_arrays():
    X = np.ones((3, 4))
    W = [np.ones((2, 3)), np.ones((1, 2))]
    net = gpumlp.MLP([3, 2, 1], dtype="float64", device="cpu", bias=False)
    net.set_params(W)
    W[0][...] = 7
    assert host(net.W[0]).max() == 1
    Y = net.forward(X)
    X[...] = 5
    assert host(net.Z[0]).max() == 1
    Y[...] = 9                                       # the returned Y is the caller's own
    assert host(net.Z[-1]).max() != 9


def test_parameters_are_views_into_one_flat_buffer():
    net = gpumlp.MLP([3, 4, 2], dtype="float64", device="cpu", seed=0)
    assert net.params.size == 3 * 4 + 4 + 4 * 2 + 2
    net.params[...] = np.arange(net.params.size)
    np.testing.assert_array_equal(net.W[0].ravel(), np.arange(12))
    np.testing.assert_array_equal(net.b[0].ravel(), np.arange(12, 16))
    np.testing.assert_array_equal(net.W[1].ravel(), np.arange(16, 24))
    X, labels = random_problem([3, 4, 2], 5, 0, "ce")
    net.backward(gpumlp.losses.cross_entropy(net.forward(X), labels)[1])
    assert np.shares_memory(net.dW[1], net.grads) and np.shares_memory(net.db[0], net.grads)
    with pytest.raises(TypeError, match="set_params"):
        net.W[0] = np.zeros((4, 3))


def test_backward_uses_the_cache_and_never_reruns_forward(monkeypatch, backend):
    sizes = [3, 5, 2]
    net = gpumlp.MLP(sizes, activation="sigmoid", dtype="float64", device=backend, seed=1)
    X, T = random_problem(sizes, 4, 1)
    _, dY = gpumlp.losses.mse(net.forward(X), T)

    def boom(*a, **k):
        raise AssertionError("forward ran during backward")
    monkeypatch.setattr(gpumlp.MLP, "forward", boom)
    for f in activations.ACTIVATIONS.values():
        monkeypatch.setattr(f, "forward", boom)
    net.backward(dY)
    # and its result is the homework's formula on the cached arrays
    D2 = host(dY)
    D1 = (host(net.W[1]).T @ D2) * host(net.Z[1]) * (1 - host(net.Z[1]))
    np.testing.assert_allclose(host(net.dW[0]), D1 @ host(net.Z[0]).T, rtol=1e-12)
    np.testing.assert_allclose(host(net.db[0]), D1.sum(axis=1, keepdims=True), rtol=1e-12)


def test_buffers_are_reused_per_batch_size_and_results_stay_right():
    sizes = [3, 6, 2]
    net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=0)
    X3, T3 = random_problem(sizes, 3, 0)
    X5, T5 = random_problem(sizes, 5, 1)
    g3 = grads_of(net, X3, T3).copy()
    S3 = net.S[0]
    g5 = grads_of(net, X5, T5).copy()
    assert net.S[0] is not S3 and net.S[0].shape == (6, 5)
    assert np.array_equal(grads_of(net, X3, T3), g3)
    assert net.S[0] is S3                             # the N = 3 buffers came back
    assert not np.array_equal(g3, g5)


def test_loss_stays_a_0d_array_on_the_device_until_read(backend):
    sizes = [3, 4, 2]
    net = gpumlp.MLP(sizes, device=backend, seed=0)
    X, labels = random_problem(sizes, 6, 0, "ce")
    cpu = gpumlp.MLP(sizes, device="cpu", seed=0)
    for fn, args in ((gpumlp.losses.cross_entropy, (labels,)), (gpumlp.losses.hinge, (labels,)),
                     (gpumlp.losses.mse, (np.zeros((2, 6)),))):
        loss, dY = fn(net.forward(X), *args)
        assert tuple(loss.shape) == () and backend.owns(dY)
        assert backend.owns(loss) or isinstance(loss, np.generic)      # NumPy's 0-d results are scalars
        assert float(loss) == pytest.approx(float(fn(cpu.forward(X), *args)[0]), rel=1e-6)    # read when asked


@pytest.mark.parametrize("loss", ["ce", "hinge", "mse"])
def test_column_chunks_with_the_global_normalizer_add_up_to_the_batch(loss):
    """A batch in column chunks, each loss divided by the whole batch's N: the chunks'
    losses and gradients add up to the whole batch's (what micro-batching needs)."""
    sizes = [5, 7, 4]
    net = gpumlp.MLP(sizes, activation="tanh", dtype="float64", device="cpu", seed=2)
    X, y = random_problem(sizes, 23, 1, "ce")
    fn = gpumlp.losses.get_loss(loss)
    whole, dY = fn(net.forward(X), y, margin=0.4)
    net.backward(dY)
    g = host(net.grads).copy()
    total, chunks = 0.0, np.zeros_like(g)
    for i, j in [(0, 1), (1, 9), (9, 23)]:
        value, dY = fn(net.forward(X[:, i:j]), y[i:j], margin=0.4, normalizer=23)
        net.backward(dY)
        total, chunks = total + float(value), chunks + host(net.grads)
    assert total == pytest.approx(float(whole), rel=1e-13)
    np.testing.assert_allclose(chunks, g, rtol=1e-12, atol=1e-15)
    value, _ = fn(net.forward(X), y, margin=0.4, normalizer=46)
    assert float(value) == pytest.approx(float(whole) / 2, rel=1e-13)
    for bad in (0, -1, float("nan"), "23"):
        with pytest.raises(ValueError, match="normalizer must be a finite number > 0"):
            fn(net.forward(X), y, normalizer=bad)


def test_a_training_epoch_never_reads_device_values_until_its_end(monkeypatch):
    """On the strict device every host read of a device value (float, bool, int, a
    NumPy conversion) raises during the steps; the epoch's losses are read once, at
    its end, through DLPack."""
    from gpumlp.engine import Trainer
    from gpumlp.testing import strict_backend
    backend = strict_backend()
    sizes = [5, 8, 3]
    X, y = random_problem(sizes, 40, 0, "ce")
    Array = type(backend.zeros((1,), backend.dtype("float32")))
    for loss in ("ce", "hinge", "mse"):
        net = gpumlp.MLP(sizes, device=backend, seed=0)
        trainer = Trainer(net, gpumlp.SGD(0.1, 0.9, 1e-3), loss)
        data = trainer.data(X, y)                     # checked (and read) here, before the steps
        order = backend.asarray(np.random.default_rng(0).permutation(40), backend.dtype("int64"))
        with monkeypatch.context() as m:
            for name in ("__float__", "__bool__", "__int__", "__index__", "__array__", "__complex__"):
                m.setattr(Array, name, lambda self, *a, _n=name, **k: pytest.fail(f"{_n} during a step"))
            record = trainer.epoch(data, 16, order)
        assert np.isfinite(record["loss"]) and 0 <= record["accuracy"] <= 1


def test_set_params_round_trips_on_each_backend(backend):
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((4, 3)), rng.standard_normal((2, 4))]
    b = [rng.standard_normal(4), rng.standard_normal((2, 1))]           # a vector or a column
    net = gpumlp.MLP([3, 4, 2], dtype="float64", device=backend)
    net.set_params(W, b)
    got_W, got_b = net.get_params()
    for k in range(2):
        np.testing.assert_array_equal(got_W[k], W[k])
        np.testing.assert_array_equal(got_b[k], np.reshape(b[k], (-1, 1)))
    x = rng.standard_normal((3, 5))
    np.testing.assert_allclose(host(net.forward(x)), W[1] @ np.maximum(W[0] @ x + b[0][:, None], 0) + b[1],
                               rtol=1e-13)


def test_rebinding_gradients_is_refused_and_in_place_updates_work():
    sizes = [3, 4, 2]
    net = gpumlp.MLP(sizes, dtype="float64", device="cpu", seed=0)
    X, T = random_problem(sizes, 5, 0)
    net.backward(gpumlp.losses.mse(net.forward(X), T)[1])
    with pytest.raises(TypeError, match="views into one flat buffer"):
        net.dW[0] = np.zeros((4, 3))
    before = net.params.copy()
    expected = host(net.W[0]) - 0.1 * host(net.dW[0])
    W = net.W
    W[0] -= 0.1 * net.dW[0]                           # Python writes the same view back: allowed
    np.testing.assert_array_equal(net.W[0], expected)
    assert np.shares_memory(net.W[0], net.params) and not np.array_equal(net.params, before)
