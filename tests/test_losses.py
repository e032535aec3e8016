"""The losses: each against its formula in float64 (the normalizer, the hinge's margin, mse on
labels and on targets), large logits, float32 kept and bit-equal to the twins, ``one_hot``,
the loss table, and the exact error messages."""
import numpy as np
import pytest

from gpumlp import get_backend, kernels
from gpumlp.losses import LOSSES, Loss, cross_entropy, get_loss, hinge, mse, one_hot, softmax
from gpumlp.testing import exact, ref_ce, ref_hinge, ref_mse

CPU = get_backend("cpu")

Y_3x5 = np.array([[0.3, -1.2, 2.0, 0.1, -0.4],
                  [1.1, 0.4, -0.3, 0.2, 0.9],
                  [-0.7, 0.8, 0.5, -1.5, 0.0]])
LABELS_5 = np.array([0, 2, 1, 1, 0])


@pytest.mark.parametrize("norm", [8.0, 0.5])
def test_every_loss_divides_by_the_normalizer(norm):
    Y, labels, onehot = Y_3x5, LABELS_5, np.eye(3)[:, LABELS_5]
    for got, want in [(cross_entropy(Y, labels, normalizer=norm), ref_ce(Y, labels, norm)),
                      (LOSSES["ce"](Y, labels, normalizer=norm), ref_ce(Y, labels, norm)),
                      (hinge(Y, labels, 0.3, norm), ref_hinge(Y, labels, 0.3, norm)),
                      (LOSSES["mse"](Y, labels, normalizer=norm), ref_mse(Y, onehot, norm)),
                      (mse(Y, onehot, normalizer=norm), ref_mse(Y, onehot, norm))]:
        assert float(got[0]) == pytest.approx(want[0], rel=1e-12)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-15)


def test_the_normalizer_must_be_positive():
    for bad in (0, -2.0):
        with pytest.raises(ValueError, match=exact(
                f"normalizer must be a finite number > 0 (the N to divide by); got {bad!r}")):
            cross_entropy(Y_3x5, LABELS_5, normalizer=bad)


def test_hinge_defaults_to_margin_one_and_accepts_margin_zero():
    loss, dY = LOSSES["hinge"](Y_3x5, LABELS_5)
    want = ref_hinge(Y_3x5, LABELS_5, 1.0, 5)
    assert float(loss) == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(dY, want[1], rtol=1e-12, atol=1e-15)
    loss, dY = hinge(Y_3x5, LABELS_5, margin=0.0)
    want = ref_hinge(Y_3x5, LABELS_5, 0.0, 5)
    assert float(loss) == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(dY, want[1], rtol=1e-12, atol=1e-15)


def test_mse_on_labels_works_with_a_single_output_row():
    Y = np.array([[0.5, -1.0, 2.0]])
    loss, dY = LOSSES["mse"](Y, [0, 0, 0])
    assert float(loss) == pytest.approx(0.5 * (0.25 + 4.0 + 1.0) / 3, rel=1e-14)
    np.testing.assert_allclose(dY, [[-0.5 / 3, -2.0 / 3, 1.0 / 3]], rtol=1e-14)


def test_mse_with_targets_and_its_errors():
    T = np.eye(3)[:, LABELS_5]
    with pytest.raises(ValueError, match=exact(
            "normalizer divides a mean: it cannot be combined with reduction='sum'")):
        mse(Y_3x5, T, reduction="sum", normalizer=4)
    with pytest.raises(ValueError, match=exact(
            "targets T must have the shape of Y, (3, 5) (K × N, one column per sample); got (2, 5)")):
        mse(Y_3x5, T[:2])
    with pytest.raises(ValueError, match=exact(        # K = 3: no reshape could fit, none is suggested
            "targets T must have the shape of Y, (3, 5) (K × N, one column per sample); got (5,)")):
        mse(Y_3x5, T[0])
    with pytest.raises(ValueError, match=exact(
            "targets T must have the shape of Y, (1, 5) (K × N, one column per sample); got (5,)"
            " — use T.reshape(1, -1)")):
        mse(Y_3x5[:1], T[0])


def test_the_network_output_must_be_a_2d_float_array():
    def message(kind, shape):
        return exact(f"Y must be a 2-D array of shape (K, N), one column per sample; got {kind} of shape {shape}")
    with pytest.raises(ValueError, match=message("list", "()")):
        cross_entropy([[1.0, 2.0], [0.0, 1.0]], [0, 1])
    with pytest.raises(ValueError, match=message("ndarray", "(3, 0)")):
        cross_entropy(np.zeros((3, 0)), np.zeros(0, int))
    with pytest.raises(ValueError, match=message("ndarray", "(3,)")):
        cross_entropy(np.zeros(3), [0, 1, 2])


def test_losses_keep_float32_and_match_their_twins_bit_for_bit():
    """Loss.__call__ runs the twin with scratch in Y's dtype: the same bits as the twin
    called with float32 scratch, and float32 results."""
    Y = Y_3x5.astype(np.float32)
    for _name, loss in LOSSES.items():
        if loss.kind != "labels":
            continue                                   # squared_error: test_sklearn.py and below
        value, dY = loss(Y, LABELS_5, 0.7)
        assert value.dtype == np.float32 and dY.dtype == np.float32
        D, per, hit = np.empty((3, 5), np.float32), np.empty(5, np.float32), np.empty(5, bool)
        loss.kernel.twin(np, Y, LABELS_5, D, per, hit, 1 / 5, 0.7, kernels.LossScratch(CPU, 3, 5, np.float32))
        np.testing.assert_array_equal(dY, D)
        assert value == np.sum(per)


def test_one_hot():
    got = one_hot(CPU, np.array([2, 0, 1, 2]), 3, np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]])


def test_get_loss_names_and_a_new_loss_entry():
    assert get_loss("cross_entropy") is LOSSES["ce"]
    with pytest.raises(ValueError, match=exact("unknown loss ['ce']; expected one of mse, hinge, ce (class labels) "
                                               "or squared_error (real targets)")):
        get_loss(["ce"])
    entry = Loss("hinge", "my doc")
    assert (entry.name, entry.kernel, entry.__doc__) == ("hinge", kernels.LOSS_KERNELS["hinge"], "my doc")
    assert not hasattr(entry, "lr")                # default rates are the command line's and the estimators
    assert repr(entry) == "<gpumlp loss hinge>" and entry.kind == "labels"
    T = Y_3x5[::-1] * 0.5
    value, dY = LOSSES["squared_error"](Y_3x5.astype(np.float32), T)
    assert value.dtype == np.float32 and LOSSES["squared_error"].kind == "targets"
    np.testing.assert_allclose(dY, (Y_3x5 - T) / 15, rtol=1e-6)
    assert float(value) == pytest.approx(0.5 * np.mean((Y_3x5 - T) ** 2), rel=1e-6)


# -- large logits: finite losses equal to a stable reference ----------------------------------
LOGITS = np.array([[1000.0, 1e4, -1e4, 0.0],
                   [999.0, 1e4 - 1, -1e4 + 2, 1000.0],
                   [990.0, 1e4 - 3, -1e4 - 1, -1000.0]])
LABELS = np.array([0, 1, 2, 0])


def stable_log_softmax(Y):
    m = Y.max(axis=0, keepdims=True)
    return Y - (m + np.log(np.exp(Y - m).sum(axis=0, keepdims=True)))


def reference_hinge(Y, labels, C):
    K, N = Y.shape
    P = np.exp(stable_log_softmax(Y))
    onehot = np.eye(K)[:, labels]
    M = P - (P * onehot).sum(axis=0, keepdims=True) + C
    assert np.min(np.abs(M[onehot == 0])) > 1e-2       # no hinge near its kink
    active = (M >= 0) * (1 - onehot)
    G = active - onehot * active.sum(axis=0, keepdims=True)
    return (M * active).sum() / N, P * (G - (P * G).sum(axis=0, keepdims=True)) / N


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 1e-5)])
def test_large_logits_give_finite_losses_equal_to_a_stable_reference(dtype, rtol):
    Y = LOGITS.astype(dtype)
    ref = Y.astype(np.float64)
    K, N = ref.shape
    logp = stable_log_softmax(ref)
    P = np.exp(logp)
    onehot = np.eye(K)[:, LABELS]

    p = softmax(np, Y)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, P, rtol=rtol, atol=1e-6 if dtype == "float32" else 1e-15)

    value, dY = cross_entropy(Y, LABELS)
    assert np.isfinite(float(value)) and np.isfinite(dY).all()
    assert float(value) == pytest.approx(-logp[LABELS, np.arange(N)].mean(), rel=rtol)
    np.testing.assert_allclose(dY, (P - onehot) / N, rtol=rtol, atol=1e-6 if dtype == "float32" else 1e-15)

    value, dY = hinge(Y, LABELS, margin=0.5)
    ref_loss, ref_dY = reference_hinge(ref, LABELS, 0.5)
    assert np.isfinite(float(value)) and np.isfinite(dY).all()
    assert float(value) == pytest.approx(ref_loss, rel=rtol)
    np.testing.assert_allclose(dY, ref_dY, rtol=rtol, atol=1e-6 if dtype == "float32" else 1e-15)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_tables_mse_is_mse_on_the_labels_one_hot_columns(dtype):
    """LOSSES["mse"] takes labels, mse takes targets: the two are one loss, to the bit in
    float64 (float32 sums may round apart), with the same normaliser."""
    rng = np.random.default_rng(3)
    Y, labels = rng.standard_normal((4, 9)).astype(dtype), rng.integers(0, 4, 9)
    onehot = np.eye(4, dtype=dtype)[:, labels]
    for norm in (None, 20):
        (a, da), (b, db) = LOSSES["mse"](Y, labels, normalizer=norm), mse(Y, onehot, normalizer=norm)
        if dtype == "float64":
            assert float(a) == float(b) and np.array_equal(da, db)
        else:
            np.testing.assert_allclose([float(a)], [float(b)], rtol=1e-6)
            np.testing.assert_allclose(da, db, rtol=1e-6, atol=1e-7)
