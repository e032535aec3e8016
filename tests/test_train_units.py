"""gpumlp.state and gpumlp.train piece by piece, in-process and fast: TrainState's fields, JSON
and refusals; fit's checks, counters, hooks, logging and out-of-memory path; evaluate and
the epoch line, each against numbers worked out here."""
import json
import time
import warnings

import numpy as np
import pytest

import gpumlp
from gpumlp.engine import Hook, OutOfDeviceMemory, TrainingDiverged
from gpumlp.noise import NoiseScale
from gpumlp.state import TrainState
from gpumlp.testing import exact, labelled_problem, ref_hinge, ref_mse
from gpumlp.train import _describe, _NoUpdate, evaluate, fit

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


# -- fit: its checks, in so many words ------------------------------------------------------------

def _net(sizes=(3, 4, 3), seed=0, dtype="float64"):
    return gpumlp.MLP(list(sizes), dtype=dtype, device="cpu", seed=seed)


X10, Y10 = labelled_problem(n=10)
QUIET = {"progress": False, "log": None}


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs must be a positive integer; got 0"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer; got 2.5"),
    ({"micro_batch": 0}, "micro_batch must be a positive integer; got 0"),
    ({"y_test": Y10}, "give X_test and y_test together, or neither"),
    ({"noise_scale": 1}, "noise_scale must be True, False or a gpumlp.noise.NoiseScale; got 1"),
    ({"noise_scale": None}, "noise_scale must be True, False or a gpumlp.noise.NoiseScale; got None"),
    ({"state": {"epoch": 1}}, "state must be a gpumlp.train.TrainState; got {'epoch': 1}"),
    ({"on_epoch": 3}, "on_epoch must be a function (record, state); got 3"),
    ({"hooks": [Hook(), "x"]}, "hooks must be gpumlp.engine.Hook instances; got 'x'"),
    ({"noise_scale": NoiseScale(population=5)},
     "the NoiseScale's population is 5, but the training data has 10 columns: batches are drawn from those"),
])
def test_fit_refuses_each_bad_argument_in_so_many_words(kwargs, message):
    net = _net()
    before = np.array(net.params)
    with pytest.raises(ValueError, match=exact(message)):
        fit(net, X10, Y10, gpumlp.SGD(0.1), **QUIET, **kwargs)
    np.testing.assert_array_equal(net.params, before)


def test_a_noise_scale_without_a_population_is_taken():
    history = fit(_net(), X10, Y10, gpumlp.SGD(0.1), epochs=1, batch_size=5, noise_scale=NoiseScale(), **QUIET)
    assert "b_simple" in history[0]


# -- fit: counters, state, hooks, on_epoch --------------------------------------------------------

class StepLog(Hook):
    def __init__(self):
        self.steps, self.epochs = [], []

    def after_step(self, trainer, step):
        self.steps.append((step.epoch, step.index, step.number, step.steps))

    def after_epoch(self, trainer, record):
        self.epochs.append(record["epoch"])


def test_fit_counts_epochs_and_steps_across_the_run():
    """N = 10 in batches of 4: 3 steps an epoch, numbered on over the run."""
    state, log = TrainState(3), StepLog()
    history = fit(_net(), X10, Y10, gpumlp.SGD(0.1), epochs=2, batch_size=4, state=state, hooks=[log], **QUIET)
    assert [h["epoch"] for h in history] == [1, 2] and log.epochs == [1, 2]
    assert log.steps == [(1, 0, 1, 3), (1, 1, 2, 3), (1, 2, 3, 3), (2, 0, 4, 3), (2, 1, 5, 3), (2, 2, 6, 3)]
    assert (state.epoch, state.step) == (2, 6)


def test_fit_resumes_from_a_state_to_the_runs_total():
    """A state after 2 of 4 epochs trains epochs 3 and 4, its step numbers going on from 6,
    with the generator the state carries (so the result is the uninterrupted run's)."""
    whole = _net()
    fit(whole, X10, Y10, gpumlp.SGD(0.1), epochs=4, batch_size=4, seed=5, **QUIET)
    part, state = _net(), TrainState(5)
    fit(part, X10, Y10, gpumlp.SGD(0.1), epochs=2, batch_size=4, state=state, **QUIET)
    log = StepLog()
    history = fit(part, X10, Y10, gpumlp.SGD(0.1), epochs=4, batch_size=4, state=state, seed=99, hooks=[log],
                  **QUIET)
    assert [h["epoch"] for h in history] == [3, 4]
    assert [s[2] for s in log.steps] == [7, 8, 9, 10, 11, 12]
    assert (state.epoch, state.step) == (4, 12)
    np.testing.assert_array_equal(part.params, whole.params)


def test_a_state_past_the_runs_total_trains_nothing(monkeypatch):
    bars = []

    class Bar:
        def __init__(self, **kwargs):
            bars.append(kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(gpumlp.train, "tqdm", Bar)
    state = TrainState(0)
    state.epoch, state.step = 5, 15
    net = _net()
    before = np.array(net.params)
    assert fit(net, X10, Y10, gpumlp.SGD(0.1), epochs=3, batch_size=4, state=state, **QUIET) == []
    assert bars == [{"total": 0, "unit": "batch", "disable": True, "leave": False}]
    np.testing.assert_array_equal(net.params, before)
    assert (state.epoch, state.step) == (5, 15)


def test_on_epoch_sees_each_record_with_the_state_after_it():
    seen = []
    state = TrainState(1)
    history = fit(_net(), X10, Y10, gpumlp.SGD(0.1), epochs=3, batch_size=3, state=state,
                  on_epoch=lambda record, s: seen.append((record, s, s.epoch, s.step)), **QUIET)
    assert [(r is h, s is state, e, st) for (r, s, e, st), h in zip(seen, history, strict=True)] == \
        [(True, True, 1, 4), (True, True, 2, 8), (True, True, 3, 12)]


def test_micro_batches_below_the_batch_size_split_it_and_others_do_not(monkeypatch):
    net = _net()
    widths, forward = [], net._forward
    monkeypatch.setattr(net, "_forward", lambda Z0: widths.append(Z0.shape[1]) or forward(Z0))
    fit(net, X10, Y10, gpumlp.SGD(0.1), epochs=1, batch_size=4, micro_batch=3, **QUIET)
    assert widths == [3, 1, 3, 1, 2]
    widths.clear()
    fit(net, X10, Y10, gpumlp.SGD(0.1), epochs=1, batch_size=4, micro_batch=4, **QUIET)
    assert widths == [4, 4, 2]


def test_fit_with_noise_true_measures_against_the_training_columns():
    """noise_scale=True is NoiseScale(population=N): the same figures as that instance gives,
    and other figures than i.i.d. draws (population None) give."""
    def run(noise):
        return fit(_net(), X10, Y10, gpumlp.SGD(0.1), epochs=2, batch_size=4, seed=2, noise_scale=noise, **QUIET)
    plain = run(False)
    assert not {"b_simple", "b_simple_mean", "b_simple_start"} & set(plain[0])
    true, given, iid = run(True), NoiseScale(population=10), NoiseScale()
    by_instance, by_iid = run(given), run(iid)
    keys = ("b_simple", "b_simple_mean", "b_simple_start")
    assert [[h[k] for k in keys] for h in true] == [[h[k] for k in keys] for h in by_instance]
    assert given.steps == 6 and given.samples == 20                    # the instance itself was fed
    assert true[-1]["b_simple_mean"] is not None
    assert true[-1]["b_simple_mean"] != by_iid[-1]["b_simple_mean"]


# -- fit: logging ------------------------------------------------------------------------------

def test_progress_alone_logs_each_epoch_through_tqdm(monkeypatch):
    lines = []
    monkeypatch.setattr(gpumlp.train.tqdm, "write", lines.append)
    history = fit(_net(), X10, Y10, gpumlp.SGD(0.1), epochs=2, batch_size=4, progress=True)
    assert lines == [f"epoch   {h['epoch']}/2  loss {h['loss']:.4f}  acc {h['accuracy']:.4f}" for h in history]


def test_a_log_without_progress_still_gets_each_epoch():
    lines = []
    history = fit(_net(), X10, Y10, gpumlp.SGD(0.1), epochs=1, batch_size=4, log=lines.append)
    assert lines == [f"epoch   1/1  loss {history[0]['loss']:.4f}  acc {history[0]['accuracy']:.4f}"]


@pytest.mark.parametrize("record, line", [
    ({"epoch": 3, "loss": 0.123456, "accuracy": None}, "epoch   3/12  loss 0.1235"),
    ({"epoch": 12, "loss": 2.0, "accuracy": 0.5, "test_loss": 0.25, "test_accuracy": None},
     "epoch  12/12  loss 2.0000  acc 0.5000  test loss 0.2500"),
    ({"epoch": 1, "loss": 1.0, "accuracy": None, "b_simple": None},
     "epoch   1/12  loss 1.0000  B_simple (moving avg) -"),
    ({"epoch": 1, "loss": 1.0, "accuracy": 1.0, "test_loss": 3.0, "test_accuracy": 0.75, "b_simple": 123.6},
     "epoch   1/12  loss 1.0000  acc 1.0000  test loss 3.0000  test acc 0.7500  B_simple (moving avg) 124"),
])
def test_the_epoch_line(record, line):
    assert _describe(record, 12) == line


def test_squared_error_runs_log_no_accuracy():
    lines = []
    T = np.random.default_rng(0).normal(size=(3, 10))
    history = fit(_net(), X10, T, gpumlp.SGD(0.01), loss="squared_error", epochs=1, batch_size=5,
                  X_test=X10, y_test=T, log=lines.append)
    assert history[0]["accuracy"] is None and history[0]["test_accuracy"] is None
    assert lines == [f"epoch   1/1  loss {history[0]['loss']:.4f}  test loss {history[0]['test_loss']:.4f}"]


# -- fit: out of memory, and what it leaves behind ------------------------------------------------

class Failing:
    def __init__(self, error, after=0):
        self.error, self.after, self.calls = error, after, 0

    def update(self, net, normalizer):
        self.calls += 1
        if self.calls > self.after:
            raise self.error


def _released(net):
    return net._ws is None and not net._fresh and all(ws.Z[0] is None for ws in net._workspaces.values())


@pytest.mark.parametrize("error", [MemoryError(), type("OutOfMemoryError", (Exception,), {})("device"),
                                   RuntimeError("cuBLAS: CUBLAS_STATUS_ALLOC_FAILED")])
def test_running_out_of_memory_is_one_clear_error(error):
    net = _net()
    with pytest.raises(OutOfDeviceMemory, match=exact(
            f"the numpy device ran out of memory training at batch size 4 ({type(error).__name__}); try a smaller "
            "batch size (--batch-size), or compute each batch in smaller chunks with the same result (--micro-batch "
            "M, fit(micro_batch=M)). The step that failed made no update: the parameters are those after the last "
            "step that ran")) as info:
        fit(net, X10, Y10, Failing(error, after=1), epochs=1, batch_size=4, **QUIET)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert _released(net)


def test_another_error_passes_through_unchanged():
    net, error = _net(), KeyError("mine")
    with pytest.raises(KeyError) as info:
        fit(net, X10, Y10, Failing(error), epochs=1, batch_size=4, **QUIET)
    assert info.value is error
    assert _released(net)


def test_fit_and_evaluate_release_the_cached_batches():
    net = _net()
    fit(net, X10, Y10, gpumlp.SGD(0.1), epochs=1, batch_size=4, **QUIET)
    assert _released(net)
    net.forward(X10)
    evaluate(net, X10, Y10)
    assert _released(net)


# -- evaluate ----------------------------------------------------------------------------------

def test_evaluate_is_the_mean_loss_and_accuracy_by_hand():
    net = _net()
    Y = net.forward(X10)
    loss, acc = evaluate(net, X10, Y10, loss="hinge", margin=0.25, batch_size=3)
    assert loss == pytest.approx(ref_hinge(Y, Y10, 0.25, 10)[0], rel=1e-13)
    assert acc == np.mean(Y.argmax(axis=0) == Y10) and 0 < acc < 1
    T = np.random.default_rng(1).normal(size=(3, 10))
    loss, acc = evaluate(net, X10, T, loss="squared_error")
    assert loss == pytest.approx(ref_mse(Y, T, 10 * 3)[0], rel=1e-13) and acc is None     # / (N K)


def test_a_scoring_trainer_refuses_to_update():
    with pytest.raises(RuntimeError, match=exact("this trainer only scores")):
        _NoUpdate().update(_net(), 1)


# -- fit and evaluate: defaults, the bar, seconds, warnings, a job ---------------------------------

def test_the_hinges_margin_defaults_to_1_in_fit_and_evaluate():
    net = _net()
    Y = net.forward(X10)
    assert evaluate(net, X10, Y10, loss="hinge")[0] == pytest.approx(ref_hinge(Y, Y10, 1.0, 10)[0], rel=1e-13)
    a, b = _net(), _net()
    fit(a, X10, Y10, gpumlp.SGD(0.5), loss="hinge", epochs=2, batch_size=4, **QUIET)
    fit(b, X10, Y10, gpumlp.SGD(0.5), loss="hinge", margin=1.0, epochs=2, batch_size=4, **QUIET)
    c = _net()                                          # (a margin >= 1 keeps every hinge on: 0.3 differs)
    fit(c, X10, Y10, gpumlp.SGD(0.5), loss="hinge", margin=0.3, epochs=2, batch_size=4, **QUIET)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    h1 = fit(_net(), X10, Y10, gpumlp.SGD(0.5), loss="hinge", epochs=1, batch_size=4, **QUIET)
    h2 = fit(_net(), X10, Y10, gpumlp.SGD(0.5), loss="hinge", margin=1.0, epochs=1, batch_size=4, **QUIET)
    assert h1[0]["loss"] == h2[0]["loss"]


def test_evaluate_walks_4096_columns_by_default_and_the_batch_size_given(monkeypatch):
    net = gpumlp.MLP([1, 2], dtype="float64", device="cpu", seed=0)
    X, y = labelled_problem(d0=1, n=4100, k=2)
    widths, forward = [], net._forward
    monkeypatch.setattr(net, "_forward", lambda Z0: widths.append(Z0.shape[1]) or forward(Z0))
    whole = evaluate(net, X, y)
    assert widths == [4096, 4]
    widths.clear()
    assert evaluate(net, X, y, batch_size=1500) == pytest.approx(whole, rel=1e-12)
    assert widths == [1500, 1500, 1100]
    with pytest.raises(ValueError, match=exact("batch_size must be a positive integer; got 0")):
        evaluate(net, X, y, batch_size=0)


def test_fit_defaults_to_30_epochs_of_batches_of_32_shuffled_by_seed_0():
    X, y = labelled_problem(n=40)
    log = StepLog()
    default = _net()
    history = fit(default, X, y, gpumlp.SGD(0.05), hooks=[log])
    assert len(history) == 30 and len(log.steps) == 60 and log.steps[:2] == [(1, 0, 1, 2), (1, 1, 2, 2)]
    explicit, other = _net(), _net()
    fit(explicit, X, y, gpumlp.SGD(0.05), epochs=30, batch_size=32, seed=0, **QUIET)
    fit(other, X, y, gpumlp.SGD(0.05), epochs=30, batch_size=32, seed=1, **QUIET)
    np.testing.assert_array_equal(default.params, explicit.params)
    assert not np.array_equal(default.params, other.params)


class Bar:
    """tqdm's stand-in: what fit asks of it."""

    def __init__(self, **kwargs):
        self.kwargs, self.updates = kwargs, []
        Bar.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        self.updates.append(n)

    @staticmethod
    def write(line):
        Bar.lines.append(line)


def test_the_progress_bar_counts_each_step_once(monkeypatch):
    Bar.made, Bar.lines = [], []
    monkeypatch.setattr(gpumlp.train, "tqdm", Bar)
    fit(_net(), X10, Y10, gpumlp.SGD(0.1), epochs=3, batch_size=4, progress=True, log=None)
    fit(_net(), X10, Y10, gpumlp.SGD(0.1), epochs=2, batch_size=5, progress=False)
    on, off = Bar.made
    assert on.kwargs == {"total": 9, "unit": "batch", "disable": None, "leave": False} and on.updates == [1] * 9
    assert off.kwargs == {"total": 4, "unit": "batch", "disable": True, "leave": False} and off.updates == []
    assert [line.split()[1] for line in Bar.lines] == ["1/3", "2/3", "3/3"]      # progress alone logs through it


def test_an_epochs_seconds_include_its_scoring(monkeypatch):
    score = gpumlp.engine.Trainer.score

    def slow(self, data, batch_size=4096):
        time.sleep(0.03)
        return score(self, data, batch_size)

    monkeypatch.setattr(gpumlp.engine.Trainer, "score", slow)
    t0 = time.perf_counter()
    history = fit(_net(), X10, Y10, gpumlp.SGD(0.1), epochs=2, batch_size=4, X_test=X10, y_test=Y10, **QUIET)
    elapsed = time.perf_counter() - t0
    assert all(type(h["seconds"]) is float and 0.03 <= h["seconds"] <= elapsed for h in history)


def test_after_epoch_hooks_get_the_trainer():
    seen = []

    class Look(Hook):
        def after_epoch(self, trainer, record):
            seen.append((type(trainer).__name__, trainer.net is net, record["epoch"]))

    net = _net()
    fit(net, X10, Y10, gpumlp.SGD(0.1), epochs=2, batch_size=4, hooks=[Look()], **QUIET)
    assert seen == [("Trainer", True, 1), ("Trainer", True, 2)]


def test_a_diverging_fit_warns_of_nothing_on_the_way():
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise"):
        warnings.simplefilter("error")
        with pytest.raises(TrainingDiverged):
            fit(_net(dtype="float32"), X10, Y10, gpumlp.SGD(1e4), loss="mse", epochs=20, batch_size=4, **QUIET)


def test_a_job_starts_from_rank_0s_parameters_and_trains_as_one_process():
    from gpumlp.loopback import run_ranks
    from gpumlp.parallel import DataParallel

    single = _net(seed=0)
    fit(single, X10, Y10, gpumlp.SGD(0.2, 0.9), epochs=2, batch_size=4, micro_batch=3, seed=3, **QUIET)

    class Job(Hook):
        def before_step(self, trainer, step):
            self.parallel = trainer.parallel

    def rank(comm):
        net, job, hook = _net(seed=comm.Get_rank()), DataParallel(comm), Job()   # rank r starts from seed r
        fit(net, X10, Y10, gpumlp.SGD(0.2, 0.9), epochs=2, batch_size=4, micro_batch=3, seed=3,
            parallel=job, hooks=[hook], **QUIET)
        return np.array(net.params), hook.parallel is job

    for params, shared in run_ranks(2, rank):
        assert shared
        np.testing.assert_allclose(params, single.params, rtol=1e-12, atol=1e-15)
