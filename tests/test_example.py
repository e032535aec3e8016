"""Exercise 2 of the homework, through the public API, to the 4 printed decimals."""
import subprocess
import sys

import numpy as np
import pytest

import gpumlp
from gpumlp.example import W1, W2, X, exercise2, y
from gpumlp.testing import host

# Every matrix and number the homework prints, in its order.
PRINTED = {
    "S_1": [[0.4580, 0.1205, -0.4420, 0.1195],
            [0.8690, 0.1615, -0.1810, 0.1185],
            [0.7040, 0.0440, 0.7040, -0.0440]],
    "Z_1": [[0.4580, 0.1205, 0.0000, 0.1195],
            [0.8690, 0.1615, 0.0000, 0.1185],
            [0.7040, 0.0440, 0.7040, 0.0000]],
    "Y_out": [[0.0986, 0.0112, 0.0634, 0.0059]],
    "L": 0.4916,
    "Delta_out": [[-0.2254, -0.2472, 0.2658, 0.2515]],
    "Delta_1": [[-0.0045, -0.0049, 0.0000, 0.0050],
                [-0.0068, -0.0074, 0.0000, 0.0075],
                [-0.0203, -0.0222, 0.0239, 0.0000]],
    "dL/dW_2": [[-0.1029, -0.2060, 0.0176]],
    "dL/dW_1": [[-0.0034, -0.0041],
                [-0.0050, -0.0062],
                [-0.0376, 0.0018]],
    "W_1 (updated)": [[0.6017, 0.0121],
                      [0.7025, 0.4331],
                      [0.0188, 0.8791]],
    "W_2 (updated)": [[0.0715, 0.1330, 0.0812]],
    "L (after the step)": 0.4657,
}


def same_to_4_decimals(value, printed):
    return np.array_equal(np.round(np.asarray(value, np.float64), 4) + 0.0, np.asarray(printed) + 0.0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exercise2_reproduces_every_printed_value(dtype):
    values = exercise2(dtype=dtype)
    assert list(values) == list(PRINTED)
    for name, printed in PRINTED.items():
        assert same_to_4_decimals(values[name], printed), (name, values[name], printed)


def test_exercise2_step_by_step_on_each_backend(backend):
    net = gpumlp.MLP([2, 3, 1], activation="relu", output="linear", bias=False,
                     dtype="float64", device=backend)
    assert net.b is None
    net.set_params([W1, W2])
    Y = net.forward(X)
    loss, dY = gpumlp.losses.mse(Y, y, reduction="mean")
    assert same_to_4_decimals(host(net.S[0]), PRINTED["S_1"])
    assert same_to_4_decimals(host(net.Z[1]), PRINTED["Z_1"])
    assert same_to_4_decimals(host(Y), PRINTED["Y_out"])
    assert round(float(loss), 4) == 0.4916
    net.backward(dY)
    assert net.db is None
    assert same_to_4_decimals(host(net.deltas[1]), PRINTED["Delta_out"])
    assert same_to_4_decimals(host(net.deltas[0]), PRINTED["Delta_1"])
    assert same_to_4_decimals(host(net.dW[1]), PRINTED["dL/dW_2"])
    assert same_to_4_decimals(host(net.dW[0]), PRINTED["dL/dW_1"])
    gpumlp.SGD(lr=0.5).step(net)
    assert same_to_4_decimals(host(net.W[0]), PRINTED["W_1 (updated)"])
    assert same_to_4_decimals(host(net.W[1]), PRINTED["W_2 (updated)"])
    assert round(float(gpumlp.losses.mse(net.forward(X), y)[0]), 4) == 0.4657


def test_exercise1_sum_form_is_n_times_the_mean():
    net = gpumlp.MLP([2, 3, 1], bias=False, dtype="float64", device="cpu")
    net.set_params([W1, W2])
    Y = net.forward(X)
    (mean, d_mean), (total, d_sum) = (gpumlp.losses.mse(Y, y, reduction=r) for r in ("mean", "sum"))
    assert float(total) == pytest.approx(4 * float(mean), rel=1e-15)
    np.testing.assert_allclose(d_sum, Y - y, rtol=0, atol=0)
    np.testing.assert_allclose(d_sum, 4 * d_mean, rtol=1e-15)


def test_gpumlp_example_prints_the_walkthrough_in_the_homeworks_order():
    out = subprocess.run([sys.executable, "-m", "gpumlp", "example"], capture_output=True,
                         text=True, check=True).stdout
    positions = [out.index("\n" + name + " =") for name in PRINTED]
    assert positions == sorted(positions)
    for text in ("L = 0.4916", "L (after the step) = 0.4657", "0.4580    0.1205   -0.4420    0.1195",
                 "-0.0203   -0.0222    0.0239    0.0000", "0.0715    0.1330    0.0812"):
        assert text in out


def test_the_walkthrough_text_exactly():
    from gpumlp.example import walkthrough
    text = walkthrough({"a": 1.23456, "M": np.array([[1.0, -0.00001], [2.0, -3.0]]), "v": np.array([0.5, -1.0])})
    assert text == ("Exercise 2: 2-3-1 ReLU network, no bias, L = ½‖Y − y‖²_F / N, SGD lr = 0.5\n"
                    "\n"
                    "a = 1.2346\n"
                    "\n"
                    "M =\n"
                    "      1.0000    0.0000\n"                 # -0.0000 is printed as 0.0000
                    "      2.0000   -3.0000\n"
                    "\n"
                    "v =\n"
                    "      0.5000   -1.0000\n")


def test_the_walkthrough_of_exercise2_in_process():
    from gpumlp.example import walkthrough
    lines = walkthrough(exercise2()).splitlines()
    assert lines[2:7] == ["S_1 =", "      0.4580    0.1205   -0.4420    0.1195",
                          "      0.8690    0.1615   -0.1810    0.1185",
                          "      0.7040    0.0440    0.7040   -0.0440", ""]
    assert "L = 0.4916" in lines and lines[-2:] == ["", "L (after the step) = 0.4657"]


def test_exercise2_returns_floats_and_arrays_of_its_dtype_on_its_device():
    got = exercise2(dtype="float32")
    assert type(got["L"]) is float and type(got["L (after the step)"]) is float
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for k, v in got.items() if not k.startswith("L"))
    with pytest.raises(gpumlp.DeviceUnavailableError):      # no GPU here: the device asked for is used, not "auto"
        exercise2(device="gpu")
