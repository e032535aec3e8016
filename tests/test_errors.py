"""Every bad input gets a ValueError that says what was expected and what was given."""
import numpy as np
import pytest

import gpumlp
from gpumlp import losses


@pytest.fixture
def net():
    return gpumlp.MLP([4, 5, 3], dtype="float64", device="cpu", seed=0)


def X(n=6, d=4):
    return np.random.default_rng(0).standard_normal((d, n))


def test_rows_instead_of_columns_suggests_transpose(net):
    with pytest.raises(ValueError, match=r"one sample per row.*pass X\.T"):
        net.forward(X().T)


def test_wrong_feature_count_and_wrong_rank(net):
    with pytest.raises(ValueError, match=r"d0 = 4 rows.*got shape \(5, 6\)"):
        net.forward(X(d=5))
    with pytest.raises(ValueError, match=r"2-D.*reshape\(-1, 1\)"):
        net.forward(np.ones(4))
    with pytest.raises(ValueError, match="no samples"):
        net.forward(np.ones((4, 0)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(net, bad):
    x = X()
    x[2, 3] = bad
    with pytest.raises(ValueError, match=r"X contains NaN or inf \(1 of 24 values"):
        net.forward(x)
    T = np.zeros((3, 6))
    T[0, 0] = bad
    with pytest.raises(ValueError, match="T contains NaN or inf"):
        losses.mse(net.forward(X()), T)


@pytest.mark.parametrize("array", [np.ones((4, 2), complex), np.array([["a"] * 2] * 4), np.ones((4, 2), object)])
def test_unsafe_dtypes_are_rejected(net, array):
    with pytest.raises(ValueError, match=r"must hold real numbers.*cannot be cast safely"):
        net.forward(array)


def test_other_float_precisions_and_ints_are_cast(net):
    for x in (X().astype(np.float32), X().astype(np.float16), np.ones((4, 6), np.int64), np.ones((4, 6), bool)):
        assert net.forward(x).dtype == np.float64


def test_labels_out_of_range_wrong_length_wrong_dtype(net):
    Y = net.forward(X())
    for fn in (losses.cross_entropy, losses.hinge):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*from 0 to 3"):
            fn(Y, np.array([0, 1, 2, 3, 0, 1]))
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*from -1"):
            fn(Y, np.array([0, 1, 2, -1, 0, 1]))
        with pytest.raises(ValueError, match=r"shape \(6,\).*got shape \(5,\)"):
            fn(Y, np.array([0, 1, 2, 0, 1]))
        with pytest.raises(ValueError, match=r"shape \(6,\).*got shape \(1, 6\)"):
            fn(Y, np.zeros((1, 6), int))
        with pytest.raises(ValueError, match="integer array.*float64"):
            fn(Y, np.zeros(6))


def test_targets_of_the_wrong_shape(net):
    Y = net.forward(X())
    with pytest.raises(ValueError, match=r"shape of Y, \(3, 6\).*got \(6, 3\)"):
        losses.mse(Y, np.zeros((6, 3)))
    y1 = gpumlp.MLP([4, 1], device="cpu").forward(X())
    with pytest.raises(ValueError, match=r"T\.reshape\(1, -1\)"):
        losses.mse(y1, np.zeros(6))


def test_bad_loss_arguments(net):
    Y = net.forward(X())
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'; got 'avg'"):
        losses.mse(Y, np.zeros((3, 6)), reduction="avg")
    with pytest.raises(ValueError, match="cannot be combined with reduction='sum'"):
        losses.mse(Y, np.zeros((3, 6)), reduction="sum", normalizer=6)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0; got -1"):
        losses.hinge(Y, np.zeros(6, int), margin=-1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        losses.cross_entropy(np.zeros((1, 3)), np.zeros(3, int))
    with pytest.raises(ValueError, match="float array"):
        losses.cross_entropy(np.zeros((3, 3), int), np.zeros(3, int))


def test_unknown_activation_loss_dtype_device_sizes():
    with pytest.raises(ValueError, match=r"unknown activation 'relu6'; expected one of .*leaky_relu"):
        gpumlp.MLP([2, 2], activation="relu6")
    with pytest.raises(ValueError, match="unknown activation 'softplus'"):
        gpumlp.MLP([2, 2], output="softplus")
    with pytest.raises(ValueError, match="unknown loss 'nll'; expected one of mse, hinge, ce"):
        losses.get_loss("nll")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        losses.get_loss("mse")(np.zeros((2, 3)), np.array([0, 1, 2]))     # one-hot targets from labels
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'; got 'float16'"):
        gpumlp.MLP([2, 2], dtype="float16")
    with pytest.raises(ValueError, match="dtype must be"):
        gpumlp.MLP([2, 2], dtype="int32")
    with pytest.raises(ValueError, match="device must be one of auto, cpu, gpu"):
        gpumlp.MLP([2, 2], device="tpu")
    for sizes in ([3], [3, 0], "abc", [2, -1]):
        with pytest.raises(ValueError, match="sizes must list at least two positive"):
            gpumlp.MLP(sizes)


def test_set_params_checks_every_shape_before_writing(net):
    before = net.params.copy()
    with pytest.raises(ValueError, match=r"W\[1\] \(W_2\) must have shape \(3, 5\); got \(5, 3\)"):
        net.set_params([np.zeros((5, 4)), np.zeros((5, 3))])
    with pytest.raises(ValueError, match="list of 2 arrays"):
        net.set_params([np.zeros((5, 4))])
    with pytest.raises(ValueError, match=r"b\[0\] \(b_1\) must have shape \(5, 1\); got \(4, 1\)"):
        net.set_params([np.zeros((5, 4)), np.zeros((3, 5))], [np.zeros(4), np.zeros(3)])
    with pytest.raises(ValueError, match="bias=False"):
        gpumlp.MLP([4, 3], bias=False, device="cpu").set_params([np.zeros((3, 4))], [np.zeros(3)])
    np.testing.assert_array_equal(net.params, before)
    net.set_params([np.ones((5, 4)), np.ones((3, 5))], [np.full(5, 2.0), np.full((3, 1), 3.0)])
    assert net.b[0].shape == (5, 1) and net.b[0][0, 0] == 2 and net.b[1][2, 0] == 3


def test_backward_and_step_out_of_order(net):
    with pytest.raises(RuntimeError, match="forward"):
        net.backward(np.zeros((3, 6)))
    with pytest.raises(RuntimeError, match="backward"):
        gpumlp.SGD(0.1).step(net)
    net.forward(X())
    with pytest.raises(ValueError,
                       match=r"dY must have the shape of the last forward output Y, \(3, 6\); got \(3, 5\)"):
        net.backward(np.zeros((3, 5)))


@pytest.mark.parametrize("kwargs,match", [({"lr": 0}, "lr must be a finite number > 0"),
                                          ({"lr": float("nan")}, "lr must be"),
                                          ({"lr": 0.1, "momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
                                          ({"lr": 0.1, "weight_decay": -1}, "weight_decay must be")])
def test_sgd_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gpumlp.SGD(**kwargs)


class FakeCupyArray:
    """Looks like a CuPy array to gpumlp: a device array of another library."""
    __module__ = "cupy"
    shape, dtype, ndim = (4, 6), np.dtype("float32"), 2

    @property
    def __cuda_array_interface__(self):
        raise AssertionError("gpumlp must not read device memory it was not given")


def test_a_device_array_given_to_a_cpu_model_is_an_error_not_a_copy(net):
    with pytest.raises(ValueError,
                       match=r"X is a cupy\.FakeCupyArray, an array of another library or device.*gpumlp\.to_numpy"):
        net.forward(FakeCupyArray())
    net.forward(X())
    with pytest.raises(ValueError, match=r"dY is a cupy"):
        net.backward(type("A", (FakeCupyArray,), {"shape": (3, 6), "__module__": "cupy"})())


def test_a_strict_device_array_given_to_a_cpu_model_is_an_error(net):
    from gpumlp.testing import strict_backend
    b = strict_backend()
    x = b.asarray(X(), b.dtype("float64"))
    with pytest.raises(ValueError, match="another library or device"):
        net.forward(x)


def test_values_too_large_for_float32_are_caught_not_turned_into_inf():
    net = gpumlp.MLP([1, 2], device="cpu")                         # float32
    with pytest.raises(ValueError, match="NaN or inf .*too large for float32"):
        net.forward([[1e300]])
    with pytest.raises(ValueError, match=r"W\[0\] \(W_1\) contains NaN or inf"):
        net.set_params([np.full((2, 1), 1e39)])
    assert np.isfinite(net.params).all()
    net.forward([[1e30]])                                            # within range: accepted


@pytest.mark.parametrize("kwargs,match", [
    ({"sizes": [2.5, 3]}, "sizes must list"), ({"sizes": "23"}, "sizes must list"),
    ({"sizes": {2: 3}}, "sizes must list"), ({"sizes": [True, 2]}, "sizes must list"),
    ({"sizes": [2, 3], "bias": "no"}, "bias must be True or False"),
    ({"sizes": [2, 3], "seed": "a"}, "seed must be an integer or None"),
    ({"sizes": [2, 3], "dtype": None}, "dtype must be 'float32' or 'float64'; got None")])
def test_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gpumlp.MLP(**{"device": "cpu", **kwargs})


def test_lists_are_arrays_and_masked_arrays_are_refused(net):
    assert net.forward(X().tolist()).shape == (3, 6)
    Y = net.forward(X())
    with pytest.raises(ValueError, match=r"shape of Y, \(3, 6\).*got \(2, 6\)"):
        losses.mse(Y, [[0.0] * 6] * 2)
    with pytest.raises(ValueError, match="masked array"):
        net.forward(np.ma.masked_array(X(), mask=X() > 1))
    with pytest.raises(ValueError, match="margin must be a finite number"):
        losses.hinge(Y, np.zeros(6, int), margin="0.5")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        net.predict(X(), batch_size=0)


def test_fit_arguments():
    from gpumlp.train import fit
    net = gpumlp.MLP([4, 3], device="cpu")
    x, y = X(), np.array([0, 1, 2, 0, 1, 2])
    for kwargs, match in [({"epochs": 2.0}, "epochs must be a positive integer; got 2.0"),
                          ({"epochs": None}, "epochs must be"), ({"batch_size": True}, "batch_size must be"),
                          ({"X_test": x}, "X_test and y_test together")]:
        with pytest.raises(ValueError, match=match):
            fit(net, x, y, gpumlp.SGD(0.1), progress=False, **kwargs)
