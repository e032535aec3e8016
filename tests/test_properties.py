"""Property-based tests (hypothesis) over randomly drawn networks and batches.

Hypothesis draws the structure of each case: depth 1 to 4, layer widths 1 to 12,
batch size 1 to 8 (N = 1 is drawn often), hidden and output activations, bias on or
off, the loss (mse, hinge with a random margin C in [0, 2], ce), a weight scale, and a
seed from which NumPy draws the values (weights, biases, X, targets).  Drawing values
from a seed keeps every case small to state and cheap to shrink: a failure prints
the sizes, activations, loss and seed, which rebuild it exactly.

Every property runs with ``derandomize=True`` and no example database: the cases are a
fixed function of the test's source and of the hypothesis version, so CI runs the same
cases on every run (a new hypothesis release may draw others).  700 generated cases
(250 + 150 + 100 + 100 + 100) plus 5 explicit ones, about 12 s on one core.

Properties: gradients against float64 finite differences; float32 against float64;
backward linear in dY; column chunks with normalizer=N add up to the batch; the
softmax losses with logits of ±1e4.  The cheap ones also run on the strict array-API
backend of conftest.py (drawn as a parameter: a function-scoped fixture does not mix
with ``@given``).  They found one bug, pinned down by the test at the end.

Kinks.  The finite differences need the loss to be smooth over each stencil
[θ − 2h, θ + 2h].  Rather than a heuristic distance, each stencil point's kink
pattern (the sign of every ReLU / leaky-ReLU pre-activation, and for hinge which
terms p_j − p_y + C are >= 0) is compared with the unperturbed one, and a case whose
stencil crosses a kink is rejected with ``assume`` (1 to 3% of cases); the other properties
reject pre-activations or hinge terms within rounding reach of their kink.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed")
from hypothesis import HealthCheck, assume, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import gpumlp  # noqa: E402
from gpumlp.activations import ACTIVATIONS  # noqa: E402
from gpumlp.losses import LOSSES, softmax  # noqa: E402
from gpumlp.testing import host, strict_backend  # noqa: E402

ACTS = sorted(ACTIVATIONS)          # leaky_relu, linear, relu, sigmoid, tanh
KINKED = ("relu", "leaky_relu")
H = 1e-3                            # the finite-difference step, as in test_gradcheck.py
RTOL = 1e-6                         # element-wise, as in test_gradcheck.py


def fixed(n, **kw):
    """Derandomized settings: the same ``n`` cases on every run."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow], **kw)


# -- problems -----------------------------------------------------------------------------------
@st.composite
def problems(draw, losses=("mse", "hinge", "ce"), max_width=12, min_n=1, max_n=8):
    """A dict describing one case; :func:`build` turns it into a net and data."""
    loss = draw(st.sampled_from(losses))
    depth = draw(st.integers(1, 4))
    widths = st.integers(1, max_width)
    sizes = [draw(widths) for _ in range(depth)]
    sizes.append(draw(st.integers(1 if loss == "mse" else 2, max_width)))
    return dict(
        sizes=sizes,
        n=draw(st.one_of(st.just(1), st.integers(1, max_n)) if min_n == 1 else st.integers(min_n, max_n)),
        activation=draw(st.sampled_from(ACTS)),
        output=draw(st.sampled_from(ACTS)),
        bias=draw(st.booleans()),
        loss=loss,
        margin=draw(st.floats(0.0, 2.0)) if loss == "hinge" else 1.0,
        scale=draw(st.sampled_from([0.5, 1.0, 2.0])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def build(p, dtype="float64", device="cpu"):
    """(net, X, target) for problem ``p``: the model's own initial weights times ``scale``,
    biases N(0, 0.5²) (non-zero, unlike the initial ones), X ~ N(0, 1); targets T ~ N(0, 1)
    for mse, labels otherwise.  Values are rounded to float32 first, so that a float32
    and a float64 model of the same problem hold exactly the same numbers."""
    rng = np.random.default_rng(p["seed"])
    net = gpumlp.MLP(p["sizes"], activation=p["activation"], output=p["output"], bias=p["bias"],
                     dtype=dtype, device=device, seed=p["seed"])
    r32 = lambda a: np.asarray(a, np.float32).astype(np.float64)        # noqa: E731
    W, _ = net.get_params()
    W = [r32(w * p["scale"]) for w in W]
    b = [r32(0.5 * rng.standard_normal((d, 1))) for d in p["sizes"][1:]] if p["bias"] else None
    net.set_params(W, b)
    n, K = p["n"], p["sizes"][-1]
    X = r32(rng.standard_normal((p["sizes"][0], n)))
    t = r32(rng.standard_normal((K, n))) if p["loss"] == "mse" else rng.integers(0, K, n)
    return net, X, t


def loss_fn(p, **kw):
    """(Y, target) -> (loss, dY) through the public losses."""
    if p["loss"] == "mse":
        return lambda Y, t: gpumlp.losses.mse(Y, t, **kw)
    if p["loss"] == "hinge":
        return lambda Y, t: gpumlp.losses.hinge(Y, t, margin=p["margin"], **kw)
    return lambda Y, t: gpumlp.losses.cross_entropy(Y, t, **kw)


def hinge_terms(Y, t, margin):
    """M_jn = p_jn − p_{y_n n} + C for the false classes j ≠ y_n (NaN in the label rows)."""
    P = softmax(np, np.asarray(host(Y), np.float64))
    cols = np.arange(len(t))
    M = P - P[t, cols] + margin
    M[t, cols] = np.nan
    return M


def kink_pattern(net, Y, t, p):
    """Which side of its kink every kinked quantity of the last forward pass lies on."""
    out = [host(net.S[k]) > 0 for k, f in enumerate(net.f) if f.name in KINKED]
    if p["loss"] == "hinge":
        out.append(hinge_terms(Y, t, p["margin"]) >= 0)
    return out


def kink_distance(net, Y, t, p):
    """min over kinked quantities of |distance to the kink| / their scale (inf if none)."""
    d = [np.inf]
    for k, f in enumerate(net.f):
        if f.name in KINKED:
            S = np.abs(host(net.S[k]))
            d.append(np.min(S) / (1 + np.max(np.abs(host(net.Z[k]))) + np.max(S)))
    if p["loss"] == "hinge" and p["sizes"][-1] > 1:
        d.append(np.nanmin(np.abs(hinge_terms(Y, t, p["margin"]))))
    return float(min(d))


def cancellation(net):
    """The worst cancellation in the forward pass: max over layers k and columns n of
    max_i (|W_k| |Z_{k-1}| + |b_k|)_in / max_i |S_k|_in.  A rounding error relative to the
    terms of S_k becomes that much larger relative to S_k itself."""
    worst = 1.0
    for k in range(net.n_layers):
        A = np.abs(host(net.W[k])) @ np.abs(host(net.Z[k]))
        if net.bias:
            A = A + np.abs(host(net.b[k]))
        S = np.max(np.abs(host(net.S[k])), axis=0)
        worst = max(worst, float(np.max(np.max(A, axis=0) / np.maximum(S, 1e-300))))
    return worst


def numeric_gradient(net, X, t, fn, p):
    """4th-order central differences of the loss in every entry of ``net.params``; the
    case is rejected if any stencil point changes the kink pattern."""
    base = kink_pattern(net, net.forward(X), t, p)
    params = net.params
    grad = np.zeros(params.shape[0])
    for i in range(params.shape[0]):
        x0 = float(params[i])
        f = []
        for step in (2 * H, H, -H, -2 * H):
            params[i] = x0 + step
            Y = net.forward(X)
            f.append(float(fn(Y, t)[0]))
            if base and not all(np.array_equal(a, b) for a, b in zip(kink_pattern(net, Y, t, p), base, strict=True)):
                params[i] = x0
                event("rejected: a stencil crosses a kink")
                assume(False)
        params[i] = x0
        grad[i] = (8 * (f[1] - f[2]) - (f[0] - f[3])) / (12 * H)
    return grad


def max_rel_err(analytic, numeric, floor):
    """max_i |a_i − n_i| / max(|a_i|, |n_i|, floor)."""
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return float(np.max(np.abs(analytic - numeric) / denom))


def grads_of(net):
    return host(net.grads).copy(), [host(d).copy() for d in net.deltas]


def backends():
    try:
        import array_api_strict  # noqa: F401
    except ModuleNotFoundError:     # conftest.strict_backend() would skip the whole property
        return st.just("numpy")
    return st.sampled_from(["numpy", "strict"])


def device_of(name):
    return "cpu" if name == "numpy" else strict_backend()


# -- gradients against finite differences ------------------------------------------------------
EDGE = dict(n=1, activation="relu", output="linear", bias=True, margin=1.0, scale=1.0, seed=0)


@fixed(250)
@given(p=problems())
@example(p=dict(EDGE, sizes=[1, 1], loss="mse", bias=False))                   # d = 1, N = 1, depth 1
@example(p=dict(EDGE, sizes=[1, 1, 1, 1, 2], loss="ce", activation="sigmoid"))  # depth 4, widths 1
@example(p=dict(EDGE, sizes=[3, 2], loss="hinge", margin=0.0))                 # C = 0
@example(p=dict(EDGE, sizes=[3, 5, 4], n=7, loss="hinge", margin=1.5, output="tanh"))  # all hinges active
@example(p=dict(EDGE, sizes=[2, 12, 12, 12, 12], n=8, loss="mse", activation="leaky_relu", output="relu"))
def test_gradients_match_central_differences(p):
    """dW and db (all of ``net.grads``) equal float64 4th-order central differences of the
    public loss, element-wise to 1e-6 relative, for every drawn network, loss and batch."""
    net, X, t = build(p)
    fn = loss_fn(p)
    value, dY = fn(net.forward(X), t)
    net.backward(dY)
    analytic = host(net.grads).copy()
    numeric = numeric_gradient(net, X, t, fn, p)
    # floor: a difference quotient carries the round-off of the loss, c eps |L| / h with c
    # up to ~50 here (a sum over K classes after 4 layers of 12), i.e. up to ~1e-11 (1 + |L|):
    # entries below 1e-5 (1 + |L|) are held to that absolute error instead of 1e-6 relative
    # (seen: at most 4e-12 absolute, on hinge losses of ~10)
    floor = 1e-5 * (1 + abs(float(value)))
    event(f"loss={p['loss']}")
    err = max_rel_err(analytic, numeric, floor)
    assert err < RTOL, (err, np.argmax(np.abs(analytic - numeric)))
    # dW and db are views of the same buffer; check they are what was compared
    at = 0
    for k in range(net.n_layers):
        dW = host(net.dW[k])
        np.testing.assert_array_equal(dW.ravel(), analytic[at:at + dW.size])
        at += dW.size
        if p["bias"]:
            np.testing.assert_array_equal(host(net.db[k]).ravel(), analytic[at:at + dW.shape[0]])
            at += dW.shape[0]
    assert at == analytic.size


# -- float32 against float64 -------------------------------------------------------------------
def derivative(name, S, Z):
    """|f'(S)| (an independent spelling of the activations' derivatives)."""
    return {"relu": (S > 0) * 1.0, "leaky_relu": np.where(S > 0, 1.0, 0.01), "tanh": 1 - Z * Z,
            "sigmoid": Z * (1 - Z), "linear": np.ones_like(S)}[name]


def magnitudes(net, Y, t, p):
    """The sizes of the terms float32 rounds on the way to each Δ_k and to ``grads``: the Δ
    recursion and dW = Δ Z^T, db = Δ 1 run on |W|, |Z| and the magnitudes of the terms of
    ∂L/∂Y (|Y| + |T|; p + onehot; p ⊙ (|G| + Σ p |G|)).  The standard running error bound:
    a rounding error is a tiny multiple of these, however much the terms cancel."""
    n, K = p["n"], p["sizes"][-1]
    Y = np.asarray(host(Y), np.float64)
    if p["loss"] == "mse":
        D = (np.abs(Y) + np.abs(t)) / n
    else:
        P, onehot = softmax(np, Y), np.eye(K)[:, t]
        if p["loss"] == "ce":
            D = (P + onehot) / n
        else:
            a = np.nan_to_num(hinge_terms(Y, t, p["margin"]) >= 0) * 1.0
            G = np.abs(a - onehot * np.sum(a, axis=0))
            D = P * (G + np.sum(P * G, axis=0)) / n
    L = net.n_layers
    deltas = [None] * L
    for k in range(L - 1, -1, -1):
        if k < L - 1:
            D = np.abs(host(net.W[k + 1])).T @ D
        deltas[k] = D = D * np.abs(derivative(net.f[k].name, host(net.S[k]), host(net.Z[k + 1])))
    grads = []
    for k in range(L):
        grads.append((deltas[k] @ np.abs(host(net.Z[k])).T).ravel())
        if net.bias:
            grads.append(np.sum(deltas[k], axis=1))
    return np.concatenate(grads), deltas


def loss_magnitude(Y, t, p):
    """The size of the terms a loss value is computed from (it may be far smaller)."""
    Y = np.asarray(host(Y), np.float64)
    if p["loss"] == "mse":
        return float(np.sum((np.abs(Y) + np.abs(t)) ** 2) / (2 * p["n"]))
    if p["loss"] == "ce":
        return 1 + float(np.mean(np.max(np.abs(Y), axis=0)))
    return (p["sizes"][-1] - 1) * (1 + p["margin"])


def close(lo, hi, mag, rtol=1e-4, mtol=1e-5):
    """‖lo − hi‖_∞ <= rtol ‖hi‖_∞ + mtol ‖mag‖_∞."""
    lo, hi = np.asarray(host(lo), np.float64), np.asarray(host(hi), np.float64)
    return float(np.max(np.abs(lo - hi))) <= rtol * float(np.max(np.abs(hi))) + mtol * float(np.max(mag))


@fixed(150)
@given(p=problems())
def test_float32_tracks_float64(p):
    """The same problem (the same numbers: build() rounds them to float32) in float32 and
    float64: Y, the loss, every Δ_k, dW and db agree to 1e-4 of their size, or for values
    that are small differences of larger terms, to 1e-5 of those terms (a running error
    bound: a softmax close to one-hot makes dY = p − onehot tiny, and float32 cannot carry
    its relative accuracy)."""
    nets = {}
    for dt in ("float64", "float32"):
        net, X, t = build(p, dtype=dt)
        fn = loss_fn(p)
        Y = net.forward(X)
        if dt == "float64":
            # a float32 rounding (~1e-7 relative) must not carry anything across a kink, nor
            # be blown up by a pre-activation that cancels (the whole output of a width-1
            # layer rescales with it): such problems are ill-conditioned, not wrong
            assume(kink_distance(net, Y, t, p) > 1e-4)
            assume(cancellation(net) < 30)
        value, dY = fn(Y, t)
        net.backward(dY)
        nets[dt] = (net, Y, float(value), *grads_of(net))
        if dt == "float64":
            gmag, Dmag = magnitudes(net, Y, t, p)
    (lo, Ylo, vlo, glo, Dlo), (hi, Yhi, vhi, ghi, Dhi) = nets["float32"], nets["float64"]
    assert lo.params.dtype == np.float32 and hi.params.dtype == np.float64
    assert close(Ylo, Yhi, 0.0)
    assert abs(vlo - vhi) <= 1e-4 * abs(vhi) + 1e-5 * loss_magnitude(Yhi, t, p)
    assert np.all(np.abs(ghi) <= gmag * (1 + 1e-12)), "a gradient exceeds the sum of its terms' sizes"
    assert close(glo, ghi, gmag)
    for k, (a, b, m) in enumerate(zip(Dlo, Dhi, Dmag)):
        assert close(a, b, m), k


# -- backward is linear in dY ------------------------------------------------------------------
@fixed(100)
@given(p=problems(losses=("mse",)), dtype=st.sampled_from(["float64", "float32"]), backend=backends(),
       power=st.integers(-8, 8))
def test_backward_is_linear_in_dY(p, dtype, backend, power):
    """backward(dY1 + dY2) = backward(dY1) + backward(dY2) (Δ's and gradients), and scaling
    dY by a power of two scales every Δ and gradient exactly (bit for bit)."""
    net, X, _ = build(p, dtype=dtype, device=device_of(backend))
    net.forward(X)
    rng = np.random.default_rng(p["seed"] + 1)
    shape = (p["sizes"][-1], p["n"])
    dY1, dY2 = rng.standard_normal(shape), rng.standard_normal(shape)
    dY1, dY2 = (np.asarray(d, dtype) for d in (dY1, dY2))
    results = []
    for dY in (dY1, dY2, dY1 + dY2, dY1 * 2.0**power):
        net.backward(dY)
        results.append(grads_of(net))
    (g1, D1), (g2, D2), (g12, D12), (gs, Ds) = results
    tol = 1e-12 if dtype == "float64" else 1e-5
    for a, b, c in [(g12, g1, g2)] + list(zip(D12, D1, D2, strict=True)):
        scale = max(float(np.max(np.abs(b))), float(np.max(np.abs(c))))
        assert np.max(np.abs(a - (b + c)), initial=0.0) <= tol * scale
    np.testing.assert_array_equal(gs, g1 * 2.0**power)
    for a, b in zip(Ds, D1, strict=True):
        np.testing.assert_array_equal(a, b * 2.0**power)


# -- column chunks add up to the batch ---------------------------------------------------------
@st.composite
def chunked(draw):
    p = draw(problems(min_n=2, max_n=10))
    n = p["n"]
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), min_size=1, max_size=n - 1)))
    return p, [0] + cuts + [n]


@fixed(100)
@given(case=chunked(), backend=backends())
def test_column_chunks_with_the_batch_normalizer_add_up_to_the_batch(case, backend):
    """Splitting the columns into chunks, each chunk's loss with normalizer=N: the chunks'
    losses and gradients add up to the whole batch's (float64, to 1e-12)."""
    p, bounds = case
    net, X, t = build(p, device=device_of(backend))
    n = p["n"]
    fn = loss_fn(p)
    Y = net.forward(X)
    # a different GEMM shape may round S differently by an ulp: keep kinks out of that reach
    assume(kink_distance(net, Y, t, p) > 1e-9)
    value, dY = fn(Y, t)
    net.backward(dY)
    whole = host(net.grads).copy()
    total_value, total = 0.0, np.zeros_like(whole)
    chunk_fn = loss_fn(p, normalizer=n)
    for i, j in zip(bounds, bounds[1:], strict=False):
        v, d = chunk_fn(net.forward(X[:, i:j]), t[..., i:j])
        net.backward(d)
        total_value += float(v)
        total += host(net.grads)
    event(f"{len(bounds) - 1} chunk(s)")
    assert total_value == pytest.approx(float(value), rel=1e-12, abs=1e-300)
    assert np.max(np.abs(total - whole), initial=0.0) <= 1e-12 * max(float(np.max(np.abs(whole))), 1e-300)


# -- softmax losses with huge logits -----------------------------------------------------------
@st.composite
def huge_logits(draw):
    K, N = draw(st.integers(2, 12)), draw(st.one_of(st.just(1), st.integers(1, 8)))
    values = st.one_of(st.sampled_from([-1e4, 1e4, 0.0]), st.floats(-1e4, 1e4))
    Y = np.array([[draw(values) for _ in range(N)] for _ in range(K)])
    labels = np.array([draw(st.integers(0, K - 1)) for _ in range(N)])
    return Y, labels


@fixed(100)
@given(case=huge_logits(), dtype=st.sampled_from(["float64", "float32"]), margin=st.floats(0.0, 2.0))
def test_softmax_losses_stay_finite_with_huge_logits(case, dtype, margin):
    """ce and hinge on logits of ±1e4 (Y built directly): finite losses and dY, every
    column of dY sums to 0 (softmax ignores a column shift), and ce equals a float64
    log-sum-exp reference."""
    Y, labels = case
    Yd = Y.astype(dtype)
    K, N = Y.shape
    eps = float(np.finfo(dtype).eps)
    for name in ("ce", "hinge"):
        value, dY = LOSSES[name](Yd, labels, margin=margin)
        value, dY = float(value), host(dY)
        assert np.isfinite(value) and np.all(np.isfinite(dY)), name
        assert value >= 0
        assert np.all(np.abs(np.sum(dY.astype(np.float64), axis=0)) <= 8 * K * eps * max(1.0, 1 + margin) / N)
    Y64 = Yd.astype(np.float64)
    shifted = Y64 - np.max(Y64, axis=0)        # shifted first, as the library does: no cancellation
    E = np.exp(shifted)
    P = E / np.sum(E, axis=0)
    ce_ref = np.mean(np.log(np.sum(E, axis=0)) - shifted[labels, np.arange(N)])
    value, dY = LOSSES["ce"](Yd, labels)
    assert float(value) == pytest.approx(ce_ref, rel=8 * eps, abs=8 * eps)
    np.testing.assert_allclose(host(dY), (P - np.eye(K)[:, labels]) / N, rtol=0, atol=8 * eps / N)
    hinge, _ = LOSSES["hinge"](Yd, labels, margin=margin)
    M = P - P[labels, np.arange(N)] + margin
    M[labels, np.arange(N)] = 0.0
    assert float(hinge) == pytest.approx(np.mean(np.sum(np.maximum(M, 0), axis=0)), rel=16 * K * eps, abs=16 * K * eps)


# -- found by the properties above -------------------------------------------------------------
def test_workspace_scratch_fits_a_linear_layer_wider_than_every_other_one():
    """The workspace sized the activations' scratch by the widest non-linear layer but sliced
    it for every layer, linear ones included: a linear layer wider than that was sliced past
    the end, which NumPy clips silently and an array-API backend refuses (IndexError)."""
    # minimal case found by test_backward_is_linear_in_dY: a ReLU layer of width 1, then a
    # linear output of width 2 (as in any classifier whose hidden layer is narrower than K)
    net = gpumlp.MLP([1, 1, 2], activation="relu", output="linear", dtype="float64", device=strict_backend())
    Y = net.forward(np.ones((1, 1)))
    assert Y.shape == (2, 1)
