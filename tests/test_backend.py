"""Choosing the backend: auto, cpu, gpu, $GPUMLP_DEVICE (any case), and clear errors when a GPU
is missing; the probe's exact messages; what each backend copies or aliases, owns and is named."""
import sys
import types

import numpy as np
import pytest

import gpumlp
from gpumlp import backend as B
from gpumlp.testing import exact, strict_backend

CPU = B.get_backend("cpu")


@pytest.fixture(autouse=True)
def fresh_auto(monkeypatch):
    monkeypatch.setattr(B, "_auto", None)
    monkeypatch.delenv("GPUMLP_DEVICE", raising=False)


def fake_cupy(monkeypatch, count=None, error=None, kernels=np.maximum, version="14.0.1"):
    """Install a stand-in ``cupy`` whose device count is ``count`` or raises ``error``, whose
    kernels are ``kernels`` (NumPy's, or a function that raises) and whose version is
    ``version``; the auto choice is made afresh.  Returns the stand-in."""
    def get_count():
        if error:
            raise error
        return count
    runtime = types.SimpleNamespace(getDeviceCount=get_count)
    module = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime), ndarray=type("ndarray", (), {}),
                                   ones=np.ones, float32=np.float32, maximum=kernels, __version__=version)
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setattr(B, "_auto", None)
    return module


def raising(error):
    """Kernels that fail with ``error``, as CuPy's do when its CUDA libraries are missing."""
    def kernels(*args):
        raise error
    return kernels


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
    with pytest.raises(gpumlp.DeviceUnavailableError,
                       match=r"CuPy package is not installed.*pip install -e '\.\[gpu\]' \(in the gpumlp checkout\)"):
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
    net = gpumlp.MLP([3, 4, 2], device=strict_backend(), seed=0)
    x = np.ones((3, 5))
    net.forward(x)                                      # fine as written
    monkeypatch.setattr(ReLU, "forward", lambda self, xp, S, out: np.maximum(S, 0, out=out))
    with pytest.raises(RuntimeError, match="Can't convert array on the .*device1"):
        net.forward(x)
    monkeypatch.setattr(ReLU, "forward", lambda self, xp, S, out: xp.maximum(S, np.zeros(S.shape)))
    with pytest.raises(TypeError):
        net.forward(x)


# -- device names ignore case and surrounding spaces ------------------------------------------
def test_device_names_ignore_case_and_spaces(monkeypatch):
    monkeypatch.delenv("GPUMLP_DEVICE", raising=False)
    for name in ("CPU", " Cpu ", "cpu\n"):
        assert gpumlp.get_backend(name).xp is np, name
    assert gpumlp.MLP([2, 2], device="CPU").backend.xp is np
    monkeypatch.setenv("GPUMLP_DEVICE", "CPU")
    assert gpumlp.get_backend(None).xp is np
    assert gpumlp.MLP([2, 2], device=None).backend.xp is np
    monkeypatch.setenv("GPUMLP_DEVICE", " Cpu ")
    assert gpumlp.get_backend(None).xp is np


def test_gpu_in_capitals_without_cupy_is_device_unavailable(monkeypatch):
    monkeypatch.setattr(B, "_auto", None)
    monkeypatch.setitem(sys.modules, "cupy", None)        # import cupy -> ImportError
    monkeypatch.setenv("GPUMLP_DEVICE", "GPU")
    with pytest.raises(gpumlp.DeviceUnavailableError, match="CuPy package is not installed"):
        gpumlp.get_backend(None)
    with pytest.raises(gpumlp.DeviceUnavailableError):
        gpumlp.MLP([2, 2], device=None)
    with pytest.raises(gpumlp.DeviceUnavailableError):
        gpumlp.get_backend(" Gpu ")


# -- the backends' contracts: copies and aliases, ownership, names, the probe's messages ------
def test_numpy_asarray_copies_unless_told_not_to():
    a = np.arange(3.0)
    for c in (CPU.asarray(a, np.float64), CPU.asarray(a, np.float64, copy=True)):
        assert c is not a and not np.shares_memory(c, a)
    assert CPU.asarray(a, np.float64, copy=False) is a


def test_strict_asarray_copies_unless_told_not_to():
    b = strict_backend()
    f64 = b.namespace.float64
    host = np.arange(3.0)
    a = b.asarray(host, f64, copy=False)      # from the host: always a copy
    host[0] = 9.0
    assert gpumlp.to_numpy(a)[0] == 0.0
    host = np.arange(3.0)
    a = b.asarray(host, f64)
    host[0] = 9.0
    assert gpumlp.to_numpy(a)[0] == 0.0
    assert b.asarray(a, f64, copy=False) is a
    for c in (b.asarray(a, f64), b.asarray(a, f64, copy=True)):
        assert c is not a
        a[1] = 5.0
        assert gpumlp.to_numpy(c)[1] == 1.0
        a[1] = 1.0


def test_strict_transposed_is_a_new_array():
    b = strict_backend()
    a = b.asarray(np.arange(6.0).reshape(2, 3), b.namespace.float64)
    t = b.transposed(a)
    a[0, 1] = 99.0
    np.testing.assert_array_equal(gpumlp.to_numpy(t), np.arange(6.0).reshape(2, 3).T)


def test_strict_owns_only_its_namespace_and_device():
    xps = strict_backend().namespace
    on_device1, anywhere = strict_backend(), B.ArrayAPIBackend(xps)
    x1, x0 = xps.asarray([1.0], device=xps.Device("device1")), xps.asarray([1.0])
    assert on_device1.owns(x1) and not on_device1.owns(x0) and not on_device1.owns(np.ones(1))
    assert anywhere.owns(x0) and anywhere.owns(x1) and not anywhere.owns(np.ones(1))


def test_strict_zeros_name_and_a_float32_model():
    b = strict_backend()
    xps = b.namespace
    z = b.zeros((2, 3), xps.float32)
    assert z.dtype == xps.float32
    np.testing.assert_array_equal(gpumlp.to_numpy(z), np.zeros((2, 3)))
    assert b.name == "array_api_strict:array_api_strict.Device('device1')"
    assert repr(b) == "<gpumlp backend array_api_strict:array_api_strict.Device('device1')>"
    assert gpumlp.MLP([2, 3], dtype="float32", device=b).params.dtype == xps.float32


def test_cupy_backend_resolves_the_fused_switch(monkeypatch):
    module = types.SimpleNamespace()
    monkeypatch.setenv("GPUMLP_FUSED", "1")
    b = B.CupyBackend(module)
    assert b.xp is module and (b.fused, b.mode) == (True, "on")
    assert (B.CupyBackend(module, fused=0).fused, B.CupyBackend(module, fused=False).mode) == (False, "off")
    monkeypatch.setenv("GPUMLP_FUSED", "0")
    assert B.CupyBackend(module).fused is False
    assert B.CupyBackend(module, fused=1).fused is True
    monkeypatch.delenv("GPUMLP_FUSED")
    assert (B.CupyBackend(module).fused, B.CupyBackend(module).mode) == (True, "auto")


def test_probe_messages_and_the_backend_it_returns(monkeypatch):
    module = fake_cupy(monkeypatch, count=1)
    assert B.get_backend("gpu").xp is module
    fake_cupy(monkeypatch, count=0)
    with pytest.raises(gpumlp.DeviceUnavailableError, match=exact(
            "device='gpu' cannot be used: CuPy and the CUDA driver are present but no CUDA device was found")):
        B.get_backend("gpu")
    fake_cupy(monkeypatch, count=1, kernels=raising(RuntimeError("no nvrtc")))
    with pytest.raises(gpumlp.DeviceUnavailableError, match=exact(
            "device='gpu' cannot be used: a CUDA device is present but CuPy's CUDA libraries failed "
            "(RuntimeError: no nvrtc); the [ctk] extra of your CuPy package brings them "
            "(cupy-cuda12x[ctk] or cupy-cuda13x[ctk])")):
        B.get_backend("gpu")
    assert B.probe_cupy().absent is False                 # broken, not absent: the gpu tests fail, never skip
    fake_cupy(monkeypatch, count=1, version="13.6.0")
    with pytest.raises(gpumlp.DeviceUnavailableError, match=exact(
            "device='gpu' cannot be used: CuPy 13.6.0 is too old: gpumlp needs CuPy 14 or newer "
            "(pip install -U 'cupy-cuda12x>=14', or cupy-cuda13x)")):
        B.get_backend("gpu")
    assert B.probe_cupy().absent is False
    fake_cupy(monkeypatch, count=0)
    assert B.probe_cupy().absent is True
    monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy raises ImportError
    backend, why = B.probe_cupy()
    assert backend is None and why.startswith("the CuPy package is not installed") and B.probe_cupy().absent


def test_no_device_and_no_environment_means_auto(monkeypatch):
    monkeypatch.delenv("GPUMLP_DEVICE", raising=False)
    assert B.get_backend() is B.get_backend("auto")
    assert gpumlp.MLP([2, 2]).backend is B.get_backend("auto")


def test_backend_of_cupy_and_of_bare_array_api_objects(monkeypatch):
    CupyArray = type("ndarray", (), {"__module__": "cupy._core.core"})
    module = types.SimpleNamespace(ndarray=CupyArray)
    monkeypatch.setitem(sys.modules, "cupy", module)
    b = B.backend_of(CupyArray())
    assert isinstance(b, B.CupyBackend) and b.xp is module
    # what decides is the loaded CuPy's array type, not a module name: a stand-in device's arrays count
    Other = type("ndarray", (), {"__module__": "cupy._core.core"})
    assert B.backend_of(Other()) is B.get_backend("cpu")
    xps = strict_backend().namespace

    class Bare:                                           # the standard's minimum: no .device
        def __array_namespace__(self, api_version=None):
            return xps
    b = B.backend_of(Bare())
    assert isinstance(b, B.ArrayAPIBackend) and b.namespace is xps and b.device is None


def test_the_cupy_backend_moves_arrays_as_documented(standin):
    be = B.CupyBackend(standin, fused=False)
    dev = standin.asarray(np.arange(3.0))
    assert be.asarray(dev, np.float64, copy=False) is dev
    again = be.asarray(dev, np.float64)
    assert again is not dev and not np.shares_memory(again.view(np.ndarray), dev.view(np.ndarray))
    host = np.arange(3.0)
    out = be.to_numpy(host)
    assert type(out) is np.ndarray and out is not host and not np.shares_memory(out, host)
    assert np.array_equal(out, host) and np.array_equal(be.to_numpy(dev), host)
    out = be.to_numpy(dev)
    assert type(out) is np.ndarray and not np.shares_memory(out, dev.view(np.ndarray))


def test_the_cupy_backend_finds_cublas_as_a_submodule(monkeypatch):
    """CuPy may not import cupy.cublas with the package: the backend imports it by name."""
    calls = []
    fake, blas = types.ModuleType("fakecupy2"), types.ModuleType("fakecupy2.cublas")
    blas.dot = lambda x, y, out: calls.append((x, y, out))
    monkeypatch.setitem(sys.modules, "fakecupy2", fake)
    monkeypatch.setitem(sys.modules, "fakecupy2.cublas", blas)
    B.CupyBackend(fake, fused=False).dot("x", "y", "out")
    assert calls == [("x", "y", "out")]


def test_the_probe_reads_the_version_it_can(monkeypatch):
    module = fake_cupy(monkeypatch, count=1)
    del module.__version__
    backend, why = B.probe_cupy()
    assert backend is None and why.startswith("CuPy 0 is too old")
    module.__version__ = "dev14"
    assert B.probe_cupy()[1].startswith("CuPy dev14 is too old")
    module.__version__ = "14.0.0rc1"
    probe = B.probe_cupy()
    assert probe[0] is not None and probe[1] is None and probe.absent is False
