"""GPUMLP_FUSED=auto, the default on CuPy: each compiled kernel instance is checked against
its twin at its first launch in the process, and a kernel that disagrees is replaced by its
twin, with one warning.  Rehearsed on the stand-in device (tests/standin): its kernels are the
CUDA source built as host C++, so a planted bug in the source is a compiled kernel that is
wrong, as a miscompiled or broken kernel on a card would be."""
import time
import warnings

import numpy as np
import pytest

import gpumlp
from gpumlp.backend import CupyBackend
from gpumlp.kernels import check, launch, source
from gpumlp.testing import host, random_problem
from gpumlp.train import fit


@pytest.fixture
def fresh(monkeypatch):
    """No verdict and no built module carried in from other tests."""
    monkeypatch.setattr(check, "verdicts", {})
    monkeypatch.setattr(launch, "_modules", {})


def train(backend, loss="ce", epochs=2, **kw):
    sizes = [6, 12, 4]
    X, y = random_problem(sizes, 40, 3, "mse" if loss == "squared_error" else loss)
    net = gpumlp.MLP(sizes, dtype="float64", device=backend, seed=0)
    fit(net, X, y, gpumlp.SGD(0.05, 0.9, 1e-3), loss=loss, epochs=epochs, batch_size=16, progress=False,
        log=lambda line: None, **kw)
    return host(net.params)


def test_auto_checks_each_instance_once_and_then_runs_the_compiled_kernels(standin, fresh, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        auto = train(CupyBackend(standin, fused="auto"), noise_scale=True)
    assert check.verdicts and all(check.verdicts.values())
    # every launch after the first of an instance is the compiled kernel alone: no twin runs
    calls = []
    monkeypatch.setattr(check, "_difference", lambda *a: calls.append(a))
    train(CupyBackend(standin, fused="auto"), noise_scale=True)
    assert calls == []
    on = train(CupyBackend(standin, fused=True), noise_scale=True)
    np.testing.assert_array_equal(auto, on)              # the check changes no result
    keys = {(template.split("<")[0], dtype) for template, variant, dtype in check.verdicts}
    assert keys == {("bias_act", "float64"), ("act_grad", "float64"), ("ce_loss", "float64"), ("sgd", "float64"),
                    ("sample_sq", "float64")}


def test_a_kernel_that_disagrees_is_named_once_and_replaced_by_its_twin(standin, fresh, monkeypatch):
    wrong = source.CUDA_SOURCE.replace("if (ACT == 1) return s > T(0) ? T(1) : T(0);",
                                       "if (ACT == 1) return s > T(0) ? T(1) : T(0.5);")     # relu' of a negative
    assert wrong != source.CUDA_SOURCE
    monkeypatch.setattr(source, "CUDA_SOURCE", wrong)
    with pytest.warns(RuntimeWarning) as caught:
        auto = train(CupyBackend(standin, fused="auto"), epochs=3)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and messages[0].startswith(
        "gpumlp: the compiled kernel act_grad<double, 1> is not used: it disagreed with its twin at its first "
        "launch (relative error ")
    assert messages[0].endswith("; this process runs its twin from now on")
    assert [k for k, ok in check.verdicts.items() if not ok] == [("act_grad<{T}, 1>", (), "float64")]
    # the run is the twins' run: the first launch's result was replaced, every later one ran the twin
    monkeypatch.setattr(launch, "_modules", {})
    twins = train(CupyBackend(standin, fused=False), epochs=3)
    np.testing.assert_allclose(auto, twins, rtol=0, atol=1e-15)
    broken = train(CupyBackend(standin, fused=True), epochs=3)       # unchecked, the planted bug shows
    assert np.max(np.abs(broken - twins)) > 1e-6


def test_the_fallback_allocates_the_twins_scratch(standin, fresh, monkeypatch):
    """The fused path allocates no twin scratch (workspaces, SGD, losses); a twin that takes over
    must make its own, for every kernel: losses (both kinds), f', SGD and the per-example norms."""
    monkeypatch.setattr(check, "_difference", lambda *a: "planted")     # every kernel disagrees
    with pytest.warns(RuntimeWarning):
        auto = train(CupyBackend(standin, fused="auto"), loss="squared_error", noise_scale=True)
    assert check.verdicts and not any(check.verdicts.values())
    monkeypatch.setattr(check, "verdicts", {})
    with pytest.warns(RuntimeWarning):
        train(CupyBackend(standin, fused="auto"), loss="hinge", micro_batch=5)
    twins = train(CupyBackend(standin, fused=False), loss="squared_error", noise_scale=True)
    np.testing.assert_allclose(auto, twins, rtol=0, atol=1e-15)


def test_a_kernel_that_cannot_be_built_falls_back_to_its_twin(standin, fresh, monkeypatch):
    """A compiled form that cannot be built (NVRTC failing, say) is named and replaced, as one
    that disagrees; the training is the twins'."""
    monkeypatch.setenv("GPUMLP_STANDIN_BROKEN", "nvrtc")
    with pytest.warns(RuntimeWarning, match=r"is not used: it could not be built or launched: CompileException"):
        auto = train(CupyBackend(standin, fused="auto"))
    assert check.verdicts and not any(check.verdicts.values())
    monkeypatch.delenv("GPUMLP_STANDIN_BROKEN")
    np.testing.assert_allclose(auto, train(CupyBackend(standin, fused=False)), rtol=0, atol=1e-15)


def test_the_twin_that_took_over_makes_its_scratch_once(standin, fresh, monkeypatch):
    """After a kernel failed its check, later launches run the twin with scratch made once per
    shape, not at every call."""
    from gpumlp import kernels
    monkeypatch.setattr(check, "_difference", lambda *a: "planted")
    made = []
    real = kernels.LossScratch

    def counted(*args):
        made.append(args[1:])
        return real(*args)
    monkeypatch.setattr(kernels, "LossScratch", counted)
    with pytest.warns(RuntimeWarning):
        train(CupyBackend(standin, fused="auto"), epochs=3)         # 40 columns in batches of 16, 16, 8
    assert sorted(made) == [(4, 8, np.dtype("float64")), (4, 16, np.dtype("float64"))]     # 9 launches, 2 shapes


def test_the_first_launch_check_costs_once(standin, fresh, capsys):
    """The one-time cost on the stand-in: the first step in a process with and without the check."""
    sizes = [64, 256, 10]
    X, y = random_problem(sizes, 256, 0, "ce")
    seconds = {}
    for mode in ("on", "auto"):
        check.verdicts.clear()
        net = gpumlp.MLP(sizes, device=CupyBackend(standin, fused=mode), seed=0)
        for i in range(2):              # the first builds the module; the second is timed
            check.verdicts.clear()      # (auto: its first launches checked)
            t0 = time.perf_counter()
            fit(net, X, y, gpumlp.SGD(0.05, 0.9), epochs=1, batch_size=256, progress=False, log=lambda line: None)
            seconds[mode] = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n  first step of 64-256-10 at N = 256 on the stand-in: {seconds['on'] * 1e3:.1f} ms unchecked, "
              f"{seconds['auto'] * 1e3:.1f} ms with the first-launch check")
    assert seconds["auto"] > 0 and seconds["on"] > 0
