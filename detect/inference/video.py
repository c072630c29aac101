"""Video files and cameras through OpenCV, one RGB frame at a time.

`VideoReader` yields `(index, timestamp_s, frame)` with `frame` a (H, W, 3) uint8 RGB array;
`VideoWriter` takes the same kind of frames. Frames are decoded and encoded one by one, so
memory stays flat however long the video is.

End of stream versus a bad frame: OpenCV's `read()` returns `ok=False` both at the end of
a file and when one frame fails to decode, and `CAP_PROP_POS_FRAMES` does not advance on a
failed read, so it cannot tell the two apart. The reader counts read attempts itself (one
attempt consumes one frame) and, after a failure before `frame_count`, reads on: if a later
frame decodes, the failed ones were bad frames (skipped and counted in `skipped`); if
`retries` reads in a row fail, the stream has ended (a truncated file ends early, with a
warning).
"""

import contextlib
import logging
import math
import os
import secrets
import sys
import tempfile
import time

import cv2
import numpy as np

from detect.errors import DetectError
from detect.io import refuse_folder

logger = logging.getLogger(__name__)

# Extension -> fourcc codes tried in order; all are encoders bundled with OpenCV's FFmpeg.
FOURCCS = {
    ".mp4": ("mp4v",),
    ".m4v": ("mp4v",),
    ".mov": ("mp4v",),
    ".avi": ("MJPG", "XVID"),
    ".mkv": ("XVID", "mp4v"),
    ".webm": ("VP80", "VP90"),
}


class VideoReader:
    """Iterate over the frames of a video file or a camera.

    Args:
        path: video file path (str or PathLike), or an int camera index (0 = first webcam).
        retries: consecutive failed reads tolerated before the stream counts as ended.

    Iterating yields `(index, timestamp_s, frame)`: `index` is the frame's position in the
    stream (skipped frames leave gaps), `timestamp_s` its presentation time in seconds
    (for a camera: seconds since it was opened; None when unknown), `frame` a (H, W, 3)
    uint8 RGB array. A reader is one pass over the stream; use it as a context manager
    (or call `close`) to release the file or camera.

    Raises:
        DetectError: naming the file or camera when it cannot be opened.
    """

    def __init__(self, path, retries=5):
        self.is_camera = isinstance(path, (int, np.integer))
        self.name = f"webcam {int(path)}" if self.is_camera else os.fsdecode(path)
        self.retries = max(1, int(retries))
        self.skipped = 0
        self._capture = _open_capture(path, self.name, self.is_camera)
        self._opened_at = time.monotonic()

    @property
    def fps(self):
        """Frames per second from the container (float); 0.0 when unknown."""
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        return float(fps) if math.isfinite(fps) and fps > 0 else 0.0

    @property
    def width(self):
        """Frame width in pixels (int)."""
        return int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))

    @property
    def height(self):
        """Frame height in pixels (int)."""
        return int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))

    @property
    def frame_count(self):
        """Frames the container declares (int), or None for cameras and unknown counts.

        For containers without a frame index (some mkv / webm) FFmpeg estimates it from the
        duration, so it can be off by a frame or two.
        """
        if self.is_camera:
            return None
        count = self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
        return int(count) if math.isfinite(count) and count > 0 else None

    def __iter__(self):
        expected = self.frame_count
        index = 0
        failed = 0  # consecutive failed reads since the last decoded frame
        previous_time = None
        while True:
            ok, frame = self._capture.read()
            if ok and frame is not None:
                # Failed reads followed by a good one were bad frames, not the end.
                self.skipped += failed
                failed = 0
                timestamp = self._timestamp(index, previous_time)
                previous_time = timestamp
                yield index, timestamp, _to_rgb(frame)
                index += 1
                continue
            if expected is not None and index >= expected:
                break
            failed += 1
            index += 1
            if failed >= self.retries:
                break
        self._report_end(index - failed, expected)

    def _timestamp(self, index, previous):
        """Seconds of frame `index`: the stream's clock while it moves forward, else index / fps."""
        if self.is_camera:
            return time.monotonic() - self._opened_at
        seconds = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if math.isfinite(seconds) and (previous is None or seconds > previous):
            return seconds
        fps = self.fps
        return index / fps if fps else None

    def _report_end(self, consumed, expected):
        if self.skipped:
            logger.warning("%s: %d frame(s) could not be decoded and were skipped",
                           self.name, self.skipped)
        # Estimated counts may overshoot by a frame; more than that means a truncated file.
        if expected is not None and consumed < expected - 1:
            logger.warning("%s: stream ended after %d of %d frames (truncated file?)",
                           self.name, consumed, expected)

    def close(self):
        """Release the file or camera; safe to call more than once."""
        self._capture.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


@contextlib.contextmanager
def quiet_native_log():
    """Mute OpenCV's and FFmpeg's own log lines ("moov atom not found", "[ WARN:0@0.03]
    ... can't be used to capture by name") while media is opened: a file that cannot be
    opened is reported once, as a DetectError. OpenCV's log level is lowered and, because
    FFmpeg writes to the stderr file descriptor directly, fd 2 points at /dev/null
    meanwhile. OPENCV_LOG_LEVEL set in the environment (e.g. DEBUG) shows everything."""
    if os.environ.get("OPENCV_LOG_LEVEL"):
        yield
        return
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        cv2.utils.logging.setLogLevel(previous)


def _open_capture(path, name, is_camera):
    if is_camera:
        with quiet_native_log():
            capture = cv2.VideoCapture(int(path))
        if not capture.isOpened():
            capture.release()
            raise DetectError(f"cannot open {name}: no such camera, or it is in use")
        return capture
    if not os.path.exists(path):
        raise DetectError(f"video file not found: {name}")
    if os.path.isdir(path):
        raise DetectError(f"expected a video file, got a directory: {name}")
    path = os.fsdecode(path)
    if not _opencv_can_name(path):
        # OpenCV's Python binding crashes on a name that is not valid UTF-8: open the
        # file through a symlink with a plain name (FFmpeg keeps its descriptor open).
        extension = os.path.splitext(path)[1]
        with tempfile.TemporaryDirectory(prefix="detect-video-") as folder:
            link = os.path.join(folder, "video" + (extension if _opencv_can_name(extension) else ""))
            os.symlink(os.path.abspath(path), link)
            return _open_capture(link, name, is_camera)
    # FFmpeg first: CAP_ANY would read a name containing '%' as an image-sequence pattern.
    with quiet_native_log():
        capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise DetectError(f"cannot open video (corrupt or unsupported format): {name}")
    return capture


def _opencv_can_name(path):
    """True when `path` (str) is valid UTF-8, the only file names OpenCV accepts."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _to_rgb(frame):
    """An OpenCV frame (BGR, BGRA or gray) -> (H, W, 3) uint8 RGB."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class VideoWriter:
    """Write (H, W, 3) uint8 RGB frames to a video file, atomically.

    Frames go to a hidden temporary file next to `path` (same extension, so FFmpeg picks
    the same container); `close` moves it onto `path` with `os.replace`, so `path` is either
    absent, its previous version, or the complete new video. Leaving the `with` block by an
    exception (or calling `abort`) deletes the temporary file instead.

    The codec follows the extension (`FOURCCS`): mp4 / m4v / mov -> mp4v, avi -> MJPG
    (else XVID), mkv -> XVID (else mp4v), webm -> VP80 (else VP90). These codecs store
    even sizes: an odd width or height loses its last column or row.

    Args:
        path: output file (str or PathLike); missing parent folders are created.
        fps: frames per second, > 0.
        width, height: frame size in pixels; every frame must have exactly this size.

    Raises:
        DetectError: the extension has no codec here, or no codec could open the file.
        ValueError: fps, width or height is not positive.
    """

    def __init__(self, path, fps, width, height):
        self.path = os.fsdecode(path)
        refuse_folder(self.path)
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be > 0, got {fps} for {self.path}")
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height} for {self.path}")
        self.fps = float(fps)
        self.width, self.height = int(width), int(height)
        self.frames_written = 0
        extension = os.path.splitext(self.path)[1].lower()
        if extension not in FOURCCS:
            raise DetectError(
                f"unsupported video extension {extension or '(none)'} for {self.path}; "
                f"use one of {', '.join(sorted(FOURCCS))}"
            )
        folder, base = os.path.split(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise DetectError(
                f"cannot create the folder for video {self.path}: {error.strerror or error}"
            ) from None
        # OpenCV crashes on file names that are not valid UTF-8: the temporary one is.
        stem = os.fsencode(base[: -len(extension)]).decode("utf-8", "replace")
        self._temp_path = os.path.join(
            folder, f".{stem}.partial-{os.getpid()}-{secrets.token_hex(4)}{extension}")
        self._writer, self.fourcc = self._open(FOURCCS[extension])
        if self.width % 2 or self.height % 2:
            logger.warning("%s: odd frame size %dx%d is stored as %dx%d by the %s codec",
                           self.path, self.width, self.height,
                           self.width - self.width % 2, self.height - self.height % 2,
                           self.fourcc)

    def _open(self, fourccs):
        for fourcc in fourccs:
            writer = cv2.VideoWriter(self._temp_path, cv2.VideoWriter_fourcc(*fourcc),
                                     self.fps, (self.width, self.height))
            if writer.isOpened():
                return writer, fourcc
            writer.release()
            _remove_quietly(self._temp_path)
        raise DetectError(
            f"cannot write video {self.path}: none of the codecs {', '.join(fourccs)} "
            f"could open it (folder not writable, or codec missing in this OpenCV build)"
        )

    def write(self, frame):
        """Append one frame: (height, width, 3) uint8 RGB."""
        if self._writer is None:
            raise ValueError(f"video writer for {self.path} is closed")
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            # OpenCV would silently drop a frame of the wrong size.
            raise ValueError(
                f"frame must be ({self.height}, {self.width}, 3) uint8 for {self.path}, "
                f"got {frame.shape} {frame.dtype}"
            )
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self):
        """Finish the file and move it onto `path`; safe to call more than once."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if not os.path.isfile(self._temp_path) or os.path.getsize(self._temp_path) == 0:
            _remove_quietly(self._temp_path)
            raise DetectError(f"writing video {self.path} failed: the encoder produced no file")
        os.replace(self._temp_path, self.path)

    def abort(self):
        """Stop writing and delete the partial file; `path` is left untouched."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        _remove_quietly(self._temp_path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
