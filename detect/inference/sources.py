"""Input sources for `detect predict`: SOURCE strings -> a stream of RGB frames.

A SOURCE is one of (checked in this order by `classify`):

- "webcam": a string of digits, the camera index ("0" = first webcam). Write "./0" for a
  file or folder named 0.
- "folder": an existing directory; its image files (non-recursive, sorted by name,
  hidden files skipped).
- "image": an existing file with an image extension (`IMAGE_EXTENSIONS`).
- "video": an existing file with a video extension (`VIDEO_EXTENSIONS`).
- "list": an existing .txt file naming one file per line, relative to the text file's
  folder (absolute paths kept); blank lines and lines starting with # are skipped. Lines
  with a video extension are played as videos, every other line is read as an image.
- "glob": a pattern with * ? or [ (`**` matches folders recursively); the matching image
  and video files, sorted. A literal extension at the end of the pattern matches in any
  case: `photos/*.jpg` also finds the `IMG_0001.JPG` a camera writes.

Extensions are case-insensitive. Sources are checked and expanded to file lists when
`iter_frames` or `count_frames` is called; pixels are decoded only as frames are consumed.
"""

import functools
import glob
import logging
import os
import sys
from dataclasses import dataclass

import cv2
import numpy as np

from detect.data.images import display_name, read_image
from detect.errors import DetectError
from detect.inference.video import VideoReader

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
LIST_EXTENSION = ".txt"
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass
class Frame:
    """One frame to run detection on.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        name: the image file path, or "<video path>#000123" / "webcam0#000123" for frame
            123 of a video or camera.
        index: position in its source: frame number in a video or camera stream, position
            in the file list of a folder / glob / list (0 for a single image). Skipped
            images and frames leave gaps.
        timestamp: seconds from the start of the video (from opening, for a camera);
            None for images.
        source: the SOURCE string this frame came from, as given.
        kind: "image", "video" or "webcam".
    """

    image: np.ndarray
    name: str
    index: int
    timestamp: float | None
    source: str
    kind: str


def classify(source):
    """Kind of a SOURCE string: "image" | "folder" | "glob" | "list" | "video" | "webcam".

    Raises:
        DetectError: the path does not exist (and is neither digits nor a glob pattern), or
            it is a file whose extension is not an image, video or .txt list.
    """
    text = os.fsdecode(source)
    if text.isdigit() and text.isascii():
        return "webcam"
    if os.path.isdir(text):
        return "folder"
    if os.path.isfile(text):
        extension = _extension(text)
        if extension in IMAGE_EXTENSIONS:
            return "image"
        if extension in VIDEO_EXTENSIONS:
            return "video"
        if extension == LIST_EXTENSION:
            return "list"
        raise DetectError(
            f"unsupported source file type {extension or '(no extension)'}: "
            f"{display_name(text)}; expected an image ({_names(IMAGE_EXTENSIONS)}), "
            f"a video ({_names(VIDEO_EXTENSIONS)}) or a .txt list"
        )
    if _GLOB_CHARACTERS & set(text):
        return "glob"
    raise DetectError(f"source not found: {display_name(text)}")


def iter_frames(sources, skipped=None):
    """Stream the frames of SOURCE strings, one at a time, in order.

    Every source is checked and expanded to its file list first, so a bad SOURCE fails
    before any frame is produced; pixels are decoded lazily, one frame at a time.

    Args:
        sources: list of SOURCE strings (a single string is taken as a one-item list).
        skipped: a Counter-like mapping or None. Unreadable images add 1 to
            `skipped["image"]` (with a warning naming the file); frames that fail to decode
            add to `skipped["video"]` or `skipped["webcam"]`.

    Returns:
        A generator of `Frame`.

    Raises:
        DetectError: at the call, for a missing source, an empty folder, a glob without
            matches or an empty list; while iterating, for a video or camera that cannot
            be opened.
    """
    plan = [(source, _expand(source)) for source in _as_list(sources)]
    return _generate(plan, skipped)


def count_frames(sources):
    """Number of frames `iter_frames(sources)` will try to produce, for progress bars.

    Images count 1 each (before decoding, so unreadable ones are included); videos count
    their container's frame count. None when any source is a camera or a video without a
    known frame count.

    Raises:
        DetectError: as `iter_frames`, and for a video that cannot be opened.
    """
    total = 0
    for source in _as_list(sources):
        for kind, item in _expand(source):
            if kind == "image":
                total += 1
                continue
            if kind == "webcam":
                return None
            with VideoReader(item) as reader:
                count = reader.frame_count
            if count is None:
                return None
            total += count
    return total


def has_display():
    """True when windows can be shown: a display is available and cv2 has a GUI backend.

    On Linux and other X11 / Wayland systems a display means DISPLAY or WAYLAND_DISPLAY is
    set; Windows and macOS always have one. Headless OpenCV builds (`GUI: NONE`, as
    opencv-contrib-python-headless) have no GUI backend: `cv2.imshow` raises there.
    """
    if sys.platform not in ("win32", "darwin") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    return _cv2_has_gui()


@functools.lru_cache(maxsize=1)
def _cv2_has_gui():
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "GUI":
            return value.strip().upper() not in ("", "NONE")
    # Builds that do not print a GUI line: ask the GUI itself.
    try:
        cv2.namedWindow("detect-display-probe", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("detect-display-probe")
    except cv2.error:
        return False
    return True


def _as_list(sources):
    if isinstance(sources, (str, bytes, os.PathLike)):
        return [os.fsdecode(sources)]
    return [os.fsdecode(source) for source in sources]


def _extension(path):
    return os.path.splitext(path)[1].lower()


def _names(extensions):
    return " ".join(sorted(extension[1:] for extension in extensions))


def _expand(source):
    """SOURCE -> list of (kind, item): ("image", path), ("video", path) or ("webcam", int)."""
    kind = classify(source)
    name = display_name(source)
    if kind == "webcam":
        return [("webcam", int(source))]
    if kind in ("image", "video"):
        return [(kind, source)]
    if kind == "folder":
        items = [("image", path) for path in _folder_images(source)]
        if not items:
            raise DetectError(f"no images ({_names(IMAGE_EXTENSIONS)}) in folder {name}")
        return items
    if kind == "glob":
        matches = glob.glob(_any_case_extension(source), recursive=True)
        items = [(_file_kind(path), path) for path in sorted(set(matches))
                 if os.path.isfile(path) and _file_kind(path) is not None]
        if not items:
            raise DetectError(f"no image or video files match {name}")
        return items
    items = [(_file_kind(path) or "image", path) for path in _list_paths(source)]
    if not items:
        raise DetectError(f"no paths listed in {name}")
    return items


def _any_case_extension(pattern):
    """The glob pattern with its literal final extension in any case: "a/*.jpg" ->
    "a/*.[jJ][pP][gG]". Patterns whose extension holds wildcards are kept as they are."""
    head, dot, extension = pattern.rpartition(".")
    if not dot or not extension or set(extension) & (_GLOB_CHARACTERS | {"]", "/", os.sep}):
        return pattern
    return head + "." + "".join(f"[{c.lower()}{c.upper()}]" if c.isascii() and c.isalpha() else c for c in extension)


def _file_kind(path):
    extension = _extension(path)
    if extension in IMAGE_EXTENSIONS:
        return "image"
    if extension in VIDEO_EXTENSIONS:
        return "video"
    return None


def _folder_images(folder):
    with os.scandir(folder) as entries:
        paths = [
            entry.path for entry in entries
            # Hidden files include macOS "._x.jpg" resource forks, which are not images.
            if not entry.name.startswith(".") and entry.is_file()
            and _extension(entry.name) in IMAGE_EXTENSIONS
        ]
    return sorted(paths)


def _list_paths(list_file):
    """Paths named in a .txt list, resolved against the list file's folder."""
    try:
        with open(list_file, encoding="utf-8-sig") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DetectError(f"cannot read source list {display_name(list_file)}: {error}") from None
    folder = os.path.dirname(list_file)
    paths = []
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            paths.append(os.path.join(folder, os.path.expanduser(entry)))
    return paths


def _generate(plan, skipped):
    for source, items in plan:
        for position, (kind, item) in enumerate(items):
            if kind == "image":
                frame = _read_image_frame(item, position, source, skipped)
                if frame is not None:
                    yield frame
            else:
                yield from _stream_frames(kind, item, source, skipped)


def _read_image_frame(path, position, source, skipped):
    try:
        image = read_image(path)
    except DetectError as error:
        logger.warning("skipping unreadable image: %s", error)
        _add(skipped, "image", 1)
        return None
    return Frame(image=image, name=path, index=position, timestamp=None, source=source,
                 kind="image")


def _stream_frames(kind, item, source, skipped):
    """Frames of one video file (kind "video") or camera (kind "webcam", item an int)."""
    prefix = f"webcam{item}" if kind == "webcam" else item
    with VideoReader(item) as reader:
        counted = 0
        for index, timestamp, image in reader:
            _add(skipped, kind, reader.skipped - counted)
            counted = reader.skipped
            yield Frame(image=image, name=f"{prefix}#{index:06d}", index=index,
                        timestamp=timestamp, source=source, kind=kind)
        _add(skipped, kind, reader.skipped - counted)


def _add(skipped, key, amount):
    if skipped is not None and amount:
        skipped[key] = skipped.get(key, 0) + amount
