"""gpumlp.io.atomic_write's durability: the temporary file is flushed and fsynced before
the rename, the folder is fsynced after it, and a write that fails anywhere propagates
its error, leaves the old file as it was and no temporary file behind.  Then the files
themselves: what save and save_checkpoint write, what load and load_checkpoint give back,
and the one-line error that names each way a file can be wrong, asserted exactly."""
import json
import os
import re
import stat
import tempfile

import numpy as np
import pytest

from gpumlp import io
from gpumlp.backend import get_backend
from gpumlp.model import MLP
from gpumlp.state import TrainState
from gpumlp.testing import exact, strict_backend

NEW = b"new contents " * 40          # under the buffer size: a missing flush() leaves it unwritten at fsync


def _describe(fd):
    """What an fd is open on: ('dir', inode) or ('file', inode, size on disk as the kernel sees it)."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        return ("dir", st.st_ino)
    return ("file", st.st_ino, st.st_size)


@pytest.fixture
def recorder(monkeypatch):
    """Every fsync (with what its fd is open on) and every replace (with the source's inode), in order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", _describe(fd)))
        return real_fsync(fd)

    def replace(src, dst, *a, **kw):
        events.append(("replace", os.stat(src).st_ino, os.path.basename(src), os.path.abspath(dst)))
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.parametrize("existing", [False, True])
def test_fsyncs_the_written_file_before_the_rename_and_the_folder_after(tmp_path, recorder, existing):
    target = tmp_path / "model.npz"
    if existing:
        target.write_bytes(b"old")
    io.atomic_write(str(target), lambda f: f.write(NEW))
    assert target.read_bytes() == NEW
    folder_ino = os.stat(tmp_path).st_ino
    assert [e[0] for e in recorder] == ["fsync", "replace", "fsync"], recorder
    (_, file_fd), (_, src_ino, src_name, dst), (_, dir_fd) = recorder
    # the first fsync is on the temporary file, with every byte already handed to the kernel (flushed)
    assert file_fd == ("file", src_ino, len(NEW))
    assert src_name.startswith(".tmp-") and src_name.endswith(".npz")
    assert dst == str(target) and os.stat(target).st_ino == src_ino
    # the last one is on the folder that holds the target, after the rename
    assert dir_fd == ("dir", folder_ino)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_a_relative_path_fsyncs_its_own_folder(tmp_path, recorder, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    io.atomic_write(os.path.join("sub", "m.json"), lambda f: f.write("{}"), mode="w")
    assert (tmp_path / "sub" / "m.json").read_text() == "{}"
    assert recorder[-1] == ("fsync", ("dir", os.stat(tmp_path / "sub").st_ino))
    assert recorder[1][3] == str(tmp_path / "sub" / "m.json")


class Boom(Exception):
    pass


def _fail_write(f):
    f.write(b"half of it")
    raise Boom("the writer failed")


def _interrupt(f):
    f.write(b"half of it")
    raise KeyboardInterrupt


def _check_untouched(tmp_path, target, old):
    if old is None:
        assert not target.exists()
        assert os.listdir(tmp_path) == []
    else:
        assert target.read_bytes() == old
        assert os.listdir(tmp_path) == [target.name]      # no .tmp-* left behind


@pytest.mark.parametrize("old", [b"the old model", None])
@pytest.mark.parametrize("writer, error", [(_fail_write, Boom), (_interrupt, KeyboardInterrupt)])
def test_a_failing_writer_propagates_and_leaves_the_old_file(tmp_path, recorder, old, writer, error):
    target = tmp_path / "model.npz"
    if old is not None:
        target.write_bytes(old)
    with pytest.raises(error):
        io.atomic_write(str(target), writer)
    _check_untouched(tmp_path, target, old)
    assert not [e for e in recorder if e[0] == "replace"]


@pytest.mark.parametrize("old", [b"the old model", None])
def test_a_failing_rename_propagates_and_leaves_the_old_file(tmp_path, monkeypatch, old):
    target = tmp_path / "model.npz"
    if old is not None:
        target.write_bytes(old)

    def replace(src, dst, *a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        io.atomic_write(str(target), lambda f: f.write(NEW))
    _check_untouched(tmp_path, target, old)


def test_a_failing_fsync_of_the_file_propagates_before_any_rename(tmp_path, monkeypatch):
    target = tmp_path / "model.npz"
    target.write_bytes(b"old")
    replaced = []
    monkeypatch.setattr(os, "replace", lambda *a, **kw: replaced.append(a))

    def fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output"):
        io.atomic_write(str(target), lambda f: f.write(NEW))
    assert replaced == []
    _check_untouched(tmp_path, target, b"old")


def test_the_new_file_gets_the_umask_permissions_not_mkstemps(tmp_path):
    mask = os.umask(0o022)
    try:
        io.atomic_write(str(tmp_path / "m.npz"), lambda f: f.write(NEW))
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o644


def test_the_temporary_file_is_made_beside_the_target(tmp_path, recorder, monkeypatch):
    made = []
    real = tempfile.mkstemp

    def mkstemp(*a, **kw):
        fd, name = real(*a, **kw)
        made.append(name)
        return fd, name
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    io.atomic_write(str(tmp_path / "m.npz"), lambda f: f.write(NEW))
    (name,) = made
    assert os.path.dirname(name) == str(tmp_path) and os.path.basename(name).startswith(".tmp-")
    assert name.endswith(".npz") and not os.path.exists(name)


def test_a_folder_that_cannot_be_opened_is_not_fsynced(tmp_path, recorder, monkeypatch):
    """A platform without directory handles: the write still happens, without the folder's fsync."""
    real = os.open

    def no_dirs(path, flags, *a):
        if os.path.isdir(path):
            raise OSError(21, "Is a directory")
        return real(path, flags, *a)
    monkeypatch.setattr(os, "open", no_dirs)
    io.atomic_write(str(tmp_path / "m.json"), lambda f: f.write("{}"), mode="w")
    assert (tmp_path / "m.json").read_text() == "{}" and [e[0] for e in recorder] == ["fsync", "replace"]


# -- the files' contents, and each way a file can be wrong, named exactly ------------------------------------

def raw(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def resave(src, dst, **changes):
    """The arrays of ``src`` written to ``dst`` with ``changes`` (None: the array dropped)."""
    arrays = {**raw(src), **changes}
    np.savez(dst, **{k: v for k, v in arrays.items() if v is not None})
    return dst


@pytest.fixture
def net():
    """A model whose every parameter is its own (a fresh model's biases are all zero)."""
    net = MLP([3, 4, 2], activation="tanh", output="sigmoid", dtype="float64", device="cpu", seed=0)
    net.params[...] = np.random.default_rng(1).standard_normal(net.params.shape[0])
    return net


def test_save_writes_the_config_the_layers_and_the_extras(tmp_path, net):
    io.save(tmp_path / "m.npz", net, {"a": 1}, extra=np.arange(3), other=[1.5])
    z = raw(tmp_path / "m.npz")
    assert set(z) == {"format", "config", "meta", "W1", "b1", "W2", "b2", "extra", "other"}
    assert str(z["format"]) == "gpumlp-mlp/1" and json.loads(str(z["meta"])) == {"a": 1}
    assert json.loads(str(z["config"])) == {"sizes": [3, 4, 2], "activation": "tanh", "output": "sigmoid",
                                            "bias": True, "dtype": "float64"}
    W, b = net.get_params()
    for k in (1, 2):
        assert np.array_equal(z[f"W{k}"], W[k - 1]) and np.array_equal(z[f"b{k}"], b[k - 1])
    assert z["extra"].tolist() == [0, 1, 2] and z["other"].tolist() == [1.5]
    io.save(tmp_path / "n.npz", MLP([2, 2], bias=False, device="cpu"))
    z = raw(tmp_path / "n.npz")
    assert set(z) == {"format", "config", "meta", "W1"} and json.loads(str(z["meta"])) == {}
    with pytest.raises(ValueError, match=exact("extra array names ['W1', 'config'] clash with the file's own")):
        io.save(tmp_path / "c.npz", net, None, W1=np.zeros(1), config=np.zeros(1), fine=np.zeros(1))
    assert not (tmp_path / "c.npz").exists()


def test_load_gives_back_the_model_its_meta_and_only_the_extras(tmp_path, net):
    io.save(tmp_path / "m.npz", net, {"a": [1, 2]}, extra=np.arange(3))
    strict = strict_backend()
    back, meta, arrays = io.load(tmp_path / "m.npz", device=strict)
    assert back.backend is strict and meta == {"a": [1, 2]} and set(arrays) == {"extra"}
    assert (list(back.sizes), back.activation, back.output, back.bias, back.dtype) == (
        [3, 4, 2], "tanh", "sigmoid", True, "float64")
    assert np.array_equal(strict.to_numpy(back.params), net.params)
    with pytest.raises(ValueError, match=exact(f"{tmp_path} is a folder, not a gpumlp model")):
        io.load(tmp_path, device="cpu")
    (tmp_path / "t.npz").write_text("text")
    with pytest.raises(ValueError, match=exact(f"cannot read {tmp_path / 't.npz'} as a gpumlp model: it is not a .npz "
                                               "file (not a zip archive; write it with numpy.savez)")):
        io.load(tmp_path / "t.npz", device="cpu")
    with pytest.raises(ValueError, match=exact(f"cannot read {tmp_path / 't.npz'} as a gpumlp checkpoint: it is not a "
                                               ".npz file (not a zip archive; write it with numpy.savez)")):
        io.load_checkpoint(tmp_path / "t.npz", device="cpu")
    plain = MLP([2, 3], bias=False, device="cpu", seed=2)
    io.save(tmp_path / "p.npz", plain)
    back, meta, arrays = io.load(str(tmp_path / "p.npz"))               # the default device: "auto"
    assert back.backend is get_backend("auto")
    assert back.bias is False and meta == {} and arrays == {}
    assert np.array_equal(back.backend.to_numpy(back.params), plain.params)


def test_checkpoints_keep_the_parameters_the_optimizer_the_state_and_the_extras(tmp_path, net):
    state = TrainState(5)
    state.epoch, state.step = 3, 12
    v = np.linspace(-1, 1, net.params.shape[0])
    snapshot = net.params + 1.0
    io.save_checkpoint(tmp_path / "c.npz", net, {"velocity": v, "t": 3, "name": "x", "on": True, "lr": 0.5,
                                                  "none": None}, state, {"m": 1}, params=snapshot, extra=np.ones(2))
    z = raw(tmp_path / "c.npz")
    assert set(z) == {"format", "config", "state", "meta", "params", "optimizer", "optimizer.velocity", "extra"}
    assert str(z["format"]) == "gpumlp-checkpoint/2" and json.loads(str(z["meta"])) == {"m": 1}
    assert json.loads(str(z["optimizer"])) == {"values": {"t": 3, "name": "x", "on": True, "lr": 0.5, "none": None},
                                               "arrays": ["velocity"]}
    assert json.loads(str(z["state"])) == json.loads(json.dumps(state.to_json()))
    assert np.array_equal(z["params"], snapshot) and np.array_equal(z["optimizer.velocity"], v)
    ck = io.load_checkpoint(tmp_path / "c.npz")                          # the default device: "auto"
    assert isinstance(ck, io.Checkpoint) and ck.net.backend is get_backend("auto")
    assert np.array_equal(ck.net.backend.to_numpy(ck.net.params), snapshot)
    assert ck.optimizer_state.keys() == {"velocity", "t", "name", "on", "lr", "none"}
    assert np.array_equal(ck.optimizer_state["velocity"], v) and ck.optimizer_state["t"] == 3
    assert ck.state.to_json() == state.to_json() and ck.meta == {"m": 1} and set(ck.arrays) == {"extra"}
    io.save_checkpoint(tmp_path / "d.npz", net, {"velocity": None}, state)
    z = raw(tmp_path / "d.npz")
    assert np.array_equal(z["params"], net.params) and json.loads(str(z["meta"])) == {}
    assert json.loads(str(z["optimizer"])) == {"values": {"velocity": None}, "arrays": []}
    with pytest.raises(ValueError, match=exact(f"params must have shape ({net.params.shape[0]},); got (5,)")):
        io.save_checkpoint(tmp_path / "e.npz", net, {}, state, params=np.zeros(5))
    with pytest.raises(ValueError, match=exact("extra array names ['format', 'optimizer'] clash with the file's own")):
        io.save_checkpoint(tmp_path / "e.npz", net, {}, state, optimizer=np.zeros(1), format=np.zeros(1))
    assert not (tmp_path / "e.npz").exists()


def test_a_float64_snapshot_is_stored_in_the_models_precision_on_any_device(tmp_path):
    net = MLP([2, 2], device="cpu", seed=0)                       # float32
    state = TrainState(0)
    io.save_checkpoint(tmp_path / "c.npz", net, {}, state, params=np.full(net.params.shape[0], 0.1))
    strict = strict_backend()
    ck = io.load_checkpoint(tmp_path / "c.npz", device=strict)
    assert ck.net.backend is strict and strict.to_numpy(ck.net.params).tolist() == [np.float32(0.1)] * 6


def test_read_npz_names_each_way_a_file_is_not_one(tmp_path):
    (tmp_path / "text").write_text("hello")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "short").write_bytes(b"PK\x03")
    np.savez(tmp_path / "objects.npz", a=np.array([object()]))
    np.savez(tmp_path / "nothing.npz")                             # an empty zip: PK\x05\x06
    assert (tmp_path / "nothing.npz").read_bytes()[:4] == b"PK\x05\x06"
    assert io.read_npz(tmp_path / "nothing.npz", "thing") == {}
    not_zip = "cannot read {p} as a thing: it is not a .npz file (not a zip archive; write it with numpy.savez)"
    for name, message in [
        ("", "{p} is a folder, not a thing"),
        ("missing", "cannot read {p}: there is no such file"),
        ("text/inside", "cannot read {p}: Not a directory"),
        ("text", not_zip),
        ("short", not_zip),
        ("empty", not_zip + " (it is empty)"),
        ("objects.npz", "{p} holds object arrays, which gpumlp does not load (no pickle); save numbers as float "
                        "arrays and labels as integer or string arrays"),
    ]:
        p = os.path.join(str(tmp_path), name) if name else str(tmp_path)
        with pytest.raises(ValueError, match=exact(message.format(p=p))):
            io.read_npz(p, "thing")
    np.savez(tmp_path / "a.npz", x=np.arange(3))
    p = str(tmp_path / "a.npz")
    assert io.read_npz(tmp_path / "a.npz", "thing")["x"].tolist() == [0, 1, 2]
    assert io.read_npz(p, "thing", lambda z: sorted(z.files)) == ["x"]
    for error, why in ((ValueError(f"{p} says no"), None), (ValueError("line one\nline two"), "ValueError: line one"),
                       (ValueError("x" * 200), "ValueError: " + "x" * 160), (ValueError(), "ValueError"),
                       (KeyError("k"), "KeyError: 'k'"), (MemoryError(), "MemoryError")):
        def take(z, error=error):
            raise error
        message = str(error) if why is None else f"{p} is damaged, it cannot be read as a thing ({why})"
        with pytest.raises(ValueError, match=exact(message)):
            io.read_npz(p, "thing", take)
    good = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="^" + re.escape(f"{tmp_path / 'cut.npz'} is damaged, it cannot be read as a "
                                                          "thing (BadZipFile: ")):
        io.read_npz(tmp_path / "cut.npz", "thing")


def test_model_files_name_what_is_wrong_with_them(tmp_path, net):
    good = tmp_path / "m.npz"
    io.save(good, net, {"a": 1})
    n = net.params.shape[0]
    cases = [
        ({"format": None}, "{p} is not a gpumlp model (it has no 'format' entry)"),
        ({"format": np.array("gpumlp-mlp/9")}, "{p} is not a gpumlp model of this version: its format is "
                                               "'gpumlp-mlp/9', this gpumlp reads 'gpumlp-mlp/1'"),
        ({"format": np.array("gpumlp-checkpoint/1")}, "{p} is not a gpumlp model of this version: its format is "
                                                      "'gpumlp-checkpoint/1', this gpumlp reads 'gpumlp-mlp/1'"),
        ({"config": np.array("{not json")}, "{p} is damaged: its 'config' entry cannot be read (JSONDecodeError: "
                                            "Expecting property name enclosed in double quotes: line 1 column 2 "
                                            "(char 1))"),
        ({"meta": None}, "{p} is damaged: its 'meta' entry cannot be read (KeyError: 'meta')"),
        ({"meta": np.array("[1]")}, "{p} is damaged: its 'meta' entry is not a record"),
        ({"config": np.array('{"sizes": [3, 4, 2]}')}, "{p} is damaged: its model config is invalid (KeyError: "
                                                       "'activation')"),
        ({"config": np.array('{"sizes": [3, 2], "activation": "relu", "output": "cube", "bias": true, '
                             '"dtype": "float32"}')},
         "{p} is damaged: its model config is invalid (ValueError: unknown activation 'cube'; expected one of "
         "leaky_relu, linear, relu, sigmoid, tanh)"),
        ({"W2": None}, "{p} is damaged: it lacks the arrays ['W2']"),
        ({"W1": None, "b1": None}, "{p} is damaged: it lacks the arrays ['W1', 'b1']"),
    ]
    for changes, message in cases:
        p = resave(good, tmp_path / "bad.npz", **changes)
        with pytest.raises(ValueError, match=exact(message.format(p=p))):
            io.load(p, device="cpu")
    with pytest.raises(ValueError) as why:
        MLP([3, 4, 2], device="cpu").set_params([np.zeros((4, 2)), np.zeros((2, 4))], [np.zeros(4), np.zeros(2)])
    p = resave(good, tmp_path / "bad.npz", W1=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=exact(f"{p} is damaged: {why.value}")):
        io.load(p, device="cpu")
    assert n == 26


def test_checkpoint_files_name_what_is_wrong_with_them(tmp_path, net):
    good = tmp_path / "c.npz"
    v = np.zeros(net.params.shape[0])
    io.save_checkpoint(good, net, {"velocity": v}, TrainState(0), {"a": 1})
    n = net.params.shape[0]
    reads = "this gpumlp reads 'gpumlp-checkpoint/2', 'gpumlp-checkpoint/1'"
    cases = [
        ({"format": np.array("gpumlp-mlp/1")}, "{p} is not a gpumlp checkpoint of this version: its format is "
                                               "'gpumlp-mlp/1', " + reads),
        ({"state": np.array("{}")}, "{p} is damaged: the training state is damaged (KeyError: 'epoch')"),
        ({"meta": np.array("{")}, "{p} is damaged: its 'meta' entry cannot be read (JSONDecodeError: Expecting "
                                  "property name enclosed in double quotes: line 1 column 2 (char 1))"),
        ({"config": np.array("{}")}, "{p} is damaged: its model config is invalid (KeyError: 'sizes')"),
        ({"config": np.array("{")}, "{p} is damaged: its 'config' entry cannot be read (JSONDecodeError: Expecting "
                                    "property name enclosed in double quotes: line 1 column 2 (char 1))"),
        ({"optimizer": None}, "{p} is damaged: its 'optimizer' entry cannot be read (KeyError: 'optimizer')"),
        ({"optimizer": np.array('{"values": {}}')}, "{p} is damaged: its 'optimizer' entry is not a record of arrays "
                                                    "and values"),
        ({"optimizer": np.array('{"arrays": []}')}, "{p} is damaged: its 'optimizer' entry is not a record of arrays "
                                                    "and values"),
        ({"optimizer": np.array('{"arrays": {}, "values": {}}')}, "{p} is damaged: its 'optimizer' entry is not a "
                                                                  "record of arrays and values"),
        ({"optimizer": np.array('{"arrays": [], "values": []}')}, "{p} is damaged: its 'optimizer' entry is not a "
                                                                  "record of arrays and values"),
        ({"optimizer.velocity": None}, "{p} is damaged: it lacks the optimizer's arrays ['velocity']"),
        ({"optimizer": np.array('{"arrays": ["velocity", "m", "a"], "values": {}}')},
         "{p} is damaged: it lacks the optimizer's arrays ['a', 'm']"),
        ({"params": None}, "{p} is damaged: it lacks the parameters"),
        ({"params": np.zeros(n - 1)}, "{p} is damaged: its params must be 26 finite floats for the model [3, 4, 2]; "
                                      "got float64 of shape (25,)"),
        ({"params": np.zeros((n, 1))}, "{p} is damaged: its params must be 26 finite floats for the model [3, 4, 2]; "
                                       "got float64 of shape (26, 1)"),
        ({"params": np.arange(n)}, "{p} is damaged: its params must be 26 finite floats for the model [3, 4, 2]; "
                                   "got int64 of shape (26,)"),
        ({"params": np.full(n, np.nan)}, "{p} is damaged: its params must be 26 finite floats for the model "
                                         "[3, 4, 2]; got float64 of shape (26,)"),
        ({"optimizer.velocity": np.full(n, np.inf)}, "{p} is damaged: its velocity must be 26 finite floats for the "
                                                     "model [3, 4, 2]; got float64 of shape (26,)"),
        ({"optimizer.velocity": np.zeros(3, np.float32)}, "{p} is damaged: its velocity must be 26 finite floats for "
                                                          "the model [3, 4, 2]; got float32 of shape (3,)"),
    ]
    for changes, message in cases:
        p = resave(good, tmp_path / "bad.npz", **changes)
        with pytest.raises(ValueError, match=exact(message.format(p=p))):
            io.load_checkpoint(p, device="cpu")
    p = resave(good, tmp_path / "f32.npz", params=raw(good)["params"].astype(np.float32))
    assert np.array_equal(io.load_checkpoint(p, device="cpu").net.params, net.params.astype(np.float32))


def test_a_format_1_checkpoint_maps_its_velocity(tmp_path, net):
    good = tmp_path / "c.npz"
    io.save_checkpoint(good, net, {"velocity": None}, TrainState(0), {"a": 1}, extra=np.ones(1))
    v = np.linspace(0, 1, net.params.shape[0])
    old = resave(good, tmp_path / "old.npz", format=np.array("gpumlp-checkpoint/1"), optimizer=None, velocity=v)
    ck = io.load_checkpoint(old, device="cpu")
    assert list(ck.optimizer_state) == ["velocity"] and np.array_equal(ck.optimizer_state["velocity"], v)
    assert set(ck.arrays) == {"extra"} and ck.meta == {"a": 1} and np.array_equal(ck.net.params, net.params)
    bare = resave(good, tmp_path / "bare.npz", format=np.array("gpumlp-checkpoint/1"), optimizer=None)
    assert io.load_checkpoint(bare, device="cpu").optimizer_state == {"velocity": None}
    bad = resave(old, tmp_path / "bad.npz", velocity=v[:-1])
    with pytest.raises(ValueError, match=exact(f"{bad} is damaged: its velocity must be 26 finite floats for the "
                                               "model [3, 4, 2]; got float64 of shape (25,)")):
        io.load_checkpoint(bad, device="cpu")


def test_a_damaged_state_entry_names_the_file_once(tmp_path, net):
    """The 'state' entry's own errors already name the file; wrapped again, they named it twice
    ("c.npz is damaged: c.npz is damaged: its 'state' entry ...")."""
    good = tmp_path / "c.npz"
    io.save_checkpoint(good, net, {"velocity": None}, TrainState(0))
    for state, what in (("[]", "its 'state' entry is not a record"),
                        ("{not json", "its 'state' entry cannot be read (JSONDecodeError: Expecting property name "
                                      "enclosed in double quotes: line 1 column 2 (char 1))"),
                        ('{"epoch": 1}', "the training state is damaged (KeyError: 'step')")):
        p = resave(good, tmp_path / "bad.npz", state=np.array(state))
        with pytest.raises(ValueError, match=exact(f"{p} is damaged: {what}")):
            io.load_checkpoint(p, device="cpu")
