import errno
import json
import os

import numpy as np
import pytest

from detect.io import atomic_path, atomic_write, write_json


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with atomic_write(path) as f:
        f.write("new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]  # no temporary file left behind


def test_atomic_write_bytes_and_new_folder(tmp_path):
    path = tmp_path / "sub" / "b.bin"
    with atomic_write(path, "wb") as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"


def test_atomic_path_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    path = tmp_path / "p.npz"
    with atomic_path(path) as tmp:
        assert tmp.endswith(".npz") and os.path.dirname(tmp) == str(tmp_path)
        np.savez(tmp, x=np.arange(3))
    assert np.load(path)["x"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        with atomic_path(path) as tmp:
            np.savez(tmp, x=np.arange(5))
            raise ValueError
    assert np.load(path)["x"].tolist() == [0, 1, 2]
    assert sorted(os.listdir(tmp_path)) == ["p.npz"]


def test_write_json_numpy_values(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"a": np.float32(0.5), "b": np.arange(2)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1]}


def test_atomic_write_onto_a_folder_names_the_users_path(tmp_path):
    target = tmp_path / "out.json"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as raised:
        with atomic_write(target) as f:
            f.write("x")
    assert raised.value.filename == str(target)
    assert os.listdir(tmp_path) == ["out.json"]  # no temporary file left beside it


def test_atomic_path_onto_a_folder_names_the_users_path(tmp_path):
    target = tmp_path / "model.keras"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as raised:
        with atomic_path(target):
            pass
    assert raised.value.filename == str(target)


def test_atomic_write_full_disk_names_the_users_path(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as raised:
        write_json(target, {"a": 1})
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert not target.exists() and os.listdir(tmp_path) == []
