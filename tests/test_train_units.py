"""gpumlp.state and gpumlp.train piece by piece, in-process and fast: TrainState's fields, JSON
and refusals; fit's checks, counters, hooks, logging and out-of-memory path; evaluate and
the epoch line, each against numbers worked out here."""
import json

import numpy as np
import pytest

from gpumlp.state import TrainState
from gpumlp.testing import exact

# -- TrainState --------------------------------------------------------------------------------


def test_a_fresh_state_is_at_epoch_0_step_0_with_the_seeds_generator():
    state = TrainState(5)
    assert (state.epoch, state.step) == (0, 0)
    assert state.rng.random(3).tolist() == np.random.default_rng(5).random(3).tolist()
    assert TrainState().rng.random(3).tolist() == np.random.default_rng(0).random(3).tolist()   # seed 0 by default
    assert TrainState(np.int64(5)).rng.random() == np.random.default_rng(5).random()
    assert repr(state) == "TrainState(epoch=0, step=0)"


@pytest.mark.parametrize("seed", [True, False, 1.0, "1", None])
def test_a_seed_that_is_not_an_integer_is_refused(seed):
    with pytest.raises(ValueError, match=exact(f"seed must be an integer; got {seed!r}")):
        TrainState(seed)


def test_the_state_names_its_fields_in_json():
    state = TrainState(3)
    state.rng.random(4)
    state.epoch, state.step = 2, 17
    d = state.to_json()
    assert d == {"epoch": 2, "step": 17, "rng": state.rng.bit_generator.state}
    assert d["rng"]["bit_generator"] == "PCG64"


def test_the_state_round_trips_through_json_and_its_generator_continues():
    state = TrainState(3)
    state.rng.permutation(10)
    state.epoch, state.step = 7, 70
    back = TrainState.from_json(json.loads(json.dumps(state.to_json())))
    assert (back.epoch, back.step) == (7, 70) and type(back.epoch) is int and type(back.step) is int
    assert repr(back) == "TrainState(epoch=7, step=70)"
    assert back.rng.permutation(10).tolist() == state.rng.permutation(10).tolist()
    assert back.to_json() == state.to_json()


def test_another_bit_generator_is_taken_back_as_saved():
    rng = np.random.Generator(np.random.MT19937(4))
    rng.random(5)
    back = TrainState.from_json({"epoch": "1", "step": 2.0, "rng": rng.bit_generator.state})
    assert (back.epoch, back.step) == (1, 2)
    assert type(back.rng.bit_generator) is np.random.MT19937
    assert back.rng.random(4).tolist() == rng.random(4).tolist()


GOOD = {"epoch": 1, "step": 2, "rng": np.random.default_rng(0).bit_generator.state}


@pytest.mark.parametrize("change, why", [
    ({"epoch": None}, "KeyError: 'epoch'"),
    ({"step": None}, "KeyError: 'step'"),
    ({"rng": None}, "KeyError: 'rng'"),
    ({"epoch": [1]}, "TypeError: int() argument must be a string, a bytes-like object or a real number, not 'list'"),
    ({"step": "two"}, "ValueError: invalid literal for int() with base 10: 'two'"),
    ({"rng": {"bit_generator": "Nope"}}, "AttributeError: module 'numpy.random' has no attribute 'Nope'"),
    ({"rng": {"state": 1}}, "KeyError: 'bit_generator'"),
])
def test_a_damaged_state_names_what_is_wrong(change, why):
    d = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=exact(f"the training state is damaged ({why})")):
        TrainState.from_json(d)
