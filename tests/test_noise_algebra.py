"""The exact algebra of gpumlp.noise: averaged over EVERY batch a small population can give,
the estimates equal tr(Σ) and |G|² to rounding, so a bias as small as D where D − 1 belongs
is caught (the statistical tests of test_noise.py, at 5 standard errors, cannot see it).

What the module claims (its docstring): for per-example gradients g_1..g_D, G = mean_i g_i and
tr(Σ) = mean_i |g_i − G|² (the covariance of one example drawn uniformly from the D, normalised
by D).  A batch of B gives sum_s = Σ_n |g_n / B|² (the per-example gradients of a *mean* loss)
and grad_sq = |ḡ|².  Then
  * population=D, batches drawn without replacement: E[tr_est] = tr(Σ), E[G2_est] = |G|²;
  * population=None, i.i.d. draws (with replacement): E[tr_est] = tr(Σ), E[G2_est] = |G|²;
    the same estimates over batches drawn without replacement average to tr(Σ)·D/(D − 1)
    and |G|² − tr(Σ)/(D − 1) (the docstring's "low by about tr(Σ)/D").
"""
import itertools
import json
import math

import numpy as np
import pytest

from gpumlp import MLP
from gpumlp.noise import NoiseScale, StepRecords, estimate
from gpumlp.testing import exact

D = 6
RNG = np.random.default_rng(7)
GRADS = RNG.normal(size=(D, 3)) + np.array([0.7, -0.4, 0.2])      # per-example gradients, G ≠ 0
G = GRADS.mean(axis=0)
TRACE = float(((GRADS - G) ** 2).sum(axis=1).mean())                # normalised by D
G2 = float(G @ G)


def _batches(B, replace):
    """Every batch of B examples: all B-subsets, or all ordered B-tuples with replacement."""
    pick = itertools.product(range(D), repeat=B) if replace else itertools.combinations(range(D), B)
    return [list(p) for p in pick]


def _inputs(batches):
    """(sum_s, grad_sq, B) of each batch, as gpumlp's engine measures them for a mean loss."""
    B = len(batches[0])
    g = GRADS[np.array(batches)]                                   # batches × B × 3
    sum_s = ((g / B) ** 2).sum(axis=(1, 2))
    gbar = g.mean(axis=1)
    return sum_s, (gbar ** 2).sum(axis=1), np.full(len(batches), B)


def test_the_population_is_not_degenerate():
    assert TRACE > 0.5 and G2 > 0.3 and abs(TRACE - G2) > 0.1


@pytest.mark.parametrize("B", [2, 3, 5, 6])
def test_without_replacement_with_the_population_averages_to_trace_and_g2(B):
    batches = _batches(B, replace=False)
    assert len(batches) == math.comb(D, B)
    tr, g2 = estimate(*_inputs(batches), population=D)
    assert tr.shape == g2.shape == (len(batches),) and tr.dtype == g2.dtype == np.float64
    assert tr.mean() == pytest.approx(TRACE, rel=1e-12, abs=1e-12)
    assert g2.mean() == pytest.approx(G2, rel=1e-12, abs=1e-12)


def test_the_whole_population_as_one_batch_is_exact():
    """B = D: the batch is the population, so |G|²_est must be |ḡ|² itself and tr_est the population variance."""
    tr, g2 = estimate(*_inputs([list(range(D))]), population=D)
    assert tr[0] == pytest.approx(TRACE, rel=1e-13) and g2[0] == pytest.approx(G2, rel=1e-13)


@pytest.mark.parametrize("B", [2, 3])
def test_iid_draws_without_a_population_average_to_trace_and_g2(B):
    batches = _batches(B, replace=True)
    assert len(batches) == D ** B
    tr, g2 = estimate(*_inputs(batches))
    assert tr.mean() == pytest.approx(TRACE, rel=1e-12, abs=1e-12)
    assert g2.mean() == pytest.approx(G2, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("B", [2, 3])
def test_without_a_population_draws_without_replacement_are_biased_as_documented(B):
    tr, g2 = estimate(*_inputs(_batches(B, replace=False)))
    assert tr.mean() == pytest.approx(TRACE * D / (D - 1), rel=1e-12)
    assert g2.mean() == pytest.approx(G2 - TRACE / (D - 1), rel=1e-12)


def test_one_batch_by_hand():
    """Examples 0, 2, 5 of the population, formula by formula, without the module's own algebra."""
    g = GRADS[[0, 2, 5]]
    m = (g ** 2).sum(axis=1).mean()
    gbar2 = float(g.mean(axis=0) @ g.mean(axis=0))
    V = 3 / 2 * (m - gbar2)                                             # the sample variance, B − 1
    sum_s, grad_sq, B = _inputs([[0, 2, 5]])
    tr, g2 = estimate(float(sum_s[0]), float(grad_sq[0]), 3, population=D)
    assert float(tr) == pytest.approx(V * 5 / 6, rel=1e-13)
    assert float(g2) == pytest.approx(gbar2 - V * 5 / 6 * 3 / (3 * 5), rel=1e-13)
    tr, g2 = estimate(float(sum_s[0]), float(grad_sq[0]), 3)
    assert float(tr) == pytest.approx(V, rel=1e-13) and float(g2) == pytest.approx(gbar2 - V / 3, rel=1e-13)


def test_mixed_batch_sizes_in_one_call():
    """The last batch of an epoch is shorter: each estimate uses its own B."""
    b2, b3 = _batches(2, False), _batches(3, False)
    parts = [_inputs(b2), _inputs(b3)]
    sum_s, grad_sq, B = (np.concatenate(a) for a in zip(*parts, strict=True))
    tr, g2 = estimate(sum_s, grad_sq, B, population=D)
    assert tr[:len(b2)].mean() == pytest.approx(TRACE, rel=1e-12)
    assert tr[len(b2):].mean() == pytest.approx(TRACE, rel=1e-12)
    assert g2[len(b2):].mean() == pytest.approx(G2, rel=1e-12)


@pytest.mark.parametrize("B", [2, 3])
def test_noise_scale_means_over_every_batch_give_the_exact_ratio(B):
    """b_simple_mean is the ratio of the means (never a mean of ratios): over every B-subset,
    exactly tr(Σ)/|G|²."""
    ns = NoiseScale(population=D).update(*_inputs(_batches(B, replace=False)))
    assert ns.steps == math.comb(D, B) and ns.samples == B * math.comb(D, B)
    assert ns.b_simple_mean == pytest.approx(TRACE / G2, rel=1e-12)


def test_noise_scale_skips_batches_of_one_but_counts_their_samples():
    sum_s, grad_sq, B = _inputs(_batches(2, replace=False))
    ns = NoiseScale(population=D).update(np.append(sum_s, 9.0), np.append(grad_sq, 1.0), np.append(B, 1))
    assert ns.steps == len(B) and ns.samples == 2 * len(B) + 1
    assert ns.b_simple_mean == pytest.approx(TRACE / G2, rel=1e-12)


# -- the state through its JSON, immediately and after another update ------------------------

PROPERTIES = ("population", "decay", "start_samples", "steps", "samples", "trace", "grad_sq", "b_simple",
              "b_simple_mean", "b_simple_start")


def _same(a, b):
    for name in PROPERTIES:
        assert getattr(a, name) == getattr(b, name), name      # exact: floats through JSON round-trip exactly
    assert a.to_json() == b.to_json()


def _through_json(ns):
    return NoiseScale.from_json(json.loads(json.dumps(ns.to_json())))


def test_noise_scale_round_trips_through_json_immediately_and_after_another_update():
    sum_s, grad_sq, B = _inputs(_batches(3, replace=False))
    ns = NoiseScale(population=D, decay=0.8, start_samples=12)
    ns.update(sum_s[:7], grad_sq[:7], B[:7])                          # 21 samples: the start is the first 4
    assert ns.b_simple_start != ns.b_simple_mean != ns.b_simple        # three different averages to tell apart
    assert None not in (ns.trace, ns.grad_sq, ns.b_simple, ns.b_simple_mean, ns.b_simple_start)
    copy = _through_json(ns)
    _same(ns, copy)
    for x in (ns, copy):                                               # another update on both: still the same
        x.update(sum_s[7:], grad_sq[7:], B[7:])
    _same(ns, copy)
    assert ns.steps == 20 and ns.samples == 60
    again = _through_json(copy)
    _same(ns, again)
    assert again.b_simple_mean == pytest.approx(TRACE / G2, rel=1e-12)


def test_a_fresh_noise_scale_round_trips():
    ns = NoiseScale()
    copy = _through_json(ns)
    _same(ns, copy)
    assert copy.trace is None and copy.population is None and copy.start_samples == 1


def test_an_update_split_anywhere_gives_the_same_state():
    """Feeding the batches one call at a time (as the engine does between scorings) or all at once."""
    sum_s, grad_sq, B = _inputs(_batches(2, replace=False))
    whole = NoiseScale(population=D, decay=0.9).update(sum_s, grad_sq, B)
    parts = NoiseScale(population=D, decay=0.9)
    for i in range(len(B)):
        parts.update(sum_s[i], grad_sq[i], B[i])
    for name in PROPERTIES:
        a, b = getattr(whole, name), getattr(parts, name)
        assert a == pytest.approx(b, rel=1e-13), name


def test_the_start_is_the_batches_begun_within_start_samples():
    """b_simple_start averages the batches that begin before start_samples examples were seen:
    with B = 3 and start_samples = 12, the batches starting at 0, 3, 6 and 9 (not the one at 12)."""
    sum_s, grad_sq, B = _inputs(_batches(3, replace=False))
    tr, g2 = estimate(sum_s, grad_sq, B, population=D)
    ns = NoiseScale(population=D, start_samples=12)
    ns.update(sum_s[:2], grad_sq[:2], B[:2]).update(sum_s[2:], grad_sq[2:], B[2:])   # across two calls
    assert ns.b_simple_start == pytest.approx(tr[:4].sum() / g2[:4].sum(), rel=1e-13)
    assert ns.b_simple_start != pytest.approx(tr[:3].sum() / g2[:3].sum(), rel=1e-6)
    assert ns.b_simple_mean == pytest.approx(tr.sum() / g2.sum(), rel=1e-13)
    default = NoiseScale(population=D).update(sum_s, grad_sq, B)          # by default the first epoch: D examples
    assert default.b_simple_start == pytest.approx(tr[:2].sum() / g2[:2].sum(), rel=1e-13)


@pytest.mark.parametrize("population", [1, 0, -6, 2.5, 6.0, True, "6"])
def test_estimate_refuses_a_population_that_is_not_a_count_of_examples(population):
    with pytest.raises(ValueError, match="population must be"):
        estimate(1.0, 0.5, 2, population=population)


def test_estimate_refuses_a_batch_larger_than_its_population():
    """Batches drawn without replacement from D examples hold at most D (B > D gave D − B < 0: a wrong sign)."""
    with pytest.raises(ValueError, match="population must be.*got 6 for batch_size"):
        estimate([1.0, 1.0], [0.5, 0.5], [6, 7], population=D)
    tr, g2 = estimate(1.0, 0.5, 6, population=np.int64(D))             # B = D is the whole population
    assert np.isfinite(tr) and np.isfinite(g2)


# -- the estimator's edges, one at a time -----------------------------------------------------

def _one(trace, g2):
    """(sum_s, grad_sq) of a batch of 2 whose i.i.d. estimates are exactly ``trace`` and ``g2``:
    V = 2 (2 sum_s − grad_sq) = trace and grad_sq − V/2 = g2."""
    return (g2 + trace) / 2, g2 + trace / 2


def _fed(trace, g2):
    ns = NoiseScale(decay=0)
    return ns.update(*_one(trace, g2), 2)


def test_the_helper_batch_gives_the_estimates_asked_for():
    tr, g2 = estimate(*_one(1.0, 2.0), 2)
    assert (float(tr), float(g2)) == (1.0, 2.0)
    ns = _fed(1.0, 2.0)
    assert (ns.trace, ns.grad_sq, ns.b_simple, ns.b_simple_mean, ns.b_simple_start) == (1.0, 2.0, 0.5, 0.5, 0.5)


@pytest.mark.parametrize("trace, g2", [(0.0, 2.0), (-1.0, 2.0), (1.0, 0.0), (1.0, -2.0), (-1.0, -2.0),
                                       (1e300, 1e-300)])
def test_an_estimate_that_is_not_positive_or_a_ratio_that_overflows_is_unresolved(trace, g2):
    """B_simple needs tr(Σ) > 0 and |G|² > 0 (and a finite ratio): None otherwise, never 0,
    a negative number, inf or NaN."""
    ns = _fed(trace, g2)
    assert ns.steps == 1 and ns.trace == pytest.approx(trace) and ns.grad_sq == pytest.approx(g2)
    assert (ns.b_simple, ns.b_simple_mean, ns.b_simple_start) == (None, None, None)


def test_before_any_batch_every_figure_is_none():
    ns = NoiseScale(population=6)
    assert (ns.trace, ns.grad_sq, ns.b_simple, ns.b_simple_mean, ns.b_simple_start) == (None,) * 5
    assert repr(ns) == "NoiseScale(b_simple=None, steps=0, population=6)"
    assert repr(_fed(1.0, 2.0)) == "NoiseScale(b_simple=0.5, steps=1, population=None)"


@pytest.mark.parametrize("B, shown", [(1, "1"), ([2, 1], "[2, 1]"), (0, "0")])
def test_estimate_refuses_a_batch_of_one(B, shown):
    with pytest.raises(ValueError, match=exact(
            f"a batch of fewer than 2 columns says nothing about the variance; got batch_size {shown}")):
        estimate(1.0, 0.5, B)


def test_a_population_of_two_is_the_smallest():
    """D = 2, B = 2: the batch is the population, |G|²_est = |ḡ|² and tr_est = V/2."""
    tr, g2 = estimate(1.5, 2.5, 2, population=2)
    assert (float(tr), float(g2)) == (0.5, 2.5)
    assert NoiseScale(population=2).population == 2


def test_estimate_refuses_a_population_in_so_many_words():
    with pytest.raises(ValueError, match=exact(
            "population must be the number of examples the batches are drawn from (an integer >= 2 and >= every "
            "batch size) or None; got 5 for batch_size [2, 6]")):
        estimate([1.0, 1.0], [0.5, 0.5], [2, 6], population=5)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_the_estimates_are_float64_whatever_the_inputs_precision(which):
    """The docstring's "as float64": a long double input is brought down too."""
    args = [1.5, 2.5, 2]
    args[which] = np.longdouble(args[which])
    tr, g2 = estimate(*args)
    assert tr.dtype == g2.dtype == np.float64
    assert (float(tr), float(g2)) == (1.0, 2.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"decay": 1}, "decay must be a number in [0, 1); got 1"),
    ({"decay": 1.5}, "decay must be a number in [0, 1); got 1.5"),
    ({"decay": -0.1}, "decay must be a number in [0, 1); got -0.1"),
    ({"decay": False}, "decay must be a number in [0, 1); got False"),
    ({"decay": True}, "decay must be a number in [0, 1); got True"),
    ({"decay": "0.5"}, "decay must be a number in [0, 1); got '0.5'"),
    ({"start_samples": 0}, "start_samples must be a positive integer or None; got 0"),
    ({"start_samples": 2.5}, "start_samples must be a positive integer or None; got 2.5"),
    ({"start_samples": True}, "start_samples must be a positive integer or None; got True"),
    ({"population": 1}, "population must be the number of examples (an integer >= 2) or None; got 1"),
    ({"population": 6.0}, "population must be the number of examples (an integer >= 2) or None; got 6.0"),
    ({"population": True}, "population must be the number of examples (an integer >= 2) or None; got True"),
])
def test_noise_scale_refuses_each_bad_setting_in_so_many_words(kwargs, message):
    with pytest.raises(ValueError, match=exact(message)):
        NoiseScale(**kwargs)


def test_noise_scale_takes_the_edges_of_its_settings():
    ns = NoiseScale(population=np.int64(2), decay=0, start_samples=np.int64(1))
    assert (ns.population, ns.decay, ns.start_samples) == (2, 0.0, 1)
    assert type(ns.decay) is float and type(ns.start_samples) is int
    assert NoiseScale(decay=np.float32(0.5)).decay == 0.5
    assert NoiseScale(start_samples=7, population=3).start_samples == 7       # start_samples, then D, then 1
    assert NoiseScale(population=3).start_samples == 3


def test_the_moving_averages_by_hand():
    """decay 0.5 over batches (tr, |G|²) = (1, 2) then (4, 2): the EMAs start at 0 and are
    bias-corrected by 1 − 0.5² = 0.75, so tr(Σ) = (0.25·1 + 0.5·4)/0.75 = 3, |G|² = 2."""
    ns = NoiseScale(decay=0.5)
    ns.update(*_one(1.0, 2.0), 2)
    assert (ns.trace, ns.grad_sq, ns._weight) == (1.0, 2.0, 0.5)
    ns.update(*_one(4.0, 2.0), 2)
    assert (ns.trace, ns.grad_sq, ns.b_simple) == (3.0, 2.0, 1.5)
    assert (ns.b_simple_mean, ns.steps, ns.samples) == (5.0 / 4.0, 2, 4)
    assert ns.to_json() == {"population": None, "decay": 0.5, "start_samples": 1, "steps": 2, "samples": 4,
                            "ema": [2.25, 1.5], "weight": 0.75, "sum": [5.0, 4.0], "start": [1.0, 2.0]}
    assert ns.b_simple_start == 0.5                            # the first batch alone began within 1 sample


# -- the device records ---------------------------------------------------------------------

def test_zero_norms_clears_its_row_alone():
    net = MLP([3, 2], dtype="float64", device="cpu")
    records = StepRecords(net, 4)
    assert records.sum_s.shape == records.grad_sq.shape == (4, 1)
    assert records.sum_s.dtype == records.grad_sq.dtype == np.float64
    records.sum_s[...] = 7.0
    records.zero_norms(1)
    assert records.sum_s[:, 0].tolist() == [7.0, 0.0, 7.0, 7.0]
    records.zero_norms(3)
    assert records.sum_s[:, 0].tolist() == [7.0, 0.0, 7.0, 0.0]


def test_the_state_keeps_two_numbers_per_average():
    d = _fed(1.0, 2.0).to_json()
    d.update(ema=[*d["ema"], 9.0], sum=[*d["sum"], 9.0], start=[*d["start"], 9.0])
    back = NoiseScale.from_json(d)
    assert back.to_json() == _fed(1.0, 2.0).to_json()


DROP = object()


@pytest.mark.parametrize("change, why", [
    ({"steps": DROP}, "KeyError: 'steps'"),
    ({"ema": DROP}, "KeyError: 'ema'"),
    ({"population": DROP}, "KeyError: 'population'"),
    ({"weight": [1]}, "TypeError: float() argument must be a string or a real number, not 'list'"),
    ({"samples": "many"}, "ValueError: invalid literal for int() with base 10: 'many'"),
    ({"decay": 2}, "ValueError: decay must be a number in [0, 1); got 2"),
])
def test_a_damaged_state_names_what_is_wrong(change, why):
    d = {k: v for k, v in {**_fed(1.0, 2.0).to_json(), **change}.items() if v is not DROP}
    with pytest.raises(ValueError, match=exact(f"the noise scale's state is damaged ({why})")):
        NoiseScale.from_json(d)


@pytest.mark.parametrize("micro", [None, 3])
def test_a_float32_models_records_are_float32_on_every_backend(backend, micro):
    """Σ_n s_n and |ḡ|² of rows [0, 7) go into row 1 in the model's dtype (float32 dot products),
    whole or in chunks of 3, on NumPy and on the strict device backend; read() gives float64."""
    from gpumlp.engine import Trainer
    from gpumlp.losses import cross_entropy
    from gpumlp.optim import SGD
    from gpumlp.testing import labelled_problem

    X, y = labelled_problem(d0=3, n=7, k=2, seed=4)
    hand = MLP([3, 4, 2], dtype="float64", device="cpu", seed=0)
    hand.backward(cross_entropy(hand.forward(X), y)[1])
    net = MLP([3, 4, 2], dtype="float32", device=backend, seed=0)
    trainer = Trainer(net, SGD(0.1), micro_batch=micro)
    records = StepRecords(net, 2)
    for a in (records.sum_s, records.grad_sq, records._part):
        assert a.dtype == net.backend.dtype("float32")
    trainer.gradients(trainer.data(X, y), 0, 7, records, 1)
    sums, g2 = records.read(net.backend, 1, 2)
    assert sums.dtype == g2.dtype == np.float64 and sums.shape == g2.shape == (1,)
    assert sums[0] == pytest.approx(float(np.sum(hand.sample_grad_sq_norms())), rel=1e-5)
    assert g2[0] == pytest.approx(float(hand.grads @ hand.grads), rel=1e-5)
