"""The CUDA source, run on the CPU: every instance of ``fused.cu`` built as host C++
(``tests/hostcuda``) and launched through the library's own launchers (``gpumlp.kernels.launch``)
against the NumPy twins, with every launch checked for its grid, its argument types and layouts,
out-of-bounds writes, writes to const inputs and races (see ``hostcuda.HostFunction``).

Exact (bit for bit, NaN in the same places) where no transcendental function is involved;
within a stated ulp bound where exp, log or tanh of two math libraries (glibc here, NumPy's
own SIMD loops there) meet.  The self-test at the end plants bugs in a copy of the source and
in the launchers and requires each to be caught.
"""
import concurrent.futures
import os
import types

import hostcuda
import numpy as np
import pytest
from hostcuda import CompileError, HostModule, LaunchError, SymbolNotFound

from gpumlp import kernels
from gpumlp.activations import ACTIVATIONS
from gpumlp.backend import Backend, CupyBackend
from gpumlp.kernels import launch, source

DTYPES = (np.float32, np.float64)
HOST = Backend()

# The most ulps the compiled form may differ from its twin where exp, log or tanh is involved.
# Measured on this suite's inputs (glibc 2.36 libm against NumPy 2.4's own loops, x86-64), the
# ulp taken at max(|a|, |b|, scale): tanh forward 2 (float and double); sigmoid forward 1 of 1
# (it is (tanh(s/2) + 1)/2, so measured in ulps of 1); ce's and hinge's ∂L/∂Y and loss 4 of
# inv_norm (float and double).  The bounds below double those, for other libms and NumPy
# builds; the self-test's planted bugs (a float tanh in the double kernel, a dropped inv_norm)
# are many orders of magnitude beyond them.
ULPS = {"act": {np.float32: 4, np.float64: 4}, "loss": {np.float32: 8, np.float64: 8}}


@pytest.fixture(autouse=True, scope="module")
def _needs_a_compiler():
    why = hostcuda.unavailable_reason()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the CUDA source on the host, but {why}", pytrace=False)
        pytest.skip(why)


def fake_cupy():
    """Just enough of the cupy module for gpumlp.kernels.launch: its RawModule.  A module
    object (hashable, unlike a SimpleNamespace), since launch._modules is keyed by it."""
    fake = types.ModuleType("hostcupy")
    fake.RawModule = HostModule
    return fake


FAKE = fake_cupy()                       # one build of the real source for the whole file


def compiled(k, fake=None):
    """The kernel's compiled form through the library: CupyBackend(fake cupy).kernel(k)."""
    return CupyBackend(fake or FAKE, fused=True).kernel(k)


def twin(k, *args):
    """The kernel's twin as the CPU backend runs it, with its scratch allocated."""
    with np.errstate(all="ignore"):                   # NaN and inf inputs are on purpose
        HOST.kernel(k)(*k.scratch(HOST, args))


# -- comparisons --------------------------------------------------------------------------------
class Mismatch(AssertionError):
    """The compiled kernel and its twin disagree."""


def _nan_and_inf(a, b, what):
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        raise Mismatch(f"{what}: NaN in different places ({np.count_nonzero(np.isnan(a) != np.isnan(b))} elements)")
    inf = np.isinf(a) | np.isinf(b)
    if not np.array_equal(a[inf], b[inf]):
        raise Mismatch(f"{what}: infinities in different places")


def assert_same(a, b, what):
    """Bit for bit, NaN in the same places (its payload aside)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    if a.dtype.kind != "f":
        if not np.array_equal(a, b):
            raise Mismatch(f"{what}: {np.count_nonzero(a != b)} of {a.size} elements differ")
        return
    _nan_and_inf(a, b, what)
    keep = ~np.isnan(a)
    bits = {4: np.uint32, 8: np.uint64}[a.itemsize]
    differ = a.view(bits)[keep] != b.view(bits)[keep]
    if differ.any():
        i = np.flatnonzero(differ)[0]
        raise Mismatch(f"{what}: {np.count_nonzero(differ)} of {a.size} elements differ "
                       f"(first: {a[keep][i]!r} against the twin's {b[keep][i]!r})")


def ulps(a, b, what, floor=0.0):
    """The most ulps a and b differ by, in units of the spacing at max(|a|, |b|, floor), after
    requiring NaN and infinities in the same places."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    _nan_and_inf(a, b, what)
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return 0.0
    a, b = a[ok], b[ok]
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), a.dtype.type(floor))
    return float(np.max(np.abs(a.astype(np.float64) - b) / np.spacing(scale).astype(np.float64)))


def assert_close(a, b, what, bound, floor=0.0):
    err = ulps(a, b, what, floor)
    if err > bound:
        raise Mismatch(f"{what}: {err:.3g} ulps apart, more than the bound of {bound}")
    return err


# -- inputs --------------------------------------------------------------------------------------
def values(rng, shape, dtype, scale=1.0, specials=True, zeros=True):
    """Normal values times ``scale``, with NaN, ±inf, subnormals and ±0 sprinkled in."""
    a = (rng.standard_normal(shape) * scale).astype(dtype)
    if a.size and (specials or zeros):
        tiny = np.finfo(dtype).smallest_subnormal
        pool = [np.float64(0.0), -0.0] if zeros else []
        if specials:
            pool += [np.nan, np.inf, -np.inf, tiny, -3 * tiny, np.finfo(dtype).tiny / 4]
        where = rng.random(shape) < 0.15
        a[where] = rng.choice(np.array(pool, dtype), size=int(where.sum()))
    return a


SHAPES = [(1, 1), (1, 7), (6, 1), (2, 2), (3, 300), (17, 33)]


# -- a layer: S += b, Z = f(S); D ⊙= f'(S) ---------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,bias", [(a, bias) for a, f in sorted(ACTIVATIONS.items()) for bias in (False, True)
                                             if bias or not f.identity])       # the identity alone launches nothing
def test_bias_act_matches_its_twin(dtype, activation, bias):
    f = ACTIVATIONS[activation]
    k = kernels.bias_act(f, bias)
    rng = np.random.default_rng([f.code, bias, np.dtype(dtype).itemsize])
    for rows, cols in SHAPES + [tuple(rng.integers(1, 40, 2))]:
        for scale in (1.0, 30.0):
            S0, b = values(rng, (rows, cols), dtype, scale), values(rng, (rows, 1), dtype, scale)
            S1, S2 = S0.copy(), S0.copy()
            Z1, Z2 = (S1, S2) if f.identity else (np.full_like(S0, 7), np.full_like(S0, 7))
            compiled(k)(S1, b if bias else None, Z1)
            twin(k, S2, b if bias else None, Z2)
            assert_same(S1, S2, f"{k.name} S")
            if activation == "tanh":
                assert_close(Z1, Z2, f"{k.name} Z", ULPS["act"][dtype])
            elif activation == "sigmoid":          # (tanh(s/2) + 1) / 2: absolute, in ulps of 1
                assert_close(Z1, Z2, f"{k.name} Z", ULPS["act"][dtype], floor=1.0)
            else:
                assert_same(Z1, Z2, f"{k.name} Z")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", sorted(a for a, f in ACTIVATIONS.items() if not f.identity))
def test_act_grad_matches_its_twin_exactly(dtype, activation):
    """f' uses S or Z only, with no transcendental function: bit for bit, for any S and Z."""
    f = ACTIVATIONS[activation]
    k = kernels.act_grad(f)
    rng = np.random.default_rng([f.code, np.dtype(dtype).itemsize])
    for shape in SHAPES:
        S = values(rng, shape, dtype)
        Zf = np.empty_like(S)
        f.forward(np, S, Zf)                             # Z = f(S), as in a step
        for Z in (Zf, values(rng, shape, dtype)):        # and any Z: f' is a formula in S and Z
            D0 = values(rng, shape, dtype)
            D1, D2 = D0.copy(), D0.copy()
            compiled(k)(S, Z, D1)
            twin(k, S, Z, D2, None, None)
            assert_same(D1, D2, f"{k.name} D")


# -- the losses: ∂L/∂Y into D, each column's loss and hit ------------------------------------------
def loss_inputs(rng, K, n, dtype, scale, specials):
    Y = values(rng, (K, n), dtype, scale, specials=specials, zeros=specials)
    if n >= 4 and not specials:
        Y[:, 0] = Y[0, 0]                                     # a tie: argmax takes the first
    return Y, rng.integers(0, K, n).astype(np.int64)


def run_loss(k, Y, labels, inv_norm, margin, fake=None):
    K, n = Y.shape
    outs = []
    for run in (compiled(k, fake), None):
        D, loss, hit = np.full((K, n), 5, Y.dtype), np.full(n, 5, Y.dtype), np.zeros(n, bool)
        if run is None:
            twin(k, Y, labels, D, loss, hit, inv_norm, margin, None)
        else:
            run(Y, labels, D, loss, hit, inv_norm, margin)
        outs.append((D, loss, hit))
    return outs


def check_loss(name, dtype, got, want, inv_norm):
    (D1, l1, h1), (D2, l2, h2) = got, want
    assert_same(h1, h2, f"{name} hit")
    if name == "mse":                       # no transcendental function: exact
        assert_same(D1, D2, f"{name} D")
        assert_same(l1, l2, f"{name} loss")
        return 0.0, 0.0
    # in ulps of inv_norm: D is (p - onehot) inv_norm (hinge: a few p's), the loss
    # (log Σ exp - (y - m)) inv_norm (hinge: Σ M a with |M| <= 2)
    return (assert_close(D1, D2, f"{name} D", ULPS["loss"][dtype], floor=inv_norm),
            assert_close(l1, l2, f"{name} loss", ULPS["loss"][dtype], floor=inv_norm))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["ce", "hinge", "mse"])
def test_label_losses_match_their_twins(dtype, name):
    k = kernels.LOSS_KERNELS[name]
    rng = np.random.default_rng([len(name), np.dtype(dtype).itemsize])
    Ks = ([1] if name == "mse" else []) + [2, 3, 10]
    for K in Ks:
        for n in (1, 2, 37, 300):
            for scale, specials in ((1.0, False), (1e3, False), (3.0, True)):
                Y, labels = loss_inputs(rng, K, n, dtype, scale, specials)
                for inv_norm, margin in ((1.0 / n, 0.3), (0.1, 0.0)):
                    check_loss(name, dtype, *run_loss(k, Y, labels, inv_norm, margin), inv_norm)


@pytest.mark.parametrize("name", ["ce", "hinge", "mse"])
def test_a_column_with_nan_misses_its_label_as_numpy_argmax_says(name):
    """numpy.argmax returns the first NaN: [3.71, nan] with label 0 is a miss in both forms,
    [nan, 3.71] with label 0 a hit, and a ±inf logit behaves as on the host."""
    k = kernels.LOSS_KERNELS[name]
    for dtype in DTYPES:
        Y = np.array([[3.71, np.nan, 1.0, np.inf, -np.inf, 2.0],
                      [np.nan, 3.71, 2.0, 1.0, 0.5, -np.inf],
                      [0.0, 0.0, np.nan, 2.0, 1.0, np.inf]], dtype)
        labels = np.zeros(6, np.int64)
        got, want = run_loss(k, Y, labels, 1 / 6, 0.3)
        assert got[2].tolist() == want[2].tolist() == [False, True, False, True, False, False]
        check_loss(name, dtype, got, want, 1 / 6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_squared_error_matches_its_twin_exactly(dtype):
    k = kernels.TARGET_LOSS_KERNELS["squared_error"]
    rng = np.random.default_rng(np.dtype(dtype).itemsize)
    for K in (1, 2, 5):
        for n in (1, 2, 33, 301):
            for specials in (False, True):
                Y = values(rng, (K, n), dtype, 2.0, specials=specials)
                TT = values(rng, (n, K), dtype, 2.0, specials=specials)
                out = []
                for run in (compiled(k), None):
                    D, loss, hit = np.full((K, n), 5, dtype), np.full(n, 5, dtype), np.zeros(n, bool)
                    if run is None:
                        twin(k, Y, TT, D, loss, hit, 1 / n, 0.0, None)
                    else:
                        run(Y, TT, D, loss, hit, 1 / n, 0.0)
                    out.append((D, loss, hit))
                assert_same(out[0][0], out[1][0], "squared_error D")
                assert_same(out[0][1], out[1][1], "squared_error loss")
                assert not out[0][2].any()                       # no hit: left as it was


# -- SGD over the flat buffer ------------------------------------------------------------------
def run_sgd(p0, g, v0, lr, momentum, wd, fake=None):
    k = kernels.SGD_KERNEL
    out = []
    for run in (compiled(k, fake), None):
        p, v = p0.copy(), None if v0 is None else v0.copy()
        if run is None:
            twin(k, p, g, v, lr, momentum, wd, None)
        else:
            run(p, g, v, lr, momentum, wd)
        out.append((p, v))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [None, 0.0, 0.9])
@pytest.mark.parametrize("wd", [0.0, 1e-3, 1e-50])
def test_sgd_matches_its_twin_exactly(dtype, momentum, wd):
    """1e-50 rounds to 0 in float32: the kernel still multiplies p by it, as the twin does
    (inf·0 = NaN where p is infinite)."""
    rng = np.random.default_rng(7)
    for n in (1, 5, 1000, 4099):
        p0, g = values(rng, n, dtype), values(rng, n, dtype)
        p0[0] = np.inf
        v0 = None if momentum is None else values(rng, n, dtype)
        (p1, v1), (p2, v2) = run_sgd(p0, g, v0, 0.1, momentum or 0.0, wd)
        assert_same(p1, p2, "sgd p")
        if v0 is not None:
            assert_same(v1, v2, "sgd v")
        if wd and g[0] == g[0] and abs(g[0]) != np.inf:
            assert np.isnan(p1[0])


def test_sgd_on_more_elements_than_one_grid_covers_wraps_the_loop():
    """65535 blocks of 256 threads cover 16,776,960 elements; the grid-stride loop does the rest."""
    n = launch.MAX_BLOCKS * launch.THREADS + 223_041                  # 17,000,001
    assert launch._grid(n)[0] == (launch.MAX_BLOCKS,)
    rng = np.random.default_rng(8)
    p0, g, v0 = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
    (p1, v1), (p2, v2) = run_sgd(p0, g, v0, 0.05, 0.9, 1e-4)
    assert_same(p1, p2, "sgd p")
    assert_same(v1, v2, "sgd v")
    assert not np.array_equal(p1[-1000:], p0[-1000:])                 # the tail was updated


# -- per-example gradient norms ----------------------------------------------------------------
def sample_sq_inputs(rng, rows_d, rows_z, n, dtype, layout, specials=False):
    D = values(rng, (rows_d, n), dtype, specials=specials)
    if layout == "F":                              # Z_0: the batch view XT[s:e, :].T of the data
        XT = values(rng, (n + 7, rows_z), dtype, specials=False)
        Z = XT[3:3 + n, :].T
        assert Z.flags.f_contiguous and not Z.flags.c_contiguous or min(Z.shape) == 1
    elif layout == "C":
        Z = values(rng, (rows_z, n), dtype, specials=specials)
    else:                                          # any strides: every other row and column
        Z = values(rng, (2 * rows_z, 2 * n), dtype, specials=False)[::2, ::2]
    return D, Z


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("first", [False, True])
def test_sample_sq_matches_its_twin_exactly(dtype, bias, first):
    """The twin sums the squares down each column in row order, as the kernel does: exact.
    (NumPy's einsum spelling, which the CPU backend runs, may add in another order.)"""
    k = kernels.SAMPLE_SQ_KERNEL
    rng = np.random.default_rng([bias, first, np.dtype(dtype).itemsize])
    for rows_d, rows_z, n in ((1, 1, 1), (3, 5, 1), (1, 4, 9), (10, 64, 37), (7, 3, 300)):
        for layout in ("C", "F", "strided"):
            D, Z = sample_sq_inputs(rng, rows_d, rows_z, n, dtype, layout, specials=layout == "C")
            out0 = values(rng, n, dtype, specials=False)
            out1, out2, out3 = out0.copy(), out0.copy(), out0.copy()
            compiled(k)(D, Z, bias, first, out1)
            with np.errstate(all="ignore"):
                k.twin(np, *k.scratch(HOST, (D, Z, bias, first, out2, None, None, None)))
            assert_same(out1, out2, f"sample_sq {layout}")
            # the einsum spelling the CPU backend runs sums in its own order: within the usual
            # bound of a sum of squares, 2(rows_d + rows_z) ulps (measured: at most 5)
            twin(k, D, Z, bias, first, out3, None, None, None)
            assert_close(out1, out3, f"sample_sq {layout} (einsum)", 2 * (rows_d + rows_z))


# -- every instance ------------------------------------------------------------------------------
def one_of_each(fake):
    """(instance, thunk) for every instance, each thunk one launch through the library's launchers."""
    rng = np.random.default_rng(11)
    out = []

    def add(k, *args):
        out.append((k.instance(args, args[0].dtype), lambda: compiled(k, fake)(*args)))
    for dtype in DTYPES:
        def a(*shape, dtype=dtype):
            return values(rng, shape, dtype, specials=False)
        for f in ACTIVATIONS.values():
            for bias in (False, True):
                k = kernels.bias_act(f, bias)
                if k.cuda:
                    S = a(4, 5)
                    add(k, S, a(4, 1) if bias else None, S if f.identity else a(4, 5))
            k = kernels.act_grad(f)
            if k.cuda:
                add(k, a(4, 5), a(4, 5), a(4, 5))
        labels = np.array([0, 2, 1, 2, 0], np.int64)
        for k in kernels.LOSS_KERNELS.values():
            add(k, a(3, 5), labels, a(3, 5), a(5), np.zeros(5, bool), 0.2, 0.3)
        for k in kernels.TARGET_LOSS_KERNELS.values():
            add(k, a(3, 5), a(5, 3), a(3, 5), a(5), np.zeros(5, bool), 0.2, 0.0)
        for momentum in (False, True):
            for wd in (0.0, 1e-3):
                add(kernels.SGD_KERNEL, a(9), a(9), a(9) if momentum else None, 0.1, 0.9, wd)
        for bias in (False, True):
            for first in (False, True):
                add(kernels.SAMPLE_SQ_KERNEL, a(3, 5), a(6, 4).T, bias, first, a(5))
    return out


def test_every_instance_is_launched_through_the_launchers(monkeypatch):
    monkeypatch.setattr(launch, "_modules", {})
    fake = fake_cupy()
    launches = one_of_each(fake)
    assert sorted(name for name, _ in launches) == sorted(source.instantiations())
    for _, run in launches:
        run()
    module = launch._modules[fake][None]
    assert isinstance(module, HostModule)
    assert module.launched == set(source.instantiations())
    assert set(source.instantiations()) <= hostcuda.LAUNCHED


# -- the harness itself ------------------------------------------------------------------------
def test_a_name_expression_must_be_given_exactly_as_cupy_needs_it():
    module = launch._module(FAKE)[None]
    assert module.get_function("act_grad<float, 1>") is module.get_function("act_grad<float, 1>")
    with pytest.raises(SymbolNotFound, match="act_grad<float,1>"):
        module.get_function("act_grad<float,1>")
    with pytest.raises(SymbolNotFound):
        module.get_function("act_grad")


TOY = r"""
#define GRID_LOOP(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
                             i += (long long)blockDim.x * gridDim.x)
template<typename T>
__global__ void toy(T* a, const T* b, long long n, long long stride, T x) {
    GRID_LOOP(i, n) { a[i * stride + (i + 1 < n ? OFFSET : 0)] = b[i * stride] * x; }
}

__global__ void plain(bool* flags, int n) {
    GRID_LOOP(i, n) { flags[i] = i % 2 == 1; }
}
"""


def toy_module(offset=0, layouts=("strided", "strided")):
    """A two-line kernel of the same kind, with its own layouts, to test the harness on."""
    return HostModule(TOY.replace("OFFSET", str(offset)), options=("--std=c++14", "--fmad=false"),
                      name_expressions=("toy<float>", "toy<double>", "plain"),
                      layouts={"toy": layouts, "plain": ("C",)})


def test_the_harness_checks_scalars_strides_and_aliasing():
    fn = toy_module().get_function("toy<float>")
    a = np.zeros((6, 2), np.float32)
    b = np.arange(12, dtype=np.float32).reshape(6, 2)
    fn((1,), (32,), (a[:, 0], b[:, 0], np.int64(6), np.int64(2), np.float32(2)))
    assert a[:, 0].tolist() == [0, 4, 8, 12, 16, 20] and not a[:, 1].any()
    fn((2,), (4,), (b[:, 1], b[:, 1], np.int64(6), np.int64(2), np.float32(3)))       # aliased: in place
    assert b[:, 1].tolist() == [3, 9, 15, 21, 27, 33]
    for bad, match in (((a[:, 0], b[:, 0], 6, np.int64(2), np.float32(2)), None),       # a Python int is fine
                       ((a[:, 0], b[:, 0], np.int32(6), np.int64(1), np.float32(2)), "is int64 in C"),
                       ((a[:, 0], b[:, 0], np.int64(6), np.int64(2), 2.0), "passed as float64"),
                       ((a[:, 0], b[:, 0].astype(np.float64), np.int64(6), np.int64(2), np.float32(2)),
                        "points to float32"),
                       ((a[:, 0], list(b[:, 0]), np.int64(6), np.int64(2), np.float32(2)), "must be an array"),
                       ((a[:, 0], b[:, 0], np.int64(6), np.int64(1)), "4 arguments for 5")):
        if match is None:
            fn((1,), (8,), bad)
        else:
            with pytest.raises(LaunchError, match=match):
                fn((1,), (8,), bad)
    for grid, block, match in (((0,), (8,), "grid.x = 0"), ((1,), (1025,), "block.x = 1025"),
                               ((1,), (32, 33), "1056 threads"), ((1, 2), (8,), "y and z must be 1"),
                               ((2 ** 31,), (8,), "grid.x")):
        with pytest.raises(LaunchError, match=match):
            fn(grid, block, (a[:, 0], b[:, 0], np.int64(6), np.int64(2), np.float32(2)))
    flags = np.zeros(5, bool)
    toy_module().get_function("plain")((1,), (4,), (flags, np.int32(5)))         # not a template
    assert flags.tolist() == [False, True, False, True, False]
    with pytest.raises(LaunchError, match=r"plain: argument 1 \(int n\) is int32 in C, but a Python int"):
        toy_module().get_function("plain")((1,), (4,), (flags, 5))
    with pytest.raises(LaunchError, match="C-contiguous"):
        toy_module(layouts=("C", "C")).get_function("toy<float>")(
            (1,), (8,), (a[:, 0], b[:, 0], np.int64(6), np.int64(2), np.float32(2)))


def test_the_harness_catches_a_write_between_a_strided_arrays_elements():
    fn = toy_module(offset=1).get_function("toy<double>")          # writes a[i*stride + 1]: column 1
    a, b = np.zeros((6, 2)), np.ones((6, 2))
    with pytest.raises(LaunchError, match="between the elements"):
        fn((1,), (8,), (a[:, 0], b[:, 0], np.int64(6), np.int64(2), np.float64(2)))
    assert not a.any()                                             # nothing written back


def test_options_without_a_host_meaning_are_refused():
    with pytest.raises(CompileError, match="--use_fast_math"):
        HostModule(source.CUDA_SOURCE, options=("--use_fast_math",), name_expressions=source.instantiations())


# -- the self-test: planted bugs must be caught ----------------------------------------------------
ACT_GRAD = "GRID_LOOP(i, total) { D[i] = D[i] * gm_act_grad<T, ACT>(S[i], Z[i]); }"
PLANTS = {
    "relu_grad": ("if (ACT == 1) return s > T(0) ? T(1) : T(0);", "if (ACT == 1) return s >= T(0) ? T(1) : T(0);"),
    "ce_inv_norm": ("D[k * n + c] = (p - (k == y ? T(1) : T(0))) * inv_norm;",
                    "D[k * n + c] = (p - (k == y ? T(1) : T(0)));"),
    "float_tanh": ("double gm_tanh(double x) { return tanh(x); }", "double gm_tanh(double x) { return tanhf(x); }"),
    "one_past_the_end": ("i < (n); \\", "i <= (n); \\"),
    "neighbour_index": (ACT_GRAD, ACT_GRAD.replace("{ D[i] =", "{ D[i + 1] =")),
    "race": (ACT_GRAD, ACT_GRAD.replace("); }", "); if (i + 1 < total) D[i + 1] += T(1); }")),
    "const_write": (ACT_GRAD, ACT_GRAD.replace("); }", "); ((T*)Z)[i] = T(0); }")),
}


def planted_source(name):
    old, new = PLANTS[name]
    assert source.CUDA_SOURCE.count(old) == 1, f"the plant {name} no longer matches the source"
    return source.CUDA_SOURCE.replace(old, new)


@pytest.fixture(scope="module")
def prebuilt():
    """Build the planted sources side by side (each test then finds its build in the cache)."""
    def build(name):
        HostModule(planted_source(name), options=launch.OPTIONS, name_expressions=source.instantiations())
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        list(pool.map(build, PLANTS))


@pytest.fixture
def plant(monkeypatch, prebuilt):
    """plant(name): the library's source with that bug, as the launchers build it; returns a
    fresh fake cupy module to launch through."""
    def plant(name):
        monkeypatch.setattr(source, "CUDA_SOURCE", planted_source(name))
        monkeypatch.setattr(launch, "_modules", {})
        return fake_cupy()
    return plant


def grad_case(fake, activation, dtype=np.float32, shape=(5, 70)):
    k = kernels.act_grad(ACTIVATIONS[activation])
    rng = np.random.default_rng(5)
    S = values(rng, shape, dtype, specials=False)
    S[0, :5] = 0
    Z = np.empty_like(S)
    ACTIVATIONS[activation].forward(np, S, Z)
    D0 = values(rng, shape, dtype, specials=False)
    D1, D2 = D0.copy(), D0.copy()
    compiled(k, fake)(S, Z, D1)
    twin(k, S, Z, D2, None, None)
    assert_same(D1, D2, f"{k.name} D")


def test_the_suite_passes_the_unplanted_source_through_the_same_paths(monkeypatch):
    monkeypatch.setattr(launch, "_modules", {})
    fake = fake_cupy()
    for activation in ("relu", "tanh", "sigmoid"):
        grad_case(fake, activation)
    check_loss("ce", np.float32, *run_loss(kernels.LOSS_KERNELS["ce"], *loss_inputs(
        np.random.default_rng(1), 4, 9, np.float32, 1.0, False), 1 / 9, 0.3), 1 / 9)


def test_a_wrong_formula_is_caught(plant):
    with pytest.raises(Mismatch, match="relu' D"):
        grad_case(plant("relu_grad"), "relu")


def test_a_dropped_inv_norm_is_caught(plant):
    fake = plant("ce_inv_norm")
    Y, labels = loss_inputs(np.random.default_rng(1), 4, 9, np.float64, 1.0, False)
    with pytest.raises(Mismatch, match="ce D"):
        check_loss("ce", np.float64, *run_loss(kernels.LOSS_KERNELS["ce"], Y, labels, 1 / 9, 0.3, fake), 1 / 9)


def test_a_float_tanh_in_the_double_kernel_is_caught(plant):
    fake = plant("float_tanh")
    k = kernels.bias_act(ACTIVATIONS["tanh"], True)
    rng = np.random.default_rng(2)
    S0, b = values(rng, (6, 20), np.float64, specials=False), values(rng, (6, 1), np.float64, specials=False)
    S1, S2, Z1, Z2 = S0.copy(), S0.copy(), np.empty_like(S0), np.empty_like(S0)
    compiled(k, fake)(S1, b, Z1)
    twin(k, S2, b, Z2)
    with pytest.raises(Mismatch, match="ulps apart"):
        assert_close(Z1, Z2, "bias+tanh Z", ULPS["act"][np.float64])


@pytest.mark.parametrize("name", ["one_past_the_end", "neighbour_index"])
def test_a_write_past_the_end_is_caught(plant, name):
    with pytest.raises(LaunchError, match=r"act_grad<float, 4>: wrote out of bounds of argument 2 \(float\* D\): "
                                          r"element end \+ 0"):
        grad_case(plant(name), "sigmoid")


def test_one_past_the_end_is_caught_in_every_instance(plant):
    for name, run in one_of_each(plant("one_past_the_end")):
        with pytest.raises(LaunchError, match=rf"{name}: wrote out of bounds of argument"):
            run()


def test_a_race_is_caught(plant):
    with pytest.raises(LaunchError, match="thread orders wrote different bytes into argument 2 .*threads race"):
        grad_case(plant("race"), "sigmoid")


def test_a_write_to_a_const_input_is_caught(plant):
    with pytest.raises(LaunchError, match=r"changed the const argument 1 \(const float\* Z\)"):
        grad_case(plant("const_write"), "tanh")


def test_a_kernel_needing_a_barrier_does_not_build_on_the_host(monkeypatch):
    code = source.CUDA_SOURCE.replace("T d = g[i];", "T d = g[i]; __syncthreads();")
    assert code != source.CUDA_SOURCE
    with pytest.raises(CompileError, match="__syncthreads"):
        HostModule(code, options=launch.OPTIONS, name_expressions=["sgd<float, 0, 0>"])


def test_swapped_launcher_arguments_are_caught(monkeypatch):
    def swapped(cupy, kernel):                       # launch.act_grad passing (Z, S, D)
        def run(S, Z, D, mask=None, tmp=None):
            launch._function(cupy, kernel.cuda, D.dtype)(*launch._grid(D.size), (Z, S, D, np.int64(D.size)))
        return run
    monkeypatch.setattr(launch, "act_grad", swapped)
    with pytest.raises(Mismatch, match="tanh' D"):
        grad_case(FAKE, "tanh")


def test_swapped_loss_and_hit_are_caught(monkeypatch):
    def swapped(cupy, kernel):
        def run(Y, labels, D, loss, hit, inv_norm, margin, s=None):
            K, n = Y.shape
            T = launch._scalar(Y.dtype)
            launch._function(cupy, kernel.cuda, Y.dtype)(*launch._grid(n), (
                Y, labels, D, hit, loss, np.int32(K), np.int64(n), T(inv_norm), T(margin)))
        return run
    k = kernels.LOSS_KERNELS["hinge"]
    with pytest.raises(LaunchError, match=r"hinge_loss<double>: argument 3 \(double\* loss\) points to float64 "
                                          r"but got a ndarray of bool"):
        swapped(FAKE, k)(np.ones((2, 3)), np.zeros(3, np.int64), np.ones((2, 3)), np.ones(3), np.zeros(3, bool),
                         1.0, 0.3)


def test_a_python_float_for_a_float_parameter_is_caught(monkeypatch):
    monkeypatch.setattr(launch, "_scalar", lambda dtype: float)
    with pytest.raises(LaunchError, match=r"ce_loss<float>: argument 7 \(float inv_norm\) is float32 in C, but a "
                                          r"Python float 0.5 is passed as float64"):
        compiled(kernels.LOSS_KERNELS["ce"])(np.ones((2, 3), np.float32), np.zeros(3, np.int64),
                                             np.ones((2, 3), np.float32), np.ones(3, np.float32), np.zeros(3, bool),
                                             0.5, 0.3)
    with pytest.raises(LaunchError, match=r"sgd<float, 1, 1>: argument 4 \(float lr\)"):
        compiled(kernels.SGD_KERNEL)(*(np.ones(4, np.float32) for _ in range(3)), 0.1, 0.9, 0.1)


def test_a_block_of_2048_threads_is_caught(monkeypatch):
    monkeypatch.setattr(launch, "THREADS", 2048)
    with pytest.raises(LaunchError, match=r"sgd<double, 0, 0>: block.x = 2048 is outside \[1, 1024\]"):
        compiled(kernels.SGD_KERNEL)(np.ones(4), np.ones(4), None, 0.1, 0.0, 0.0)


def test_a_non_contiguous_array_where_the_layout_says_c_is_caught():
    S = np.ones((6, 4)).T
    with pytest.raises(LaunchError, match=r"act_grad<double, 1>: argument 0 \(const double\* S\) must be C-contiguous"):
        compiled(kernels.act_grad(ACTIVATIONS["relu"]))(S, np.ones((4, 6)), np.ones((4, 6)))
