import collections
import logging
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from detect.errors import DetectError
from detect.inference import sources
from detect.inference.sources import Frame, classify, count_frames, has_display, iter_frames


def _write_video(path, frames, width=32, height=32, fps=10.0):
    """MJPG video whose frame i is filled with grey level i % 256 (BGR = RGB for grey)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((height, width, 3), i % 256, np.uint8))
    writer.release()
    return path


@pytest.fixture
def mixed_folder(tmp_path):
    """a.png RGB, b.JPG, c_gray.png (L), d_rgba.png (RGBA) plus files that are not images."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    Image.fromarray(rgb).save(folder / "a.png")
    Image.new("RGB", (8, 5), (200, 10, 10)).save(folder / "b.JPG", quality=95)
    Image.fromarray(np.array([[0, 90, 255]], np.uint8), mode="L").save(folder / "c_gray.png")
    # Alpha 0 over white -> 255; alpha 255 keeps the colour.
    Image.fromarray(np.array([[[10, 20, 30, 0], [10, 20, 30, 255]]], np.uint8), mode="RGBA").save(
        folder / "d_rgba.png")
    (folder / "notes.md").write_text("not an image")
    (folder / "._a.png").write_bytes(b"macOS resource fork")
    Image.new("RGB", (3, 3)).save(folder / "sub" / "nested.png")  # not recursed into
    return folder


def test_classify_each_kind(tmp_path, mixed_folder):
    video = _write_video(tmp_path / "clip.MP4", frames=2)
    listing = tmp_path / "list.txt"
    listing.write_text("images/a.png\n")
    assert classify(str(mixed_folder / "b.JPG")) == "image"
    assert classify(str(mixed_folder)) == "folder"
    assert classify(str(tmp_path / "*.jpg")) == "glob"  # no match needed to classify
    assert classify(str(tmp_path / "**" / "*.png")) == "glob"
    assert classify(str(listing)) == "list"
    assert classify(str(video)) == "video"
    assert classify("0") == "webcam" and classify("12") == "webcam"


def test_classify_errors_name_the_source(tmp_path):
    with pytest.raises(DetectError, match="source not found: .*nothing.jpg"):
        classify(str(tmp_path / "nothing.jpg"))
    data = tmp_path / "table.csv"
    data.write_text("x")
    with pytest.raises(DetectError, match=r"unsupported source file type \.csv.*table.csv"):
        classify(str(data))


def test_folder_of_mixed_images(mixed_folder):
    frames = list(iter_frames([str(mixed_folder)]))
    names = [os.path.basename(f.name) for f in frames]
    assert names == ["a.png", "b.JPG", "c_gray.png", "d_rgba.png"]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert all(isinstance(f, Frame) for f in frames)
    assert {(f.kind, f.timestamp, f.source) for f in frames} == {("image", None, str(mixed_folder))}
    for frame in frames:
        assert frame.image.ndim == 3 and frame.image.shape[2] == 3 and frame.image.dtype == np.uint8
    np.testing.assert_array_equal(frames[0].image, np.arange(72, dtype=np.uint8).reshape(4, 6, 3))
    assert frames[1].image.shape == (5, 8, 3)
    np.testing.assert_allclose(frames[1].image.reshape(-1, 3).mean(axis=0), (200, 10, 10), atol=8)
    np.testing.assert_array_equal(frames[2].image[0], [[0] * 3, [90] * 3, [255] * 3])
    np.testing.assert_array_equal(frames[3].image[0], [[255, 255, 255], [10, 20, 30]])


def test_glob_plain_and_recursive(mixed_folder):
    pattern = str(mixed_folder / "*.png")
    names = [os.path.basename(f.name) for f in iter_frames([pattern])]
    assert names == ["a.png", "c_gray.png", "d_rgba.png"]  # glob's * skips hidden files
    recursive = str(mixed_folder / "**" / "*.png")
    names = [os.path.basename(f.name) for f in iter_frames([recursive])]
    assert names == ["a.png", "c_gray.png", "d_rgba.png", "nested.png"]
    with pytest.raises(DetectError, match=r"no image or video files match .*\*\.gif"):
        iter_frames([str(mixed_folder / "*.gif")])


def test_text_list_with_comments_relative_and_absolute_paths(tmp_path, mixed_folder):
    listing = tmp_path / "lists" / "val.txt"
    listing.parent.mkdir()
    listing.write_text(
        "# validation images\n"
        "../images/c_gray.png\n"
        "\n"
        f"   {mixed_folder / 'a.png'}   \n"
        "../images/missing.png\n"
    )
    skipped = collections.Counter()
    frames = list(iter_frames([str(listing)], skipped))
    assert [os.path.basename(f.name) for f in frames] == ["c_gray.png", "a.png"]
    assert [f.index for f in frames] == [0, 1]  # missing.png would have been index 2
    assert skipped == {"image": 1}
    assert os.path.samefile(frames[0].name, mixed_folder / "c_gray.png")


def test_empty_sources_fail_before_any_frame(tmp_path, mixed_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DetectError, match="no images .* in folder .*empty"):
        iter_frames([str(mixed_folder), str(empty)])
    listing = tmp_path / "blank.txt"
    listing.write_text("# nothing here\n\n")
    with pytest.raises(DetectError, match="no paths listed in .*blank.txt"):
        iter_frames([str(listing)])
    # The check happens at the call, not on the first next().
    with pytest.raises(DetectError, match="source not found: .*gone.png"):
        iter_frames([str(mixed_folder), str(tmp_path / "gone.png")])


def test_corrupt_image_is_skipped_counted_and_named(mixed_folder, caplog):
    (mixed_folder / "b2_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    skipped = collections.Counter()
    with caplog.at_level(logging.WARNING):
        frames = list(iter_frames([str(mixed_folder)], skipped))
    names = [os.path.basename(f.name) for f in frames]
    assert names == ["a.png", "b.JPG", "c_gray.png", "d_rgba.png"]
    assert [f.index for f in frames] == [0, 1, 3, 4]  # b2_broken.jpg was position 2
    assert skipped == {"image": 1}
    assert "b2_broken.jpg" in caplog.text
    # Without a counter the image is still skipped.
    assert len(list(iter_frames([str(mixed_folder)]))) == 4


def test_single_image_video_and_order_across_sources(tmp_path, mixed_folder):
    video = _write_video(tmp_path / "clip.avi", frames=5)
    image = str(mixed_folder / "a.png")
    frames = list(iter_frames([image, str(video)]))
    assert [f.kind for f in frames] == ["image"] + ["video"] * 5
    assert frames[0].name == image and frames[0].index == 0 and frames[0].source == image
    assert [f.name for f in frames[1:]] == [f"{video}#{i:06d}" for i in range(5)]
    assert [f.index for f in frames[1:]] == [0, 1, 2, 3, 4]
    # 10 fps: frame i at i / 10 s.
    np.testing.assert_allclose([f.timestamp for f in frames[1:]], [0.0, 0.1, 0.2, 0.3, 0.4])
    for i, frame in enumerate(frames[1:]):
        assert frame.image.shape == (32, 32, 3) and frame.source == str(video)
        assert abs(float(frame.image.mean()) - i) < 3  # grey level i
    # A single string is one source, not a sequence of characters.
    assert [f.name for f in iter_frames(image)] == [image]


def test_count_frames(tmp_path, mixed_folder):
    video = _write_video(tmp_path / "clip.avi", frames=7)
    # 4 images in the folder + 1 single image + 7 video frames = 12.
    assert count_frames([str(mixed_folder), str(mixed_folder / "a.png"), str(video)]) == 12
    assert count_frames([str(video), "0"]) is None  # a webcam has no end; it is not opened
    with pytest.raises(DetectError, match="not found"):
        count_frames([str(tmp_path / "nope.mp4")])


def test_webcam_source_that_does_not_exist():
    frames = iter_frames(["99"])  # classified, not opened yet
    try:
        next(frames)
    except DetectError as error:
        assert "webcam 99" in str(error)
        return
    finally:
        frames.close()
    pytest.skip("camera 99 exists on this machine")


def test_stopping_early_releases_the_video(tmp_path):
    video = _write_video(tmp_path / "clip.avi", frames=50)
    frames = iter_frames([str(video)])
    assert next(frames).index == 0
    frames.close()  # runs the reader's context exit
    assert list(frames) == []


def test_has_display(monkeypatch):
    monkeypatch.setattr(sources.sys, "platform", "linux")
    sources._cv2_has_gui.cache_clear()
    try:
        monkeypatch.delenv("DISPLAY", raising=False)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:   GTK3\n")
        assert has_display() is False  # a GUI backend but no display
        monkeypatch.setenv("DISPLAY", ":0")
        assert has_display() is True
        sources._cv2_has_gui.cache_clear()
        monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:   NONE\n")
        assert has_display() is False  # headless build: cv2.imshow would raise
    finally:
        sources._cv2_has_gui.cache_clear()


def _rss_bytes():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_memory_stays_flat_over_a_long_video(tmp_path):
    width, height, total = 128, 96, 1000
    video = _write_video(tmp_path / "long.avi", frames=total, width=width, height=height)
    # Keeping the 900 frames after frame 100 would cost 900 * 128 * 96 * 3 = 33 MB.
    retained_bytes = 900 * width * height * 3

    def rss_growth(keep):
        kept, at_100 = [], None
        for frame in iter_frames([str(video)]):
            if keep:
                kept.append(frame)
            if frame.index == 99:
                at_100 = _rss_bytes()
        assert frame.index == total - 1
        return at_100, _rss_bytes() - at_100

    at_100, growth = rss_growth(keep=False)
    assert growth < 0.1 * at_100
    assert growth < retained_bytes / 2
    # The measurement does see frames that are kept alive.
    _, leaky_growth = rss_growth(keep=True)
    assert leaky_growth > retained_bytes / 2
