import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from detect.data.images import read_image
from detect.data.records import Dataset, Record
from detect.errors import DetectError
from detect.proposals import cache
from detect.proposals.cache import compute_proposals, load_proposals
from detect.proposals.selective_search import selective_search

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _make_dataset(folder, count, size=48):
    """count PNGs of size x size px, each with one coloured square at a different place."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        image = np.full((size, size, 3), 100, np.uint8)
        x = 4 + (i * 3) % (size - 24)
        image[8:28, x:x + 16] = (40 * (i % 6), 200, 255 - 10 * i % 255)
        path = folder / f"img{i}.png"
        Image.fromarray(image).save(path)
        records.append(Record(image_id=i + 1, file_name=path.name, path=str(path),
                              width=size, height=size, boxes=[[x, 8, x + 16, 28]], labels=[1]))
    return Dataset(classes=["square"], records=records)


def _expected(record, **kwargs):
    return selective_search(read_image(record.path), **kwargs)


class _CountingReads:
    """Stands in for cache.read_image: records which files were read, optionally fails."""

    def __init__(self, fail_after=None):
        self.paths = []
        self.fail_after = fail_after

    def __call__(self, path):
        if self.fail_after is not None and len(self.paths) >= self.fail_after:
            raise RuntimeError("interrupted")
        self.paths.append(path)
        return read_image(path)


def test_round_trip(tmp_path):
    dataset = _make_dataset(tmp_path / "images", 3)
    out = tmp_path / "proposals.npz"
    assert compute_proposals(dataset, str(out), workers=1, progress=False) == str(out)
    assert not os.path.exists(str(out) + ".parts")
    with load_proposals(out) as proposals:
        assert len(proposals) == 3 and proposals.image_ids == [1, 2, 3]
        assert 2 in proposals and 4 not in proposals and "x" not in proposals
        assert proposals.settings == {"mode": "fast", "max_side": 500,
                                      "max_proposals": 2000, "min_size": 4.0}
        assert proposals.image_info(2) == ("img1.png", 48, 48)
        for record in dataset.records:
            boxes = proposals.get(record.image_id)
            assert boxes.dtype == np.float32 and boxes.shape[1] == 4 and len(boxes) > 0
            np.testing.assert_array_equal(boxes, _expected(record))
    # A plain np.load reads the same file without pickles.
    with np.load(out, allow_pickle=False) as raw:
        assert sorted(raw.files) == ["1", "2", "3", "__metadata__"]


def test_settings_reach_the_search(tmp_path):
    dataset = _make_dataset(tmp_path / "images", 1)
    out = tmp_path / "p.npz"
    compute_proposals(dataset, out, mode="quality", max_side=32, max_proposals=5,
                      workers=1, progress=False)
    with load_proposals(out) as proposals:
        boxes = proposals.get(1)
        assert proposals.settings["mode"] == "quality" and len(boxes) <= 5
        np.testing.assert_array_equal(
            boxes, _expected(dataset.records[0], mode="quality", max_side=32, max_proposals=5))


def test_spawned_workers_give_the_same_boxes(tmp_path):
    dataset = _make_dataset(tmp_path / "images", 4)
    out = tmp_path / "p.npz"
    compute_proposals(dataset, out, workers=2, progress=False)
    with load_proposals(out) as proposals:
        assert proposals.image_ids == [1, 2, 3, 4]
        for record in dataset.records:
            np.testing.assert_array_equal(proposals.get(record.image_id), _expected(record))


_UNGUARDED_SCRIPT = textwrap.dedent("""
    import sys
    from detect.data.records import Dataset, Record
    from detect.proposals.cache import compute_proposals

    # Runs once per import of this script: a spawned worker that re-imported the main
    # script (and whatever heavy modules it imports) would add a line.
    with open(sys.argv[2], "a") as marker:
        marker.write("imported\\n")
    records = [Record(image_id=i + 1, file_name=f"img{i}.png", path=f"{sys.argv[1]}/img{i}.png",
                      width=48, height=48) for i in range(3)]
    compute_proposals(Dataset(classes=["square"], records=records), sys.argv[3], workers=2,
                      progress=False)
""")


def test_workers_do_not_import_the_main_script(tmp_path):
    _make_dataset(tmp_path / "images", 3)
    script, marker, out = tmp_path / "run.py", tmp_path / "marker.txt", tmp_path / "p.npz"
    script.write_text(_UNGUARDED_SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path / "images"), str(marker), str(out)],
                   cwd=REPO, check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": REPO})
    assert marker.read_text() == "imported\n"
    with load_proposals(out) as proposals:
        assert proposals.image_ids == [1, 2, 3]


def test_worker_modules_do_not_import_tensorflow():
    code = ("import sys, detect.proposals.cache, detect.proposals.selective_search, "
            "detect.data.images; assert 'tensorflow' not in sys.modules, 'tensorflow loaded'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_empty_dataset(tmp_path):
    out = tmp_path / "p.npz"
    compute_proposals(Dataset(classes=["a"], records=[]), out, workers=1, progress=False)
    with load_proposals(out) as proposals:
        assert len(proposals) == 0 and proposals.image_ids == []


def test_unknown_image_id_names_id_and_file(tmp_path):
    out = tmp_path / "p.npz"
    compute_proposals(_make_dataset(tmp_path / "images", 1), out, workers=1, progress=False)
    with load_proposals(out) as proposals:
        with pytest.raises(DetectError, match=r"image id 7 in .*p\.npz"):
            proposals.get(7)


def test_load_errors(tmp_path):
    with pytest.raises(DetectError, match="does not exist"):
        load_proposals(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DetectError, match="not a proposal file"):
        load_proposals(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DetectError, match="junk.npz"):
        load_proposals(tmp_path / "junk.npz")


def test_interrupted_run_resumes_without_recomputing(tmp_path, monkeypatch):
    dataset = _make_dataset(tmp_path / "images", 5)
    out = tmp_path / "p.npz"
    monkeypatch.setattr(cache, "read_image", _CountingReads(fail_after=2))
    with pytest.raises(RuntimeError, match="interrupted"):
        compute_proposals(dataset, out, workers=1, progress=False)
    parts = sorted(os.listdir(str(out) + ".parts"))
    assert parts == ["1.npz", "2.npz", "settings.json"] and not out.exists()

    with pytest.raises(DetectError, match=r"computed with mode=fast.*not mode=quality"):
        compute_proposals(dataset, out, mode="quality", workers=1, progress=False)

    reads = _CountingReads()
    monkeypatch.setattr(cache, "read_image", reads)
    compute_proposals(dataset, out, workers=1, progress=False)
    assert [os.path.basename(p) for p in reads.paths] == ["img2.png", "img3.png", "img4.png"]
    with load_proposals(out) as proposals:
        assert proposals.image_ids == [1, 2, 3, 4, 5]
        for record in dataset.records:
            np.testing.assert_array_equal(proposals.get(record.image_id), _expected(record))


def test_bad_settings_fail_before_anything_is_written(tmp_path):
    dataset = _make_dataset(tmp_path / "images", 1)
    with pytest.raises(DetectError, match="max_side must be >= 1"):
        compute_proposals(dataset, tmp_path / "p.npz", max_side=0, workers=1, progress=False)
    with pytest.raises(DetectError, match="mode 'slow'"):
        compute_proposals(dataset, tmp_path / "p.npz", mode="slow", workers=1, progress=False)
    assert os.listdir(tmp_path) == ["images"]


def test_a_run_that_finished_nothing_does_not_fix_the_settings(tmp_path, monkeypatch):
    dataset = _make_dataset(tmp_path / "images", 2)
    out = tmp_path / "p.npz"
    monkeypatch.setattr(cache, "read_image", _CountingReads(fail_after=0))
    with pytest.raises(RuntimeError, match="interrupted"):
        compute_proposals(dataset, out, workers=1, progress=False)
    monkeypatch.setattr(cache, "read_image", read_image)
    compute_proposals(dataset, out, mode="quality", workers=1, progress=False)
    with load_proposals(out) as proposals:
        assert proposals.settings["mode"] == "quality" and len(proposals) == 2


def test_rerun_on_a_finished_file_computes_nothing(tmp_path, monkeypatch):
    dataset = _make_dataset(tmp_path / "images", 3)
    out = tmp_path / "p.npz"
    compute_proposals(dataset, out, workers=1, progress=False)
    before = out.stat().st_mtime_ns
    reads = _CountingReads()
    monkeypatch.setattr(cache, "read_image", reads)
    compute_proposals(dataset, out, workers=1, progress=False)
    assert reads.paths == [] and out.stat().st_mtime_ns == before


def test_a_larger_dataset_extends_the_file(tmp_path, monkeypatch):
    dataset = _make_dataset(tmp_path / "images", 4)
    out = tmp_path / "p.npz"
    compute_proposals(Dataset(classes=["square"], records=dataset.records[:2]), out,
                      workers=1, progress=False)
    reads = _CountingReads()
    monkeypatch.setattr(cache, "read_image", reads)
    compute_proposals(dataset, out, workers=1, progress=False)
    assert [os.path.basename(p) for p in reads.paths] == ["img2.png", "img3.png"]
    with load_proposals(out) as proposals:
        assert sorted(proposals.image_ids) == [1, 2, 3, 4]
        np.testing.assert_array_equal(proposals.get(1), _expected(dataset.records[0]))


def test_existing_file_with_other_settings_is_refused(tmp_path):
    dataset = _make_dataset(tmp_path / "images", 1)
    out = tmp_path / "p.npz"
    compute_proposals(dataset, out, workers=1, progress=False)
    with pytest.raises(DetectError, match=r"p\.npz was computed with .*max_side=500.*"
                                          r"not .*max_side=200"):
        compute_proposals(dataset, out, max_side=200, workers=1, progress=False)
    # The refusal leaves nothing behind that would block a rerun with the old settings.
    assert not os.path.exists(str(out) + ".parts")


def test_same_id_for_another_image_is_refused(tmp_path):
    dataset = _make_dataset(tmp_path / "images", 2)
    out = tmp_path / "p.npz"
    compute_proposals(dataset, out, workers=1, progress=False)
    other = _make_dataset(tmp_path / "other", 1, size=40)
    with pytest.raises(DetectError, match=r"image id 1: .*img0\.png \(48x48\).*\(40x40\)"):
        compute_proposals(other, out, workers=1, progress=False)


def test_duplicate_ids_and_size_mismatch(tmp_path):
    dataset = _make_dataset(tmp_path / "images", 2)
    dataset.records[1].image_id = 1
    with pytest.raises(DetectError, match="image id 1 is used by both"):
        compute_proposals(dataset, tmp_path / "a.npz", workers=1, progress=False)
    dataset = _make_dataset(tmp_path / "images", 1)
    dataset.records[0].width = 50
    with pytest.raises(DetectError, match=r"img0\.png is 48x48 pixels .* says 50x48"):
        compute_proposals(dataset, tmp_path / "b.npz", workers=1, progress=False)


_SLOW_RUN = textwrap.dedent("""
    import sys, time
    from detect.proposals import cache
    from detect.data.records import Dataset, Record

    real = cache.selective_search

    def slow(*args, **kwargs):
        time.sleep(0.15)
        return real(*args, **kwargs)

    cache.selective_search = slow
    records = [Record(image_id=i + 1, file_name=f"img{i}.png", path=f"{sys.argv[1]}/img{i}.png",
                      width=48, height=48) for i in range(int(sys.argv[3]))]
    cache.compute_proposals(Dataset(classes=["square"], records=records), sys.argv[2],
                            workers=1, progress=False)
""")


def _complete_parts(parts_dir):
    if not os.path.isdir(parts_dir):
        return set()
    return {int(name[:-4]) for name in os.listdir(parts_dir)
            if name.endswith(".npz") and not name.startswith(".")}


def test_sigkill_mid_run_then_rerun_does_only_the_rest(tmp_path, monkeypatch):
    count = 20
    dataset = _make_dataset(tmp_path / "images", count)
    out = tmp_path / "p.npz"
    parts_dir = str(out) + ".parts"
    process = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(tmp_path / "images"),
                                str(out), str(count)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if len(_complete_parts(parts_dir)) >= 3:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL and not out.exists()
    # Parts written in full count; a temp file the kill cut short does not.
    done = _complete_parts(parts_dir)
    assert 3 <= len(done) < count

    reads = _CountingReads()
    monkeypatch.setattr(cache, "read_image", reads)
    compute_proposals(dataset, out, workers=1, progress=False)
    expected = [r.path for r in dataset.records if r.image_id not in done]
    assert reads.paths == expected
    with load_proposals(out) as proposals:
        assert sorted(proposals.image_ids) == list(range(1, count + 1))
        for record in dataset.records:
            np.testing.assert_array_equal(proposals.get(record.image_id), _expected(record))
    assert not os.path.exists(parts_dir)


def test_write_proposals_streams_a_readable_file(tmp_path):
    dataset = _make_dataset(tmp_path / "images", 3)
    boxes = {1: np.array([[1, 2, 10, 12]], np.float32), 2: np.zeros((0, 4), np.float32),
             3: np.array([[0, 0, 5, 5], [2, 2, 8, 9]], np.float32)}
    path = cache.write_proposals(tmp_path / "rpn.npz", dataset, boxes.items(), {"source": "rpn"})
    with load_proposals(path) as f:
        # max_proposals defaults to the largest count written (image 3: 2 boxes).
        assert f.settings == {"max_proposals": 2, "source": "rpn"}
        assert f.image_ids == [1, 2, 3]
        for image_id, expected in boxes.items():
            np.testing.assert_array_equal(f.get(image_id), expected)
        assert f.image_info(3) == ("img2.png", 48, 48)


def test_write_proposals_failing_midway_leaves_no_file(tmp_path):
    dataset = _make_dataset(tmp_path / "images", 2)

    def items():
        yield 1, np.zeros((1, 4), np.float32)
        raise RuntimeError("the RPN crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        cache.write_proposals(tmp_path / "rpn.npz", dataset, items(), {"source": "rpn"})
    assert os.listdir(tmp_path) == ["images"]
