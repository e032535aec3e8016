"""The model: what forward caches (S with its bias, Z), the workspace cache, a model without
biases, the initial weights, float32 buffers, and the exact messages for a bad model, bad
parameters, bad inputs and an unknown activation."""
import numpy as np
import pytest

import gpumlp
from gpumlp.activations import get_activation
from gpumlp.engine import DeviceData
from gpumlp.testing import exact, host, labelled_problem, random_biases


@pytest.mark.parametrize("activation,output", [("relu", "linear"), ("tanh", "sigmoid")])
def test_cached_S_includes_the_bias(activation, output):
    sizes = [4, 5, 3, 2]
    rng = np.random.default_rng(5)
    net = gpumlp.MLP(sizes, activation=activation, output=output, dtype="float64", device="cpu", seed=1)
    b = random_biases(net, rng)
    W, _ = net.get_params()
    X = rng.standard_normal((sizes[0], 7))
    Y = host(net.forward(X))
    Z = X
    for k in range(net.n_layers):
        S = W[k] @ Z + b[k]
        np.testing.assert_allclose(host(net.S[k]), S, rtol=1e-12, atol=1e-12)
        f = output if k == net.n_layers - 1 else activation
        Z = {"relu": np.maximum(S, 0), "tanh": np.tanh(S), "linear": S,
             "sigmoid": 1 / (1 + np.exp(-S))}[f]
        np.testing.assert_allclose(host(net.Z[k + 1]), Z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Y, Z, rtol=1e-12, atol=1e-12)


# -- the workspace cache is least-recently-used -----------------------------------------------
def test_workspace_cache_evicts_the_oldest_batch_size():
    net = gpumlp.MLP([3, 4, 2], dtype="float64", device="cpu", seed=0)
    m = gpumlp.MLP.max_workspaces
    assert m >= 2
    X = np.ones((3, m + 1))
    old = {}
    for n in range(1, m + 1):
        net.forward(X[:, :n])
        old[n] = net.S[0]
    net.forward(X[:, :m + 1])                         # a new size: the oldest (1) goes
    for n in range(2, m + 1):
        net.forward(X[:, :n])
        assert net.S[0] is old[n], n
    net.forward(X[:, :1])
    assert net.S[0] is not old[1]


def test_workspace_cache_keeps_a_recently_used_batch_size():
    net = gpumlp.MLP([3, 4, 2], dtype="float64", device="cpu", seed=0)
    m = gpumlp.MLP.max_workspaces
    X = np.ones((3, m + 1))
    old = {}
    for n in range(1, m + 1):
        net.forward(X[:, :n])
        old[n] = net.S[0]
    net.forward(X[:, :1])                             # 1 used again: 2 is now the oldest
    assert net.S[0] is old[1]
    net.forward(X[:, :m + 1])                         # evicts 2, keeps 1
    for n in [1] + list(range(3, m + 1)):
        net.forward(X[:, :n])
        assert net.S[0] is old[n], n
    net.forward(X[:, :2])
    assert net.S[0] is not old[2]


# -- the model and its messages --------------------------------------------------------------
def test_a_model_without_biases_has_only_weights():
    net = gpumlp.MLP([3, 4, 2], bias=False, dtype="float64", device="cpu", seed=0)
    assert net.params.shape == (3 * 4 + 4 * 2,) and net.grads.shape == (20,)
    W, b = net.get_params()
    assert b is None and [w.shape for w in W] == [(4, 3), (2, 4)]
    np.testing.assert_array_equal(np.concatenate([w.ravel() for w in W]), net.params)
    with pytest.raises(ValueError, match=exact("this model was built with bias=False; set_params got biases")):
        net.set_params(W, [np.zeros((4, 1)), np.zeros((2, 1))])


def test_a_fresh_model_has_no_cache():
    net = gpumlp.MLP([3, 2], device="cpu")
    assert net.S is None and net.Z is None and net.deltas is None and net.dW is None
    with pytest.raises(RuntimeError, match=exact(
            "backward() needs the cache of a forward() pass; call net.forward(X) first")):
        net.backward(np.zeros((2, 1)))


def test_rebinding_a_view_names_the_fix():
    net = gpumlp.MLP([3, 2], device="cpu")
    with pytest.raises(TypeError, match=exact(
            "net.W, net.b, net.dW and net.db hold views into one flat buffer (net.params, net.grads): "
            "use net.set_params(W, b), or write in place: net.W[k][...] = value")):
        net.W[0] = np.zeros((2, 3))


def test_set_params_messages_and_no_reshaping_of_weights():
    net = gpumlp.MLP([1, 3], device="cpu")
    W, b = net.get_params()
    with pytest.raises(ValueError, match=exact("W must be a list of 1 arrays, one per layer; got tuple of length 2")):
        net.set_params((W[0], W[0]))
    with pytest.raises(ValueError, match=exact("W must be a list of 1 arrays, one per layer; got int of length ?")):
        net.set_params(5)
    with pytest.raises(ValueError, match=exact("W[0] (W_1) must have shape (3, 1); got (3,)")):
        net.set_params([np.ones(3)])                  # only a bias may be given as a vector
    net.set_params(W, [np.arange(3.0)])
    np.testing.assert_array_equal(net.get_params()[1][0], [[0.0], [1.0], [2.0]])


def test_input_messages():
    net = gpumlp.MLP([3, 2], device="cpu")
    head = "X must be a 2-D array of shape (d0, N) = (3, N), one sample per column; got shape "
    with pytest.raises(ValueError, match=exact(head + "(3, 2, 1)")):
        net.forward(np.zeros((3, 2, 1)))
    with pytest.raises(ValueError, match=exact(head + "(3,) (for one sample use X.reshape(-1, 1))")):
        net.forward(np.zeros(3))
    with pytest.raises(ValueError, match=exact("X has no samples (0 columns)")):
        net.forward(np.zeros((3, 0)))
    X = np.zeros((3, 2))
    X[1, 1] = np.nan
    with pytest.raises(ValueError, match=exact(
            "X contains NaN or inf (1 of 6 values, counting values too large for float32); "
            "remove or impute them first")):
        net.forward(X)


def test_a_dtype_numpy_cannot_read_is_a_value_error():
    with pytest.raises(ValueError, match=exact("dtype must be 'float32' or 'float64'; got 'no such type'")):
        gpumlp.MLP([2, 2], dtype="no such type", device="cpu")


@pytest.mark.parametrize("activation,output", [("leaky_relu", "linear"), ("tanh", "leaky_relu")])
def test_initial_weights_use_he_for_leaky_relu_and_glorot_otherwise(activation, output):
    net = gpumlp.MLP([5, 4, 3], activation=activation, output=output, dtype="float64", device="cpu", seed=3)
    rng = np.random.default_rng(3)
    he = {"leaky_relu": True, "tanh": False, "linear": False}
    for (r, c), f, w in zip([(4, 5), (3, 4)], [activation, output], net.get_params()[0], strict=True):
        scale = np.sqrt(2.0 / c) if he[f] else np.sqrt(2.0 / (r + c))
        np.testing.assert_array_equal(w, rng.standard_normal((r, c)) * scale)


def test_float32_models_keep_every_buffer_in_float32():
    net = gpumlp.MLP([3, 5, 4, 3], activation="tanh", output="relu", dtype="float32", device="cpu", seed=0)
    ws = net._workspace(7)
    assert ws.tmp.dtype == np.float32 and ws.tmp.shape == (5, 7)
    assert ws.mask.dtype == np.bool_ and ws.mask.shape == (5, 7)
    X, y = labelled_problem(n=7)
    data = DeviceData(net, X, y)
    assert data.loss.dtype == np.float32 and data.hit.dtype == np.bool_


def test_unknown_activation_lists_the_known_ones():
    with pytest.raises(ValueError, match=exact(
            "unknown activation 'swish'; expected one of leaky_relu, linear, relu, sigmoid, tanh")):
        get_activation("swish")
