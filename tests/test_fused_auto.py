"""GPUMLP_FUSED=auto, the default on CuPy: each compiled kernel instance is checked against
its twin at its first launch in the process, and a kernel that disagrees is replaced by its
twin, with one warning.  Rehearsed on the stand-in device (tests/standin): its kernels are the
CUDA source built as host C++, so a planted bug in the source is a compiled kernel that is
wrong, as a miscompiled or broken kernel on a card would be."""
import functools
import time
import warnings

import numpy as np
import pytest

import gpumlp
from gpumlp import kernels
from gpumlp.activations import ACTIVATIONS
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
    from gpumlp.kernels import twins
    monkeypatch.setattr(check, "_difference", lambda *a: "planted")
    made = []
    real = twins.LossScratch

    def counted(*args):
        made.append(args[1:])
        return real(*args)
    monkeypatch.setattr(twins, "LossScratch", counted)
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
        for _ in range(2):              # the first builds the module; the second is timed
            check.verdicts.clear()      # (auto: its first launches checked)
            t0 = time.perf_counter()
            fit(net, X, y, gpumlp.SGD(0.05, 0.9), epochs=1, batch_size=256, progress=False, log=lambda line: None)
            seconds[mode] = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n  first step of 64-256-10 at N = 256 on the stand-in: {seconds['on'] * 1e3:.1f} ms unchecked, "
              f"{seconds['auto'] * 1e3:.1f} ms with the first-launch check")
    assert seconds["auto"] > 0 and seconds["on"] > 0


# -- the check's comparison, its aliasing, its warning; the twins mode builds nothing ------------
def test_the_first_launch_check_compares_as_documented():
    d = check._difference
    f = np.array([1.0, -2.0, 4.0])
    assert d(np.array([True, False]), np.array([True, False]), "float32") is None
    assert d(np.array([True, False, True]), np.array([True, True, False]), "float32") == "2 of 3 flags differ"
    assert d(f, f.copy(), "float64") is None
    assert d(np.array([np.nan, 1.0]), np.array([1.0, np.nan]), "float64") == "NaN in different places"
    assert d(np.array([np.inf, 1.0]), np.array([np.inf, 1.0]), "float64") is None
    assert d(np.array([np.inf, 1.0]), np.array([1.0, 1.0]), "float64") == "infinities in different places"
    assert d(np.array([np.inf, 1.0]), np.array([-np.inf, 1.0]), "float64") == "infinities in different places"
    assert d(np.array([np.inf, 4.0]), np.array([np.inf, 4.0 + 2e-12]), "float64") is None
    assert d(np.zeros(3), np.zeros(3), "float64") is None
    assert d(np.array([1e-30, 0.0]), np.zeros(2), "float64") == "non-zero values (1e-30) where the twin wrote zeros"
    assert d(np.array([4.0 + 4e-5 * 1.0001]), np.array([4.0]), "float32").startswith("relative error 1e-05 > 1e-05")
    assert d(np.array([4.0 + 4e-5 * 0.999]), np.array([4.0]), "float32") is None
    assert d(np.array([100001.0]), np.array([100000.0]), "float32") is None          # exactly the tolerance
    assert d(np.array([], np.float32), np.array([], np.float32), "float32") is None
    # float32 results are compared in float64: 16777217 is not a float32, but their difference is seen
    assert d(np.array([2.0], np.float32), np.array([2.0 + 1e-4], np.float64), "float32").startswith("relative error")


def test_the_twins_mode_builds_no_module(standin, monkeypatch):
    """GPUMLP_FUSED=0 runs the twins: nothing is compiled."""
    monkeypatch.setattr(launch, "_modules", {})
    net = gpumlp.MLP([4, 6, 3], device=CupyBackend(standin, fused=False), seed=0)
    fit(net, np.ones((4, 8)), np.arange(8) % 3, gpumlp.SGD(0.1), epochs=1, batch_size=4, progress=False)
    assert launch._modules == {}


def test_the_check_keeps_arguments_passed_twice_one_buffer(standin, monkeypatch):
    """A linear layer with a bias passes S as its Z: the twin's copies must alias likewise, or
    the check compares a stale Z (caught only with non-zero biases)."""
    monkeypatch.setattr(check, "verdicts", {})
    net = gpumlp.MLP([4, 5, 3], activation="tanh", device=CupyBackend(standin, fused="auto"), seed=0)
    net.set_params(net.get_params()[0], [np.full((5, 1), 0.5), np.full((3, 1), -0.25)])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="gpumlp: the compiled kernel")
        net.forward(np.ones((4, 6)))
    assert check.verdicts[("bias_act<{T}, 0, 1>", (), "float32")] is True


def test_the_checks_warning_names_the_instance_and_the_error(standin, monkeypatch):
    monkeypatch.setattr(check, "verdicts", {})

    def broken(*args):
        raise RuntimeError("cuLaunchKernel failed\nsecond line")
    k = kernels.act_grad(ACTIVATIONS["relu"])
    be = CupyBackend(standin, fused="auto")
    run = check.checked(be, k, broken, functools.partial(k.twin, standin))
    S = standin.asarray(np.array([[1.0, -1.0]], np.float32))
    D = standin.asarray(np.array([[2.0, 3.0]], np.float32))
    with pytest.warns(RuntimeWarning) as caught:
        run(S, S, D, None, None)
    assert str(caught[0].message) == ("gpumlp: the compiled kernel act_grad<float, 1> is not used: it could not be "
                                      "built or launched: RuntimeError: cuLaunchKernel failed; this process runs "
                                      "its twin from now on")
    assert caught[0].filename == __file__                      # the warning points at the caller
    assert np.array_equal(standin.asnumpy(D), [[2.0, 0.0]])
    monkeypatch.setattr(check, "verdicts", {})

    def silent(*args):
        raise RuntimeError()
    run = check.checked(be, k, silent, functools.partial(k.twin, standin))
    with pytest.warns(RuntimeWarning, match="could not be built or launched: RuntimeError: ; this process"):
        run(S, S, standin.asarray(np.ones((1, 2), np.float32)), None, None)


def test_the_check_compares_every_result_a_kernel_writes(standin, monkeypatch):
    """bias_act writes S (with its bias) as well as Z: a compiled form that forgot S is caught."""
    monkeypatch.setattr(check, "verdicts", {})
    monkeypatch.setattr(launch, "_modules", {})
    wrong = source.CUDA_SOURCE.replace("if (BIAS) { s = s + b[i / cols]; S[i] = s; }",
                                       "if (BIAS) { s = s + b[i / cols]; }")
    assert wrong != source.CUDA_SOURCE
    monkeypatch.setattr(source, "CUDA_SOURCE", wrong)
    net = gpumlp.MLP([4, 5, 3], device=CupyBackend(standin, fused="auto"), seed=0)
    net.set_params(net.get_params()[0], [np.full((5, 1), 0.5), np.full((3, 1), -0.25)])
    with pytest.warns(RuntimeWarning) as caught:
        net.forward(np.ones((4, 6)))
    named = sorted(str(w.message).split(" is not used")[0] for w in caught)
    assert named == ["gpumlp: the compiled kernel bias_act<float, 0, 1>",      # the linear output layer's, too
                     "gpumlp: the compiled kernel bias_act<float, 1, 1>"]
