"""gpumlp.io.atomic_write's durability: the temporary file is flushed and fsynced before
the rename, the folder is fsynced after it, and a write that fails anywhere propagates
its error, leaves the old file as it was and no temporary file behind."""
import os
import stat

import pytest

from gpumlp import io

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
