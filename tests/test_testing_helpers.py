"""gpumlp.testing: the shared test helpers are themselves pinned, line by line, so that a helper
that silently stopped counting, comparing or skipping could not let the suite pass."""
import math
import os
import stat
import sys

import numpy as np
import pytest

import gpumlp
from gpumlp import kernels
from gpumlp.activations import ACTIVATIONS
from gpumlp.backend import ArrayAPIBackend, Backend
from gpumlp.testing import (
    TALLY,
    VIEWS,
    CountingArray,
    CountingBackend,
    Tally,
    _owns_new_memory,
    _plain,
    _wrap,
    exact,
    host,
    labelled_problem,
    mpiexec,
    random_biases,
    random_problem,
    ref_ce,
    ref_hinge,
    ref_mse,
    ref_softmax,
    rel_err,
    strict_backend,
)


def raised(fn):
    """The BaseException ``fn()`` raised (a pytest skip included, which would otherwise turn a
    failing check into a skipped test), or None."""
    try:
        fn()
    except BaseException as e:          # noqa: B036 (the caller asserts on it)
        return e
    return None


def returned(fn):
    """``fn()``, failing (not skipping) the test when it skips."""
    try:
        return fn()
    except pytest.skip.Exception as e:
        pytest.fail(f"skipped unexpectedly: {e.msg}")


@pytest.fixture
def tally():
    """The global TALLY, empty and not paused, for one test."""
    assert TALLY.paused == 0
    TALLY.clear()
    yield TALLY
    TALLY.clear()
    assert TALLY.paused == 0


def counted(a):
    return np.asarray(a, dtype=np.float64).view(CountingArray)


# -- host and rel_err -----------------------------------------------------------------------

def test_host_returns_a_numpy_copy():
    a = counted([[1.0, 2.0]])
    h = host(a)
    assert type(h) is np.ndarray and h.tolist() == [[1.0, 2.0]]
    assert not np.shares_memory(h, a)


def test_rel_err_is_the_normwise_relative_error_by_hand():
    assert rel_err([1.0, 5.0], [2.0, 4.0]) == 0.25             # max |a - b| = 1, max |b| = 4
    assert rel_err([0.0, 3.0], [-4.0, 2.0]) == 1.0             # |b| counts negatives: 4 / 4
    assert rel_err([3.0], [1.0]) == 2.0                         # scale exactly 1 is not the zero branch
    assert rel_err([[1.0, 2.0], [3.0, 9.0]], [[1.0, 2.0], [3.0, 4.0]]) == 1.25
    assert rel_err(np.float32(1.5), 2.0) == 0.25
    assert type(rel_err([1.0], [2.0])) is float


def test_rel_err_is_zero_when_b_is_zero_or_empty():
    assert rel_err([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert rel_err([5.0], [0.0]) == 0.0                       # documented: a zero b means 0, whatever a is
    assert rel_err(np.empty((0, 3)), np.empty((0, 3))) == 0.0
    assert rel_err([], []) == 0.0
    assert rel_err([2.0], [2.0]) == 0.0


def test_rel_err_works_in_float64_whatever_the_inputs():
    # int8: |-128| overflows to -128 unless converted; strings parse once converted
    assert rel_err(np.array([0], np.int8), np.array([-128], np.int8)) == 1.0
    assert rel_err(np.array([1], np.uint8), np.array([2], np.uint8)) == 0.5
    assert rel_err(np.array(["3"]), np.array([2.0])) == 0.5
    assert rel_err(counted([1.0, 3.0]), counted([1.0, 2.0])) == 0.5


# -- the problems ---------------------------------------------------------------------------

def test_random_problem_for_mse_draws_x_then_t_from_the_seed():
    X, T = random_problem([3, 5, 2], 7, 11)                    # loss defaults to mse
    rng = np.random.default_rng(11)
    X_ref = rng.standard_normal((3, 7))
    T_ref = rng.standard_normal((2, 7))
    assert X.shape == (3, 7) and T.shape == (2, 7)
    assert X.dtype == np.float64 and T.dtype == np.float64
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(T, T_ref)
    X2, T2 = random_problem([3, 5, 2], 7, 11, "mse")
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(T2, T)
    X3, _ = random_problem([3, 5, 2], 7, 12)
    assert not np.array_equal(X3, X)


@pytest.mark.parametrize("loss", ["ce", "hinge"])
def test_random_problem_for_labels_draws_integers_in_range(loss):
    X, y = random_problem([4, 6, 3], 50, 5, loss)
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(X, rng.standard_normal((4, 50)))
    np.testing.assert_array_equal(y, rng.integers(0, 3, 50))
    assert y.shape == (50,) and y.dtype == np.int64
    assert set(y.tolist()) == {0, 1, 2}                        # 50 draws of 3 classes hit each
    Xb, yb = random_problem([4, 6, 3], 50, 5, loss)
    np.testing.assert_array_equal(Xb, X)
    np.testing.assert_array_equal(yb, y)


def test_labelled_problem_defaults_and_arguments():
    X, y = labelled_problem()
    X_ref, y_ref = random_problem([3, 3], 10, 0, "ce")
    assert X.shape == (3, 10) and y.shape == (10,)
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(X, rng.standard_normal((3, 10)))
    np.testing.assert_array_equal(y, rng.integers(0, 3, 10))
    X, y = labelled_problem(2, 5, 4, 7)
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(X, rng.standard_normal((2, 5)))
    np.testing.assert_array_equal(y, rng.integers(0, 4, 5))


def test_random_biases_sets_exactly_the_returned_biases_and_keeps_the_weights():
    net = gpumlp.MLP([3, 4, 2], dtype="float64", seed=0)
    W_before, b_before = net.get_params()
    b = random_biases(net, np.random.default_rng(3), scale=2.5)
    rng = np.random.default_rng(3)
    expected = [rng.standard_normal((4, 1)) * 2.5, rng.standard_normal((2, 1)) * 2.5]
    assert [v.shape for v in b] == [(4, 1), (2, 1)]
    for got, want in zip(b, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    W_after, b_after = net.get_params()
    for got, want in zip(W_after, W_before, strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(b_after, b, strict=True):
        np.testing.assert_array_equal(got, want)
    assert not any(np.array_equal(new, old) for new, old in zip(b_after, b_before, strict=True))


def test_random_biases_default_scale_is_one():
    net = gpumlp.MLP([2, 3, 1], seed=0)
    b = random_biases(net, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    np.testing.assert_array_equal(b[0], rng.standard_normal((3, 1)))
    np.testing.assert_array_equal(b[1], rng.standard_normal((1, 1)))


def test_exact_matches_only_the_whole_message_with_special_characters_escaped():
    assert exact("a.b(c)") == r"^a\.b\(c\)$"
    assert exact("") == "^$"
    with pytest.raises(ValueError, match=exact("got [1, 2] (x*)?")):
        raise ValueError("got [1, 2] (x*)?")
    with pytest.raises(AssertionError):
        with pytest.raises(ValueError, match=exact("got")):
            raise ValueError("got more")
    with pytest.raises(AssertionError):
        with pytest.raises(ValueError, match=exact("more")):
            raise ValueError("got more")


# -- the reference losses -------------------------------------------------------------------

def test_ref_softmax_by_hand_and_stable_per_column():
    P = ref_softmax(np.array([[0.0, 1000.0, -1000.0], [0.0, 1000.0 + math.log(3), -1000.0 - math.log(3)]]))
    np.testing.assert_allclose(P, [[0.5, 0.25, 0.75], [0.5, 0.75, 0.25]], rtol=1e-12)
    Y = np.array([[1.0, -2.0], [3.0, 0.5], [0.0, 0.0]])
    E = np.exp(Y)
    np.testing.assert_allclose(ref_softmax(Y), E / E.sum(axis=0), rtol=1e-14)


def test_ref_ce_against_logsumexp_by_hand_and_finite_differences():
    Y = np.array([[1.0, -2.0], [3.0, 0.5], [0.0, 0.25]])      # K = 3 classes, N = 2 columns
    labels = np.array([2, 0])
    loss, G = ref_ce(Y, labels, 2.0)
    want = sum(math.log(sum(math.exp(v) for v in Y[:, n])) - Y[labels[n], n] for n in range(2)) / 2.0
    assert loss == pytest.approx(want, rel=1e-14)
    onehot = np.array([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(G, (ref_softmax(Y) - onehot) / 2.0, rtol=1e-14)
    np.testing.assert_allclose(G, finite_differences(lambda y: ref_ce(y, labels, 2.0)[0], Y), atol=1e-8)
    zeros_loss, zeros_G = ref_ce(np.zeros((3, 2)), np.array([0, 1]), 1.0)
    assert zeros_loss == pytest.approx(2 * math.log(3), rel=1e-14)
    np.testing.assert_allclose(zeros_G, [[-2 / 3, 1 / 3], [1 / 3, -2 / 3], [1 / 3, 1 / 3]], rtol=1e-14)


def test_ref_hinge_2x2_worked_by_hand():
    # columns: softmax [1/4, 3/4] and [3/4, 1/4], both labelled 0; margin C = 1/4, norm 2.
    # column 0: M_1 = 3/4 - 1/4 + 1/4 = 3/4 (active); column 1: M_1 = 1/4 - 3/4 + 1/4 < 0.
    # loss = 3/4 / 2.  Column 0: G = [-1, 1], P.G = 1/2, dL/dY = P (G - 1/2) / 2 = [-3/16, 3/16].
    r = math.log(3)
    loss, G = ref_hinge(np.array([[0.0, r], [r, 0.0]]), np.array([0, 0]), 0.25, 2.0)
    assert loss == pytest.approx(0.375, rel=1e-14)
    np.testing.assert_allclose(G, [[-3 / 16, 0.0], [3 / 16, 0.0]], rtol=1e-14, atol=1e-15)


def test_ref_hinge_counts_a_tie_as_active():
    # equal logits, C = 0: M = 0 exactly for the wrong class, which is active (M >= 0)
    loss, G = ref_hinge(np.zeros((2, 1)), np.array([0]), 0.0, 1.0)
    assert loss == 0.0
    np.testing.assert_array_equal(G, [[-0.5], [0.5]])
    loss, G = ref_hinge(np.zeros((3, 1)), np.array([1]), 0.5, 4.0)    # two wrong classes, each M = 1/2
    assert loss == pytest.approx(0.25, rel=1e-15)
    # active [1, 0, 1], G = active - onehot * 2 = [1, -2, 1], P.G = 0: dL/dY = P G / 4
    np.testing.assert_allclose(G, [[1 / 12], [-1 / 6], [1 / 12]], rtol=1e-15)


def test_ref_hinge_against_loops_and_finite_differences():
    rng = np.random.default_rng(4)
    Y = rng.standard_normal((3, 5))
    labels = np.array([0, 2, 1, 1, 0])
    C, norm = 0.3, 2.5
    loss, G = ref_hinge(Y, labels, C, norm)
    P = ref_softmax(Y)
    want = sum(max(0.0, P[j, n] - P[labels[n], n] + C) for n in range(5) for j in range(3) if j != labels[n])
    assert loss == pytest.approx(want / norm, rel=1e-14)
    np.testing.assert_allclose(G, finite_differences(lambda y: ref_hinge(y, labels, C, norm)[0], Y), atol=1e-8)


def test_ref_mse_by_hand():
    Y = np.array([[1.0, 2.0], [3.0, 4.0]])
    T = np.array([[0.0, 2.0], [1.0, 1.0]])
    loss, G = ref_mse(Y, T, 2.0)
    assert loss == 3.5                                          # 0.5 (1 + 0 + 4 + 9) / 2
    np.testing.assert_array_equal(G, [[0.5, 0.0], [1.0, 1.5]])


def finite_differences(f, Y, h=1e-6):
    G = np.zeros_like(Y)
    for i in np.ndindex(*Y.shape):
        up, down = Y.copy(), Y.copy()
        up[i] += h
        down[i] -= h
        G[i] = (f(up) - f(down)) / (2 * h)
    return G


# -- strict_backend and mpiexec -------------------------------------------------------------

def test_strict_backend_is_array_api_strict_on_device1():
    xps = pytest.importorskip("array_api_strict")
    b = returned(strict_backend)
    assert isinstance(b, ArrayAPIBackend)
    assert b.namespace is xps and b.device == xps.Device("device1")
    assert b.name == "array_api_strict:array_api_strict.Device('device1')"


def test_strict_backend_without_the_package_skips_inside_pytest(monkeypatch):
    monkeypatch.setitem(sys.modules, "array_api_strict", None)        # the import raises ImportError
    monkeypatch.delenv("CI", raising=False)
    e = raised(strict_backend)
    assert isinstance(e, pytest.skip.Exception) and e.msg == "array-api-strict is not installed"


def test_strict_backend_without_the_package_fails_under_ci(monkeypatch):
    monkeypatch.setitem(sys.modules, "array_api_strict", None)
    monkeypatch.setenv("CI", "true")
    assert type(raised(strict_backend)) is ModuleNotFoundError


def test_strict_backend_without_the_package_raises_outside_pytest(monkeypatch):
    monkeypatch.setitem(sys.modules, "array_api_strict", None)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delitem(sys.modules, "pytest")
    assert type(raised(strict_backend)) is ModuleNotFoundError


def fake_exe(folder):
    folder.mkdir(exist_ok=True)
    exe = folder / "mpiexec"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_mpiexec_prefers_the_one_beside_python_then_path(tmp_path, monkeypatch):
    pytest.importorskip("mpi4py")
    beside, on_path = fake_exe(tmp_path / "venv"), fake_exe(tmp_path / "path")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    assert returned(mpiexec) == beside
    os.remove(beside)
    assert returned(mpiexec) == on_path
    monkeypatch.delenv("PATH")                                   # no PATH at all: only beside python
    assert isinstance(raised(mpiexec), pytest.skip.Exception)
    fake_exe(tmp_path / "venv")
    assert returned(mpiexec) == beside


def test_mpiexec_skips_without_one(tmp_path, monkeypatch):
    pytest.importorskip("mpi4py")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    e = raised(mpiexec)
    assert isinstance(e, pytest.skip.Exception) and e.msg == "no mpiexec on the PATH"


def test_mpiexec_skips_without_mpi4py(tmp_path, monkeypatch):
    fake_exe(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    e = raised(mpiexec)
    assert isinstance(e, pytest.skip.Exception)
    assert e.msg == "mpi4py is not installed (pip install -e '.[mpi]')"


# -- Tally ----------------------------------------------------------------------------------

def test_a_new_tally_is_empty_and_logs():
    t = Tally()
    assert (t.gemm, t.other, t.allocs, t.paused) == ([], [], [], 0)
    t.log("matmul")
    t.log("add")
    t.log("MATMUL")
    t.alloc("add", np.empty((2, 3)))
    t.alloc("sum", 3.0)
    t.alloc("odd", type("Shaped", (), {"shape": "S"})())
    assert t.gemm == ["matmul"] and t.other == ["add", "MATMUL"]
    assert t.allocs == ["add -> (2, 3)", "sum -> ()", "odd -> S"]
    t.clear()
    assert (t.gemm, t.other, t.allocs) == ([], [], [])
    assert isinstance(TALLY, Tally)


def test_tally_pause_nests_and_survives_an_exception():
    t = Tally()
    with t.pause():
        assert t.paused == 1
        with t.pause():
            assert t.paused == 2
        assert t.paused == 1
        t.log("add")                                            # still paused by the outer one
        t.log("matmul")
        t.alloc("add", np.empty(2))
    assert t.paused == 0
    assert (t.gemm, t.other, t.allocs) == ([], [], [])
    with pytest.raises(KeyError):
        with t.pause():
            raise KeyError("x")
    assert t.paused == 0
    t.log("add")
    t.alloc("add", np.empty(2))
    assert t.other == ["add"] and t.allocs == ["add -> (2,)"]


# -- the private wrappers -------------------------------------------------------------------

def test_plain_and_wrap():
    a = counted([1.0, 2.0])
    p = _plain(a)
    assert type(p) is np.ndarray and np.shares_memory(p, a)
    nested = _plain([a, (a, 3)])
    assert type(nested) is list and type(nested[0]) is np.ndarray
    assert type(nested[1]) is tuple and type(nested[1][0]) is np.ndarray and nested[1][1] == 3
    assert _plain(5) == 5 and _plain(None) is None
    w = _wrap(p)
    assert type(w) is CountingArray and np.shares_memory(w, a)
    assert _wrap(a) is a                                        # already counted: itself
    both = _wrap((p, 4))
    assert type(both) is tuple and type(both[0]) is CountingArray and both[1] == 4
    lst = [p]
    assert _wrap(lst) is lst and type(lst[0]) is np.ndarray     # lists are not wrapped
    assert _wrap(5) == 5 and _wrap(None) is None


def test_owns_new_memory():
    a = np.arange(6.0)
    assert _owns_new_memory(a.copy(), [a]) is True
    assert _owns_new_memory(a[1:], [a]) is False
    assert _owns_new_memory(a[1:], [5, a]) is False
    assert _owns_new_memory(a.copy(), [5, [a]]) is True         # only ndarray operands count
    assert _owns_new_memory(np.float64(1.0), [a]) is True        # a 0-d result: a new device array
    assert _owns_new_memory(3.0, [a]) is False
    assert _owns_new_memory(None, []) is False
    assert _owns_new_memory((a[1:], a.copy()), [a]) is True
    assert _owns_new_memory((a[1:], a[2:]), [a]) is False
    assert _owns_new_memory(a, []) is True


# -- CountingArray --------------------------------------------------------------------------

def test_a_ufunc_is_logged_by_name_with_its_allocation(tally):
    a = counted([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = a + a
    assert type(b) is CountingArray and b.tolist() == [[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]
    assert tally.other == ["add"] and tally.gemm == [] and tally.allocs == ["add -> (2, 3)"]
    tally.clear()
    g = a @ a.T
    assert type(g) is CountingArray and g.tolist() == [[14.0, 32.0], [32.0, 77.0]]
    assert tally.gemm == ["matmul"] and tally.other == [] and tally.allocs == ["matmul -> (2, 2)"]


def test_a_ufunc_method_is_logged_as_ufunc_dot_method(tally):
    a = counted([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    s = np.add.reduce(a, axis=0)
    assert type(s) is CountingArray and s.tolist() == [5.0, 7.0, 9.0]
    assert tally.other == ["add.reduce"] and tally.allocs == ["add.reduce -> (3,)"]
    tally.clear()
    c = np.multiply.accumulate(a, axis=1)
    assert c.tolist() == [[1.0, 2.0, 6.0], [4.0, 20.0, 120.0]]
    assert tally.other == ["multiply.accumulate"] and tally.allocs == ["multiply.accumulate -> (2, 3)"]


def test_a_ufunc_into_out_allocates_nothing_and_returns_out(tally):
    a = counted([1.0, 2.0])
    o = counted([0.0, 0.0])
    r = np.multiply(a, 3.0, out=o)
    assert r is o and o.tolist() == [3.0, 6.0] and a.tolist() == [1.0, 2.0]
    a *= 2.0
    assert a.tolist() == [2.0, 4.0]
    assert tally.other == ["multiply", "multiply"] and tally.allocs == []
    tally.clear()
    q0, r0 = counted([0.0, 0.0]), counted([0.0, 0.0])
    res = np.divmod(counted([7.0, 9.0]), 4.0, out=(q0, r0))
    assert type(res) is tuple and res[0] is q0 and res[1] is r0
    assert q0.tolist() == [1.0, 2.0] and r0.tolist() == [3.0, 1.0]
    assert tally.other == ["divmod"] and tally.allocs == []


def test_a_ufunc_with_two_outputs_and_no_out_allocates_its_pair(tally):
    # NumPy refuses out=None for a ufunc with two outputs: the counting array must not pass it
    q, r = np.divmod(counted([7.0, 9.0]), 4.0)
    assert type(q) is CountingArray and type(r) is CountingArray
    assert q.tolist() == [1.0, 2.0] and r.tolist() == [3.0, 1.0]
    m = np.modf(counted([1.5, -2.25]))
    assert type(m) is tuple and m[0].tolist() == [0.5, -0.25] and m[1].tolist() == [1.0, -2.0]
    assert tally.other == ["divmod", "modf"]
    assert tally.allocs == ["divmod -> ()", "modf -> ()"]       # one entry for the pair: a tuple has no shape

def test_a_numpy_function_is_logged_and_its_new_buffer_allocated(tally):
    a = counted([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    s = np.sum(a)
    assert type(s) is np.float64 and s == 21.0
    assert tally.other == ["sum"] and tally.allocs == ["sum -> ()"]
    tally.clear()
    c = np.concatenate([a, a])
    assert type(c) is CountingArray and c.shape == (4, 3)
    assert tally.other == ["concatenate"] and tally.allocs == ["concatenate -> (4, 3)"]
    tally.clear()
    col = np.sum(a, axis=1)                                     # keyword arguments reach NumPy
    assert col.tolist() == [6.0, 15.0] and tally.allocs == ["sum -> (2,)"]


def test_a_numpy_function_into_out_allocates_nothing(tally):
    a = counted([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    o = counted([0.0, 0.0, 0.0])
    r = np.sum(a, axis=0, out=o)
    assert type(r) is CountingArray and np.shares_memory(r, o) and o.tolist() == [5.0, 7.0, 9.0]
    assert tally.other == ["sum"] and tally.allocs == []


def test_a_numpy_function_returning_a_view_allocates_nothing(tally):
    a = counted([[1.0, 2.0], [3.0, 4.0]])
    d = np.diagonal(a)
    assert type(d) is CountingArray and d.tolist() == [1.0, 4.0] and np.shares_memory(d, a)
    d2 = np.diagonal(a=a)                                       # the operand passed by keyword
    assert np.shares_memory(d2, a)
    assert tally.other == ["diagonal", "diagonal"] and tally.allocs == []


def test_views_are_not_logged(tally):
    a = counted([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    r = np.reshape(a, (3, 2))
    t = np.transpose(a)
    v = np.ravel(a)
    e = np.expand_dims(a, 0)
    assert type(r) is CountingArray and r.shape == (3, 2) and np.shares_memory(r, a)
    assert t.shape == (3, 2) and v.shape == (6,) and e.shape == (1, 2, 3)
    assert np.shape(a) == (2, 3) and np.ndim(a) == 2
    assert tally.other == [] and tally.gemm == [] and tally.allocs == []
    # a VIEWS name is never logged, even where NumPy must copy (reshape of a non-contiguous array)
    flat = np.reshape(a.T, -1)
    assert flat.tolist() == [1.0, 4.0, 2.0, 5.0, 3.0, 6.0] and not np.shares_memory(flat, a)
    assert tally.other == [] and tally.allocs == []
    assert "reshape" in VIEWS and "sum" not in VIEWS


def test_setitem_is_a_logged_copy_that_allocates_nothing(tally):
    a = counted([[1.0, 2.0], [3.0, 4.0]])
    a[0, 1] = 7.0
    a[1] = counted([8.0, 9.0])
    assert a.tolist() == [[1.0, 7.0], [8.0, 9.0]]
    assert tally.other == ["copy", "copy"] and tally.allocs == []


def test_astype_and_copy_are_logged_allocations(tally):
    a = counted([[1.5, 2.5, 3.5], [4.5, 5.5, 6.5]])
    i = a.astype(np.int32)
    assert type(i) is CountingArray and i.dtype == np.int32 and i.tolist() == [[1, 2, 3], [4, 5, 6]]
    c = a.copy()
    assert type(c) is CountingArray and c.tolist() == a.tolist() and not np.shares_memory(c, a)
    assert tally.other == ["astype", "copy"] and tally.allocs == ["astype -> (2, 3)", "copy -> (2, 3)"]
    # their other arguments reach NumPy, by position and by keyword
    for f in (a.copy("F"), a.copy(order="F"), a.astype(np.float32, "F"), a.astype(np.float32, order="F")):
        assert type(f) is CountingArray and f.flags.f_contiguous and not f.flags.c_contiguous
    assert a.astype(np.float32, order="F").dtype == np.float32


def test_nothing_is_logged_while_paused(tally):
    a = counted([1.0, 2.0])
    with tally.pause():
        np.sum(a + a)
        a[0] = 3.0
    assert tally.other == [] and tally.allocs == []


# -- CountingBackend ------------------------------------------------------------------------

def test_counting_backend_identity():
    fused, twins = CountingBackend(fused=True), CountingBackend(fused=False)
    assert fused.name == "counting(fused)" and twins.name == "counting(twins)"
    assert fused.fused is True and twins.fused is False
    assert fused.is_gpu is True and CountingBackend.is_gpu is True
    assert fused.xp is np and isinstance(fused, Backend)


def test_counting_backend_makes_counting_arrays(tally):
    b = CountingBackend(fused=False)
    e = b.empty((2, 3), np.int32)
    z = b.zeros(4, np.float32)
    r = b.arange(4)
    assert type(e) is CountingArray and e.shape == (2, 3) and e.dtype == np.int32
    assert type(z) is CountingArray and z.dtype == np.float32 and z.tolist() == [0.0] * 4
    assert type(r) is CountingArray and r.tolist() == [0, 1, 2, 3]
    assert tally.other == [] and tally.allocs == []


def test_counting_backend_asarray_copies_unless_told_not_to(tally):
    b = CountingBackend(fused=True)
    a = counted([1.0, 2.0])
    c = b.asarray(a, np.float64)                                # copy defaults to True
    assert type(c) is CountingArray and c.tolist() == [1.0, 2.0] and not np.shares_memory(c, a)
    same = b.asarray(a, np.float64, copy=False)
    assert type(same) is CountingArray and np.shares_memory(same, a)
    f32 = b.asarray(a, np.float32, copy=False)                  # a copy where one is needed
    assert f32.dtype == np.float32 and f32.tolist() == [1.0, 2.0]
    f = b.asarray([1, 2], np.float32)
    assert type(f) is CountingArray and f.dtype == np.float32
    assert tally.other == [] and tally.allocs == []


def test_counting_backend_transposed_and_to_numpy(tally):
    b = CountingBackend(fused=True)
    a = counted([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    t = b.transposed(a)
    assert type(t) is CountingArray and t.tolist() == [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]
    assert t.flags.c_contiguous and not np.shares_memory(t, a)
    h = b.to_numpy(a)
    assert type(h) is np.ndarray and h.tolist() == a.tolist() and not np.shares_memory(h, a)
    assert tally.other == [] and tally.allocs == []


def relu_args(b):
    S = b.asarray([[1.0, -1.0], [2.0, -3.0]], np.float64)
    return S, S.copy(), b.asarray(np.full((2, 2), 5.0), np.float64)


def test_a_fused_kernel_is_logged_once_by_name_with_its_twin_unlogged(tally):
    b = CountingBackend(fused=True)
    k = kernels.act_grad(ACTIVATIONS["relu"])
    S, Z, D = relu_args(b)
    run = b.kernel(k)
    tally.clear()
    assert run(S, Z, D, None, None) is None                     # scratch lent, as the fused path passes none
    assert D.tolist() == [[5.0, 0.0], [5.0, 0.0]]
    assert tally.other == ["relu'"] and tally.gemm == [] and tally.allocs == []
    run(S, Z, D, None, None)
    assert tally.other == ["relu'", "relu'"]


def test_with_fused_off_each_call_inside_the_twin_is_logged(tally):
    b = CountingBackend(fused=False)
    k = kernels.act_grad(ACTIVATIONS["relu"])
    S, Z, D = relu_args(b)
    run = b.kernel(k)
    mask, tmp = b.empty((2, 2), np.bool_), b.empty((2, 2), np.float64)
    tally.clear()
    run(S, Z, D, mask, tmp)
    assert D.tolist() == [[5.0, 0.0], [5.0, 0.0]]
    assert tally.other == ["greater", "multiply"] and tally.allocs == []


def test_a_kernel_without_cuda_is_not_logged_even_when_fused(tally):
    b = CountingBackend(fused=True)
    k = kernels.act_grad(ACTIVATIONS["linear"])                 # f' = 1: no kernel at all
    assert k.cuda is None
    S, Z, D = relu_args(b)
    tally.clear()
    b.kernel(k)(S, Z, D, None, None)
    assert D.tolist() == [[5.0, 5.0], [5.0, 5.0]]
    assert tally.other == [] and tally.allocs == []

