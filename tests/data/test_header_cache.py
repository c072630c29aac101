"""Image header cache: a second validation of unchanged files reads no header; a changed
file (other size or modification time) is read again."""

import json
import os

import pytest
from PIL import Image

import detect.data.header_cache as header_cache
from detect.data.header_cache import HeaderCache, user_cache_dir
from detect.data.records import Dataset, Record
from detect.data.validate import validate
from detect.errors import DetectError


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("DETECT_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def reads(monkeypatch):
    """Counts the headers really read from image files."""
    calls = []
    real = header_cache.image_size

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(header_cache, "image_size", counting)
    return calls


def _dataset(folder, sizes, source):
    records = []
    for i, (w, h) in enumerate(sizes, start=1):
        path = folder / f"{i}.png"
        if not path.exists():
            Image.new("RGB", (w, h)).save(path)
        records.append(Record(i, path.name, str(path), w, h, boxes=[[0, 0, 2, 2]], labels=[1]))
    return Dataset(["a"], records, source=str(source))


def test_second_validation_reads_no_header(tmp_path, cache_dir, reads):
    dataset = _dataset(tmp_path, [(20, 10), (8, 6), (5, 7)], tmp_path / "train.json")
    validate(dataset)
    assert len(reads) == 3
    files = list((cache_dir / "image-headers").iterdir())
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    # One entry a file: [size in bytes, mtime_ns, width, height].
    entry = data["images"][str(tmp_path / "1.png")]
    assert entry[0] == os.path.getsize(tmp_path / "1.png") and entry[2:] == [20, 10]
    validate(dataset)
    assert len(reads) == 3  # every header came from the cache


def test_changed_file_is_read_again(tmp_path, cache_dir, reads):
    source = tmp_path / "train.json"
    validate(_dataset(tmp_path, [(20, 10), (8, 6)], source))
    assert len(reads) == 2
    # Same byte size, other modification time: read again (and still 20x10).
    info = os.stat(tmp_path / "1.png")
    os.utime(tmp_path / "1.png", ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))
    validate(_dataset(tmp_path, [(20, 10), (8, 6)], source))
    assert reads[2:] == [str(tmp_path / "1.png")]
    # Replaced by a 30x10 image: read again, and the stale 20x10 annotation is caught.
    Image.new("RGB", (30, 10)).save(tmp_path / "1.png")
    with pytest.raises(DetectError, match=r"1.png: annotations say 20x10 .* image is 30x10"):
        validate(_dataset(tmp_path, [(20, 10), (8, 6)], source))
    assert reads[3:] == [str(tmp_path / "1.png")]


def test_deleted_file_is_not_found_despite_the_cache(tmp_path, cache_dir):
    dataset = _dataset(tmp_path, [(20, 10)], tmp_path / "train.json")
    validate(dataset)
    os.remove(tmp_path / "1.png")
    with pytest.raises(DetectError, match=r"image file not found: .*1.png"):
        validate(dataset)


def test_corrupt_or_unwritable_cache_is_ignored(tmp_path, cache_dir, reads, monkeypatch):
    dataset = _dataset(tmp_path, [(20, 10)], tmp_path / "train.json")
    cache = HeaderCache(dataset.source)
    os.makedirs(os.path.dirname(cache.path))
    with open(cache.path, "w") as f:
        f.write("{not json")
    validate(dataset)
    assert len(reads) == 1
    # A cache folder that is a file: nothing can be written, validation still works.
    cache_dir_file = tmp_path / "blocked"
    cache_dir_file.write_text("")
    monkeypatch.setenv("DETECT_CACHE_DIR", str(cache_dir_file))
    validate(dataset)
    assert len(reads) == 2


def test_user_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.delenv("DETECT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir("x") == str(tmp_path / "xdg" / "detect" / "x")
    monkeypatch.setenv("DETECT_CACHE_DIR", str(tmp_path / "own"))
    assert user_cache_dir("x", "y") == str(tmp_path / "own" / "x" / "y")
