"""Tests that close the gaps a mutation run (mutmut 3.8.1 over backend, activations, model,
losses, optim, train and kernels) left open: exact error messages, the ``normalizer`` of
every loss against its formula, ``one_hot``, the kernel templates against the compiled
name list, the copy/alias contracts of the backends, the dtype of every scratch buffer,
the batch widths of evaluate and predict, the progress bar, the epoch log line, and the
documented defaults."""
import functools
import time
import types
import warnings

import numpy as np
import pytest

import gpumlp
from gpumlp import backend as B
from gpumlp import kernels
from gpumlp.activations import ACTIVATIONS
from gpumlp.testing import exact, ref_ce, ref_hinge
from gpumlp.testing import labelled_problem as problem
from gpumlp.train import TrainingDiverged, evaluate, fit

CPU = gpumlp.get_backend("cpu")
QUIET = dict(progress=False, log=lambda line: None)






# == kernels ============================================================================
@pytest.mark.parametrize("value,mode", [("1", "on"), ("true", "on"), (" TRUE ", "on"), ("yes", "on"),
                                        ("on", "on"), ("ON", "on"), ("0", "off"), ("off", "off"), ("No", "off"),
                                        ("false", "off"), ("auto", "auto"), (" Auto ", "auto"), ("", "auto"),
                                        (None, "auto")])
def test_the_fused_switch(monkeypatch, value, mode):
    if value is None:
        monkeypatch.delenv("GPUMLP_FUSED", raising=False)
    else:
        monkeypatch.setenv("GPUMLP_FUSED", value)
    assert kernels.fused_mode() == mode
    assert kernels.fused_mode(True) == "on" and kernels.fused_mode(False) == "off"
    assert kernels.fused_mode("auto") == "auto" and kernels.fused_mode(0) == "off"


def test_a_bad_fused_switch_is_an_error(monkeypatch):
    monkeypatch.setenv("GPUMLP_FUSED", "2")
    with pytest.raises(ValueError, match=exact("$GPUMLP_FUSED must be auto, 1 (compiled kernels, unchecked) or 0 "
                                               "(the twins); got '2'")):
        kernels.fused_mode()
    with pytest.raises(ValueError, match="fused must be auto"):
        kernels.fused_mode("maybe")


def test_every_kernel_names_a_compiled_template():
    """Each kernel's name, and its CUDA template, which must be one of the instances
    compiled (``instantiations()``) for both float and double."""
    compiled = kernels.instantiations()
    assert len(compiled) == len(set(compiled)) == 50
    expected = {  # activation: (bias_act without bias, with bias, act_grad, f' scratch)
        "linear": (("linear", None), ("bias", "bias_act<{T}, 0, 1>"), ("linear'", None), None),
        "relu": (("relu", "bias_act<{T}, 1, 0>"), ("bias+relu", "bias_act<{T}, 1, 1>"),
                 ("relu'", "act_grad<{T}, 1>"), "bool"),
        "leaky_relu": (("leaky_relu", "bias_act<{T}, 2, 0>"), ("bias+leaky_relu", "bias_act<{T}, 2, 1>"),
                       ("leaky_relu'", "act_grad<{T}, 2>"), "float"),
        "tanh": (("tanh", "bias_act<{T}, 3, 0>"), ("bias+tanh", "bias_act<{T}, 3, 1>"),
                 ("tanh'", "act_grad<{T}, 3>"), "float"),
        "sigmoid": (("sigmoid", "bias_act<{T}, 4, 0>"), ("bias+sigmoid", "bias_act<{T}, 4, 1>"),
                    ("sigmoid'", "act_grad<{T}, 4>"), "float"),
    }
    templates = []
    for name, (plain, biased, grad, scratch) in expected.items():
        f = ACTIVATIONS[name]
        for k, (kname, cuda) in ((kernels.bias_act(f, False), plain), (kernels.bias_act(f, True), biased),
                                 (kernels.act_grad(f), grad)):
            assert (k.name, k.cuda) == (kname, cuda)
            assert repr(k) == f"<gpumlp kernel {kname}>"
            templates += [cuda] if cuda else []
        assert f.scratch == scratch                 # what the workspace lends its twin
    templates += [k.cuda for k in kernels.LOSS_KERNELS.values()] + ["squared_error_loss<{T}>"]
    assert [k.cuda for k in kernels.TARGET_LOSS_KERNELS.values()] == ["squared_error_loss<{T}>"]
    templates += [f"sgd<{{T}}, {m}, {d}>" for m in "01" for d in "01"]
    templates += [f"sample_sq<{{T}}, {b}, {f}>" for b in "01" for f in "01"]
    assert (kernels.SGD_KERNEL.cuda, kernels.SAMPLE_SQ_KERNEL.cuda) == ("sgd<{T}, {M}, {D}>", "sample_sq<{T}, {B}, {F}>")
    instances = [t.format(T=T) for t in templates for T in ("float", "double")]
    assert sorted(instances) == sorted(compiled)


def test_loss_scratch_is_in_the_given_dtype():
    s = kernels.LossScratch(CPU, 3, 4, np.float32)
    for a in (s.onehot, s.a, s.b):
        assert a.shape == (3, 4) and a.dtype == np.float32
    for a in (s.m, s.sum, s.py):
        assert a.shape == (1, 4) and a.dtype == np.float32
    assert s.argmax.dtype == np.int64
    np.testing.assert_array_equal(s.rows, [[0], [1], [2]])




def forward_widths(monkeypatch, net):
    widths, forward = [], net._forward

    def recorded(Z0):
        widths.append(Z0.shape[1])
        return forward(Z0)
    monkeypatch.setattr(net, "_forward", recorded)
    return widths


def test_predict_and_evaluate_walk_the_data_in_batches(monkeypatch):
    net = gpumlp.MLP([3, 4, 3], dtype="float64", device="cpu", seed=0)
    X, y = problem(n=10)
    expected = np.argmax(net.forward(X), axis=0)
    whole = evaluate(net, X, y, batch_size=64)
    widths = forward_widths(monkeypatch, net)
    np.testing.assert_array_equal(net.predict(X, batch_size=3), expected)
    assert widths == [3, 3, 3, 1]
    widths.clear()
    assert evaluate(net, X, y, batch_size=4) == pytest.approx(whole, rel=1e-12)
    assert widths == [4, 4, 2]


def test_the_default_batch_is_4096_columns(monkeypatch):
    net = gpumlp.MLP([1, 2], dtype="float64", device="cpu", seed=0)
    X, y = problem(d0=1, n=4097, k=2)
    widths = forward_widths(monkeypatch, net)
    net.predict(X)
    evaluate(net, X, y)
    fit(net, X[:, :4], y[:4], gpumlp.SGD(0.1), epochs=1, batch_size=4, X_test=X, y_test=y, **QUIET)
    assert widths == [4096, 1] * 2 + [4] + [4096, 1]


# == evaluate, fit ======================================================================
def test_evaluate_defaults_to_cross_entropy_and_checks_its_arguments():
    net = gpumlp.MLP([3, 4, 3], dtype="float64", device="cpu", seed=0)
    X, y = problem()
    loss, acc = evaluate(net, X, y)
    Y = net.forward(X)
    assert loss == pytest.approx(ref_ce(Y, y, 10)[0], rel=1e-12)
    assert acc == np.mean(np.argmax(Y, axis=0) == y)
    assert evaluate(net, X, y, loss="hinge", margin=0.0)[0] == pytest.approx(ref_hinge(Y, y, 0.0, 10)[0], rel=1e-12)
    with pytest.raises(ValueError, match=exact("batch_size must be a positive integer; got 0")):
        evaluate(net, X, y, batch_size=0)
    with pytest.raises(ValueError, match=exact("margin must be a finite number >= 0; got -1")):
        evaluate(net, X, y, margin=-1)


def test_labels_are_checked_against_the_output_width_not_a_hidden_one():
    net = gpumlp.MLP([3, 5, 3], device="cpu", seed=0)
    X, _ = problem()
    y = np.array([0, 1, 2, 4, 0, 1, 2, 0, 1, 2])
    message = exact("labels must lie in [0, 3) for 3 classes (the rows of Y); got values from 0 to 4")
    with pytest.raises(ValueError, match=message):
        evaluate(net, X, y)
    with pytest.raises(ValueError, match=message):
        fit(net, X, y, gpumlp.SGD(0.1), **QUIET)


def test_fit_argument_messages_and_margins():
    net = gpumlp.MLP([3, 4, 3], device="cpu", seed=0)
    X, y = problem()
    with pytest.raises(ValueError, match=exact("give X_test and y_test together, or neither")):
        fit(net, X, y, gpumlp.SGD(0.1), X_test=X, **QUIET)
    with pytest.raises(ValueError, match=exact("margin must be a finite number >= 0; got -0.5")):
        fit(net, X, y, gpumlp.SGD(0.1), loss="hinge", margin=-0.5, **QUIET)
    for margin in (0.0, 0.5):
        assert len(fit(net, X, y, gpumlp.SGD(0.1), loss="hinge", margin=margin, epochs=1, **QUIET)) == 1


def test_fit_defaults_30_epochs_and_seed_0():
    X, y = problem(n=6)

    def run(**kwargs):
        net = gpumlp.MLP([3, 3], dtype="float64", device="cpu", seed=0)
        return fit(net, X, y, gpumlp.SGD(0.1), batch_size=2, **QUIET, **kwargs), net.params.copy()
    history, params = run()
    assert [h["epoch"] for h in history] == list(range(1, 31))
    np.testing.assert_array_equal(params, run(seed=0, epochs=30)[1])
    assert not np.array_equal(params, run(seed=1, epochs=30)[1])


class Bar:
    """A stand-in for tqdm that records how fit drives it."""
    made = []

    def __init__(self, **kwargs):
        self.kwargs, self.n = kwargs, 0
        Bar.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        self.n += n


def test_the_progress_bar_counts_every_step(monkeypatch):
    monkeypatch.setattr(gpumlp.train, "tqdm", Bar)
    X, y = problem(n=10)
    net = gpumlp.MLP([3, 3], device="cpu", seed=0)
    fit(net, X, y, gpumlp.SGD(0.1), epochs=3, batch_size=4, log=lambda line: None, progress=True)
    bar = Bar.made[-1]
    assert bar.kwargs == {"total": 9, "unit": "batch", "disable": None, "leave": False}   # None: only on a terminal
    assert bar.n == 9
    fit(net, X, y, gpumlp.SGD(0.1), epochs=1, batch_size=4, **QUIET)
    assert Bar.made[-1].kwargs["disable"] is True


def test_the_epoch_log_lines():
    X, y = problem(n=10)
    Xt, yt = problem(n=6, seed=1)
    net = gpumlp.MLP([3, 3], device="cpu", seed=0)
    lines = []
    history = fit(net, X, y, gpumlp.SGD(0.1), epochs=2, batch_size=4, X_test=Xt, y_test=yt,
                  progress=False, log=lines.append)
    assert lines == [f"epoch   {h['epoch']}/2  loss {h['loss']:.4f}  acc {h['accuracy']:.4f}"
                     f"  test loss {h['test_loss']:.4f}  test acc {h['test_accuracy']:.4f}" for h in history]
    lines.clear()
    history = fit(net, X, y, gpumlp.SGD(0.1), epochs=1, batch_size=4, progress=False, log=lines.append)
    assert lines == [f"epoch   1/1  loss {history[0]['loss']:.4f}  acc {history[0]['accuracy']:.4f}"]


def test_epoch_seconds_are_measured():
    X, y = problem(n=10)
    net = gpumlp.MLP([3, 3], device="cpu", seed=0)
    t0 = time.perf_counter()
    history = fit(net, X, y, gpumlp.SGD(0.1), epochs=2, batch_size=4, **QUIET)
    elapsed = time.perf_counter() - t0
    assert all(0 <= h["seconds"] <= elapsed for h in history)
    assert sum(h["seconds"] for h in history) <= elapsed


def test_a_diverging_run_raises_no_numpy_warnings():
    """Overflow and invalid values on the way to NaN are silenced; the run stops with
    TrainingDiverged only, even where warnings are errors."""
    X, y = problem(n=12)
    net = gpumlp.MLP([3, 4, 3], dtype="float32", device="cpu", seed=0)
    with warnings.catch_warnings(), np.errstate(over="warn", invalid="warn", divide="warn"):
        warnings.simplefilter("error")
        with pytest.raises(TrainingDiverged):
            fit(net, X, y, gpumlp.SGD(1e4), loss="mse", epochs=20, batch_size=4, **QUIET)


def test_divergence_with_an_optimizer_without_lr():
    class Blowup:                                     # any object with update(net, normalizer) will do
        def update(self, net, normalizer):
            net.params[...] = np.inf
    X, y = problem(n=8)
    net = gpumlp.MLP([3, 3], device="cpu", seed=0)
    with pytest.raises(TrainingDiverged) as info:
        fit(net, X, y, Blowup(), epochs=1, batch_size=4, **QUIET)
    assert str(info.value).endswith("try a lower learning rate (it is ?)")




# == the compiled path of 0.4.0: what mutmut found unchecked ==============================
from gpumlp.kernels import check as CHECK  # noqa: E402
from gpumlp.kernels import launch as LAUNCH  # noqa: E402
from gpumlp.kernels import source as SOURCE  # noqa: E402


def test_the_first_launch_check_compares_as_documented():
    d = CHECK._difference
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


def test_each_kernel_fills_only_the_scratch_it_is_not_given():
    cpu = gpumlp.get_backend("cpu")
    D = np.ones((3, 4))
    given = kernels.LossScratch(cpu, 3, 4, np.float64)
    args = (D, np.zeros(4, np.int64), D, np.ones(4), np.ones(4, bool), 0.25, 1.0, given)
    assert kernels.LOSS_KERNELS["ce"].scratch(cpu, args) is args
    filled = kernels.LOSS_KERNELS["ce"].scratch(cpu, args[:7] + (None,))
    assert isinstance(filled[7], kernels.LossScratch) and filled[7].onehot.shape == (3, 4)
    p, tmp = np.ones(5, np.float32), np.ones(5, np.float32)
    args = (p, np.ones(6), None, 0.1, 0.0, 0.0, tmp)
    assert kernels.SGD_KERNEL.scratch(cpu, args) is args
    filled = kernels.SGD_KERNEL.scratch(cpu, args[:6] + (None,))
    assert filled[6].shape == (5,) and filled[6].dtype == np.float32
    Z = np.ones((7, 4))
    filled = kernels.SAMPLE_SQ_KERNEL.scratch(cpu, (D, Z, True, False, np.ones(4), None, None, None))
    assert [a.shape for a in filled[5:]] == [(7, 4), (4,), (4,)]
    relu = kernels.act_grad(ACTIVATIONS["relu"])
    mask, tmp = np.ones((3, 4), bool), np.ones((3, 4))
    assert relu.scratch(cpu, (D, D, D, mask, tmp))[3:] == (mask, tmp)
    filled = relu.scratch(cpu, (D, D, D, None, None))
    assert (filled[3].dtype, filled[3].shape, filled[4].dtype, filled[4].shape) == (np.bool_, (3, 4), np.float64, (3, 4))


def test_the_module_is_built_once_with_the_options_and_every_function_fetched_once():
    built, fetched = [], []

    class Module:
        def __init__(self, code, options=(), name_expressions=()):
            built.append((code, options, tuple(name_expressions)))

        def get_function(self, name):
            fetched.append(name)
            return lambda grid, block, args: None
    fake = types.ModuleType("fakecupy")
    fake.RawModule = Module
    run = LAUNCH.sgd(fake, kernels.SGD_KERNEL)
    p = np.zeros(3, np.float32)
    for _ in range(3):
        run(p, p, None, 0.1, 0.0, 0.0)
    assert built == [(SOURCE.CUDA_SOURCE, ("--std=c++14", "--fmad=false"), tuple(SOURCE.instantiations()))]
    assert fetched == ["sgd<float, 0, 0>"]
    assert LAUNCH.build(fake) == len(SOURCE.instantiations()) and len(built) == 1
    assert fetched[1:] == SOURCE.instantiations()                        # build fetches every instance
    del LAUNCH._modules[fake]


def test_the_grid_covers_n_with_the_fewest_blocks_up_to_the_limit():
    assert LAUNCH._grid(1) == ((1,), (256,)) and LAUNCH._grid(0) == ((1,), (256,))
    assert LAUNCH._grid(256) == ((1,), (256,)) and LAUNCH._grid(257) == ((2,), (256,))
    assert LAUNCH._grid(256 * 65535) == ((65535,), (256,)) and LAUNCH._grid(10**9) == ((65535,), (256,))


def test_the_source_is_read_from_the_package_file():
    from pathlib import Path
    assert SOURCE._read() == (Path(SOURCE.__file__).with_name("fused.cu")).read_text(encoding="utf-8")
    assert "‖" in SOURCE._read()                 # not ASCII: read as UTF-8 whatever the locale


def test_the_twins_mode_builds_no_module(standin, monkeypatch):
    """GPUMLP_FUSED=0 runs the twins: nothing is compiled."""
    monkeypatch.setattr(LAUNCH, "_modules", {})
    net = gpumlp.MLP([4, 6, 3], device=B.CupyBackend(standin, fused=False), seed=0)
    fit(net, np.ones((4, 8)), np.arange(8) % 3, gpumlp.SGD(0.1), epochs=1, batch_size=4, progress=False)
    assert LAUNCH._modules == {}


def test_the_check_keeps_arguments_passed_twice_one_buffer(standin, monkeypatch):
    """A linear layer with a bias passes S as its Z: the twin's copies must alias likewise, or
    the check compares a stale Z (caught only with non-zero biases)."""
    monkeypatch.setattr(CHECK, "verdicts", {})
    net = gpumlp.MLP([4, 5, 3], activation="tanh", device=B.CupyBackend(standin, fused="auto"), seed=0)
    net.set_params(net.get_params()[0], [np.full((5, 1), 0.5), np.full((3, 1), -0.25)])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="gpumlp: the compiled kernel")
        net.forward(np.ones((4, 6)))
    assert CHECK.verdicts[("bias_act<{T}, 0, 1>", (), "float32")] is True


def test_the_checks_warning_names_the_instance_and_the_error(standin, monkeypatch):
    monkeypatch.setattr(CHECK, "verdicts", {})

    def broken(*args):
        raise RuntimeError("cuLaunchKernel failed\nsecond line")
    k = kernels.act_grad(ACTIVATIONS["relu"])
    be = B.CupyBackend(standin, fused="auto")
    run = CHECK.checked(be, k, broken, functools.partial(k.twin, standin))
    S = standin.asarray(np.array([[1.0, -1.0]], np.float32))
    D = standin.asarray(np.array([[2.0, 3.0]], np.float32))
    with pytest.warns(RuntimeWarning) as caught:
        run(S, S, D, None, None)
    assert str(caught[0].message) == ("gpumlp: the compiled kernel act_grad<float, 1> is not used: it could not be "
                                      "built or launched: RuntimeError: cuLaunchKernel failed; this process runs "
                                      "its twin from now on")
    assert caught[0].filename == __file__                      # the warning points at the caller
    assert np.array_equal(standin.asnumpy(D), [[2.0, 0.0]])
    monkeypatch.setattr(CHECK, "verdicts", {})

    def silent(*args):
        raise RuntimeError()
    run = CHECK.checked(be, k, silent, functools.partial(k.twin, standin))
    with pytest.warns(RuntimeWarning, match="could not be built or launched: RuntimeError: ; this process"):
        run(S, S, standin.asarray(np.ones((1, 2), np.float32)), None, None)


def test_the_check_compares_every_result_a_kernel_writes(standin, monkeypatch):
    """bias_act writes S (with its bias) as well as Z: a compiled form that forgot S is caught."""
    monkeypatch.setattr(CHECK, "verdicts", {})
    monkeypatch.setattr(LAUNCH, "_modules", {})
    wrong = SOURCE.CUDA_SOURCE.replace("if (BIAS) { s = s + b[i / cols]; S[i] = s; }", "if (BIAS) { s = s + b[i / cols]; }")
    assert wrong != SOURCE.CUDA_SOURCE
    monkeypatch.setattr(SOURCE, "CUDA_SOURCE", wrong)
    net = gpumlp.MLP([4, 5, 3], device=B.CupyBackend(standin, fused="auto"), seed=0)
    net.set_params(net.get_params()[0], [np.full((5, 1), 0.5), np.full((3, 1), -0.25)])
    with pytest.warns(RuntimeWarning) as caught:
        net.forward(np.ones((4, 6)))
    named = sorted(str(w.message).split(" is not used")[0] for w in caught)
    assert named == ["gpumlp: the compiled kernel bias_act<float, 0, 1>",      # the linear output layer's, too
                     "gpumlp: the compiled kernel bias_act<float, 1, 1>"]
