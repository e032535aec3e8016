"""The edges of the noise estimator's and the Classifier's checks, each side of each bound
(mutmut's survivors in noise.py and classifier.py)."""
import numpy as np
import pytest

import gpumlp
from gpumlp import io
from gpumlp.noise import NoiseScale, estimate


def test_the_smallest_population_and_decay_are_accepted():
    ns = NoiseScale(population=2, decay=0)             # two examples; no averaging over steps
    ns.update([3.0], [1.0], [2])
    assert ns.population == 2 and ns.decay == 0.0 and ns.steps == 1
    trace, g2 = estimate(np.array([3.0]), np.array([1.0]), np.array([2.0]), population=2)
    assert np.isfinite(trace).all() and np.isfinite(g2).all()
    for bad in (1, True, 2.0):
        with pytest.raises(ValueError, match="population"):
            NoiseScale(population=bad)
    for bad in (True, 1.0, -0.1, "0.5"):
        with pytest.raises(ValueError, match="decay"):
            NoiseScale(decay=bad)
    with pytest.raises(ValueError, match="population"):
        estimate(np.array([3.0]), np.array([1.0]), np.array([2.0]), population=1)


def test_b_simple_is_unresolved_while_either_average_is_not_positive():
    """One batch of 2 from a population of 4: tr(Σ) = 3 Σs − 1.5 |ḡ|² and |G|² = 1.5 |ḡ|² − Σs
    (exact in binary), so each average can be made positive, zero or negative."""
    for sums, g2, trace, grad in ((1.0, 1.0, 1.5, 0.5), (2.0, 1.0, 4.5, -0.5), (0.5, 1.0, 0.0, 1.0),
                                  (1.5, 1.0, 3.0, 0.0), (0.0, 1.0, -1.5, 1.5)):
        ns = NoiseScale(population=4).update([sums], [g2], [2])
        assert (ns.trace, ns.grad_sq) == (trace, grad)
        assert ns.b_simple == (trace / grad if trace > 0 and grad > 0 else None), (sums, g2)
        assert ns.b_simple_mean == ns.b_simple and ns.b_simple_start == ns.b_simple


def test_classes_must_name_every_output_in_one_row():
    net = gpumlp.MLP([3, 2], device="cpu", seed=0)
    scaler = gpumlp.Standardizer(np.zeros((3, 1)), np.ones((3, 1)))
    for bad in (np.array([[0, 1]]), np.array([0, 1, 2]), np.array([[0], [1]])):
        with pytest.raises(ValueError, match="classes must name the model's 2 outputs"):
            gpumlp.Classifier(net, scaler, bad)
    one = gpumlp.Classifier(gpumlp.MLP([3, 1], device="cpu", seed=0), scaler, np.array(["only"]))
    assert one.classes.tolist() == ["only"]


def test_a_model_file_without_its_scaling_is_refused_by_name(tmp_path):
    net = gpumlp.MLP([3, 2], device="cpu", seed=0)
    io.save(tmp_path / "bare.npz", net, {"loss": "ce"})
    with pytest.raises(ValueError, match=r"lacks \['classes', 'x_mean', 'x_scale'\]"):
        gpumlp.Classifier.load(tmp_path / "bare.npz", device="cpu")


def test_evaluate_takes_margin_1_when_the_run_recorded_none():
    rng = np.random.default_rng(0)
    net = gpumlp.MLP([3, 4, 3], dtype="float64", device="cpu", seed=0)
    scaler = gpumlp.Standardizer(np.zeros((3, 1)), np.ones((3, 1)))
    X, y = rng.standard_normal((3, 20)), rng.integers(0, 3, 20)
    clf = gpumlp.Classifier(net, scaler, np.arange(3), {"loss": "hinge"})
    assert clf.evaluate(X, y) == gpumlp.evaluate(net, X, y, loss="hinge", margin=1.0)
    assert clf.evaluate(X, y) != gpumlp.evaluate(net, X, y, loss="hinge", margin=2.0)
