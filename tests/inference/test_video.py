import logging
import os
import time

import cv2
import numpy as np
import pytest

from detect.errors import DetectError
from detect.inference.video import VideoReader, VideoWriter

RED = (255, 0, 0)
BACKGROUND = (20, 20, 20)


def square_x(i):
    """Left edge of the square in frame i: moves 2 px a frame, back to 0 every 24 frames."""
    return 2 * (i % 24)


def square_frame(i, width=64, height=48):
    """RGB frame i: dark background, a 16x16 red square at x = square_x(i) + 0..16, y = 16..32."""
    frame = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    frame[16:32, square_x(i):square_x(i) + 16] = RED
    return frame


def make_video(path, frames=30, fps=10.0, fourcc="MJPG", width=64, height=48):
    """Write the moving-square video with OpenCV directly (independent of VideoWriter)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(cv2.cvtColor(square_frame(i, width, height), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_reader_properties_and_frames(tmp_path):
    path = make_video(tmp_path / "square.mp4", fourcc="mp4v")
    with VideoReader(path) as reader:
        assert (reader.fps, reader.width, reader.height, reader.frame_count) == (10.0, 64, 48, 30)
        frames = list(reader)
    assert [index for index, _, _ in frames] == list(range(30))
    # 10 fps: frame i is shown at i / 10 seconds.
    np.testing.assert_allclose([t for _, t, _ in frames], np.arange(30) / 10.0, atol=1e-6)
    assert reader.skipped == 0
    for i, (_, _, frame) in enumerate(frames):
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        # Interior of the square (2 px margin against codec blur) is red, in RGB order.
        inside = frame[18:30, square_x(i) + 2:square_x(i) + 14].reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(inside, RED, atol=40)
        outside = frame[36:, :].reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(outside, BACKGROUND, atol=20)


@pytest.mark.parametrize("name", ["out.mp4", "out.avi", "out.MKV", "out.mov"])
def test_write_read_round_trip_keeps_every_frame(tmp_path, name):
    path = tmp_path / name
    with VideoWriter(path, fps=12.5, width=64, height=48) as writer:
        for i in range(17):
            writer.write(square_frame(i))
    assert writer.frames_written == 17
    with VideoReader(path) as reader:
        assert (reader.width, reader.height, reader.fps) == (64, 48, 12.5)
        frames = list(reader)
    assert len(frames) == 17 and reader.skipped == 0
    # Frame 5's square spans columns 10..25; its middle stays red after encoding.
    np.testing.assert_allclose(frames[5][2][20:28, 12:24].reshape(-1, 3).mean(axis=0), RED, atol=40)


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "video.avi"
    with VideoWriter(path, fps=10, width=64, height=48) as writer:
        writer.write(square_frame(0))
        assert not path.exists()
        assert [p.suffix for p in tmp_path.iterdir()] == [".avi"]
    assert writer.frames_written == 1
    assert os.listdir(tmp_path) == ["video.avi"]


def test_writer_exception_leaves_previous_file(tmp_path):
    path = tmp_path / "video.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with VideoWriter(path, fps=10, width=64, height=48) as writer:
            writer.write(square_frame(0))
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["video.mp4"]


def test_writer_creates_missing_folders(tmp_path):
    path = tmp_path / "a" / "b" / "clip.mp4"
    with VideoWriter(path, fps=5, width=32, height=32) as writer:
        writer.write(np.zeros((32, 32, 3), np.uint8))
    with VideoReader(path) as reader:
        assert len(list(reader)) == 1


def test_writer_rejects_bad_arguments(tmp_path):
    with pytest.raises(DetectError, match=r"\.xyz"):
        VideoWriter(tmp_path / "clip.xyz", fps=10, width=64, height=48)
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "clip.mp4", fps=0, width=64, height=48)
    with pytest.raises(ValueError, match="size"):
        VideoWriter(tmp_path / "clip.mp4", fps=10, width=0, height=48)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DetectError, match="clip.mp4"):
        VideoWriter(tmp_path / "file" / "clip.mp4", fps=10, width=64, height=48)


def test_writer_rejects_wrong_frame_and_write_after_close(tmp_path):
    writer = VideoWriter(tmp_path / "clip.mp4", fps=10, width=64, height=48)
    with pytest.raises(ValueError, match=r"\(48, 64, 3\) uint8"):
        writer.write(np.zeros((64, 48, 3), np.uint8))  # transposed size
    with pytest.raises(ValueError):
        writer.write(np.zeros((48, 64, 3), np.float32))
    writer.write(square_frame(0))
    writer.close()
    writer.close()  # second close is a no-op
    assert writer.frames_written == 1
    with pytest.raises(ValueError, match="closed"):
        writer.write(square_frame(0))


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DetectError, match="not found: .*missing.mp4"):
        VideoReader(tmp_path / "missing.mp4")
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video")
    with pytest.raises(DetectError, match="cannot open video.*fake.mp4"):
        VideoReader(fake)
    with pytest.raises(DetectError, match="directory"):
        VideoReader(tmp_path)


def _jpeg_starts(data):
    """Offsets of the JPEG start markers (FF D8 FF): one per frame in an MJPG avi."""
    starts, at = [], data.find(b"\xff\xd8\xff")
    while at >= 0:
        starts.append(at)
        at = data.find(b"\xff\xd8\xff", at + 1)
    return starts


def test_bad_frame_mid_stream_is_skipped_and_counted(tmp_path, caplog):
    path = make_video(tmp_path / "clip.avi", frames=30)
    data = bytearray(path.read_bytes())
    starts = _jpeg_starts(data)
    assert len(starts) == 30
    # Blank out frame 10's JPEG up to the next chunk header ("00dc"), so it cannot decode.
    end = data.index(b"00dc", starts[10])
    data[starts[10]:end] = bytes(end - starts[10])
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), VideoReader(path) as reader:
        frames = list(reader)
    indices = [index for index, _, _ in frames]
    assert indices == list(range(10)) + list(range(11, 30))
    assert reader.skipped == 1
    assert "1 frame(s) could not be decoded" in caplog.text
    # The frame after the gap is really frame 11: its square starts at x = 22, at 1.1 s.
    index, timestamp, frame = frames[10]
    assert index == 11 and timestamp == pytest.approx(1.1)
    assert frame[24, 23:36, 0].min() > 200 and frame[24, 17:20, 0].max() < 80


def test_truncated_video_ends_early_with_warning(tmp_path, caplog):
    path = make_video(tmp_path / "clip.avi", frames=30)
    data = path.read_bytes()
    path.write_bytes(data[:_jpeg_starts(data)[15] + 50])  # frames 0..14 intact
    with caplog.at_level(logging.WARNING), VideoReader(path) as reader:
        assert reader.frame_count == 30
        indices = [index for index, _, _ in reader]
    assert indices == list(range(15))
    assert reader.skipped == 0
    assert "ended after 15 of 30 frames" in caplog.text


def test_missing_camera_raises():
    start = time.monotonic()
    try:
        reader = VideoReader(99)
    except DetectError as error:
        assert "webcam 99" in str(error)
        return
    reader.close()
    elapsed = time.monotonic() - start
    pytest.skip(f"camera 99 opened on this machine ({elapsed:.1f} s)")
