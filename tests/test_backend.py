"""Choosing the backend: auto, cpu, gpu, $GPUMLP_DEVICE, and clear errors when a GPU is missing."""
import sys
import types

import numpy as np
import pytest

import gpumlp
from gpumlp import backend as B


@pytest.fixture(autouse=True)
def fresh_auto(monkeypatch):
    monkeypatch.setattr(B, "_auto", None)
    monkeypatch.delenv("GPUMLP_DEVICE", raising=False)


def fake_cupy(monkeypatch, count=None, error=None, kernels=np.maximum):
    """Install a stand-in ``cupy`` whose device count is ``count`` or raises ``error``,
    and whose kernels are ``kernels`` (NumPy's, or a function that raises)."""
    def get_count():
        if error:
            raise error
        return count
    runtime = types.SimpleNamespace(getDeviceCount=get_count)
    module = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime), ndarray=type("ndarray", (), {}),
                                   ones=np.ones, float32=np.float32, maximum=kernels, __version__="14.0.1")
    monkeypatch.setitem(sys.modules, "cupy", module)


def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)       # import cupy -> ImportError


def test_cpu_is_numpy():
    b = B.get_backend("cpu")
    assert b.xp is np and not b.is_gpu and b.name == "numpy"


def test_auto_without_cupy_falls_back_with_one_notice(monkeypatch, capsys):
    no_cupy(monkeypatch)
    assert B.get_backend("auto").xp is np
    assert B.get_backend("auto").xp is np
    err = capsys.readouterr().err
    assert err == "gpumlp: using the CPU (CuPy is not installed)\n"     # once, briefly, no install advice


def test_gpu_without_cupy_names_the_package(monkeypatch):
    no_cupy(monkeypatch)
    with pytest.raises(gpumlp.DeviceUnavailableError, match=r"CuPy package is not installed.*pip install -e '\.\[gpu\]' \(in the gpumlp checkout\)"):
        gpumlp.MLP([2, 2], device="gpu")


def test_gpu_without_driver_names_the_driver(monkeypatch):
    fake_cupy(monkeypatch, error=RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient"))
    with pytest.raises(gpumlp.DeviceUnavailableError, match="CUDA driver is not usable.*InsufficientDriver"):
        B.get_backend("gpu")


def test_gpu_without_device_names_the_device(monkeypatch, capsys):
    fake_cupy(monkeypatch, count=0)
    with pytest.raises(gpumlp.DeviceUnavailableError, match="no CUDA device was found"):
        B.get_backend("gpu")
    assert B.get_backend("auto").xp is np
    assert "no CUDA device was found" in capsys.readouterr().err


def test_gpu_with_broken_cuda_libraries_names_them(monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("libnvrtc.so.12: cannot open shared object file")
    fake_cupy(monkeypatch, count=1, kernels=broken)
    with pytest.raises(gpumlp.DeviceUnavailableError, match=r"CUDA libraries failed.*libnvrtc.*cupy-cuda12x\[ctk\]"):
        B.get_backend("gpu")
    assert B.get_backend("auto").xp is np
    assert "libnvrtc" in capsys.readouterr().err


def test_auto_picks_cupy_when_a_device_is_present(monkeypatch):
    fake_cupy(monkeypatch, count=1)
    b = B.get_backend("auto")
    assert isinstance(b, B.CupyBackend) and b.is_gpu


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("GPUMLP_DEVICE", "cpu")
    fake_cupy(monkeypatch, count=1)
    assert B.get_backend(None).xp is np
    assert gpumlp.MLP([2, 2], device=None).backend.xp is np
    monkeypatch.setenv("GPUMLP_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"\$GPUMLP_DEVICE must be one of auto, cpu, gpu.*'tpu'"):
        B.get_backend(None)


def test_an_explicit_device_beats_the_environment(monkeypatch):
    monkeypatch.setenv("GPUMLP_DEVICE", "gpu")
    assert gpumlp.MLP([2, 2], device="cpu").backend.xp is np


def test_to_numpy_copies_host_arrays():
    a = np.arange(3.0)
    b = gpumlp.to_numpy(a)
    b[0] = 9
    assert a[0] == 0
    assert gpumlp.to_numpy(np.float32(2.5)) == 2.5


def test_the_strict_device_catches_a_numpy_call_in_the_device_path(monkeypatch):
    """The CI check can fail: a stray np.maximum in an activation breaks the strict run."""
    from gpumlp.activations import ReLU
    from gpumlp.testing import strict_backend
    net = gpumlp.MLP([3, 4, 2], device=strict_backend(), seed=0)
    x = np.ones((3, 5))
    net.forward(x)                                      # fine as written
    monkeypatch.setattr(ReLU, "forward", lambda self, xp, S, out: np.maximum(S, 0, out=out))
    with pytest.raises(RuntimeError, match="Can't convert array on the .*device1"):
        net.forward(x)
    monkeypatch.setattr(ReLU, "forward", lambda self, xp, S, out: xp.maximum(S, np.zeros(S.shape)))
    with pytest.raises(TypeError):
        net.forward(x)
