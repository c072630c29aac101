"""Selective search region proposals (Uijlings et al. 2013) through OpenCV's ximgproc.

This module imports only NumPy and OpenCV (never TensorFlow), so proposal workers started
with the "spawn" method stay light.

Conventions:
    image: (H, W, 3) uint8 RGB, as returned by `detect.data.images.read_image`.
    returned boxes: (P, 4) float32 xyxy in pixels of the ORIGINAL image,
        0 <= x1 < x2 <= W, 0 <= y1 < y2 <= H.

Order: OpenCV sorts regions by `random * hierarchy level`, so small, early-merged regions
tend to come first; that order is kept and `max_proposals` keeps its head. The random
factor comes from the C library's `rand()`; `seed` reseeds it (through ctypes) before the
search so the same image gives the same list. Where the C library cannot be reached, the
order is left to whatever state `rand()` is in.
"""

import ctypes
import ctypes.util

import cv2
import numpy as np

from detect.errors import DetectError

MODES = ("fast", "quality")

_LIBC = None


def opencv_problem():
    """None when cv2 has ximgproc (opencv-contrib), else a one-line message naming the fix.

    Both opencv-python and opencv-contrib-python(-headless) install a `cv2` package into the
    same folder; when another package pulls in the plain build it overwrites the contrib
    one and `cv2.ximgproc` disappears. The installed distributions that own `cv2` tell
    which package to remove.
    """
    if hasattr(cv2, "ximgproc"):
        return None
    try:
        from importlib.metadata import packages_distributions

        owners = sorted(set(packages_distributions().get("cv2", [])))
    except Exception:  # noqa: BLE001 - broken metadata must not hide the real problem
        owners = []
    plain = [name for name in owners if "contrib" not in name.lower()]
    where = getattr(cv2, "__file__", None) or "cv2"
    if plain:
        return (
            f"OpenCV at {where} has no ximgproc (selective search): the package {' and '.join(plain)} shadows "
            f"opencv-contrib-python-headless; remove it: pip uninstall -y {' '.join(plain)} && "
            "pip install --force-reinstall opencv-contrib-python-headless"
        )
    return (
        f"OpenCV at {where} has no ximgproc (selective search): "
        "pip install --force-reinstall opencv-contrib-python-headless"
    )


# Checked once, at import; raised when selective search is asked for (reading a cached
# proposal file, which needs no OpenCV contrib module, keeps working).
OPENCV_PROBLEM = opencv_problem()


def selective_search(image, mode="fast", max_side=500, max_proposals=2000, min_size=4,
                     seed=0):
    """Selective search proposals for one image.

    The image is downscaled (never upscaled) so its longest side is at most `max_side`
    before the search, since the search time grows quickly with the pixel count; boxes are
    scaled back to the original image.

    Args:
        image: (H, W, 3) uint8 RGB.
        mode: "fast" (2 colour spaces x 3 segmentation scales) or "quality"
            (5 colour spaces x 5 scales; about 3x slower, more and tighter boxes).
        max_side: longest side, in pixels, of the image the search runs on.
        max_proposals: keep at most this many boxes (None: keep all).
        min_size: drop boxes narrower or shorter than this, in original pixels.
        seed: seed for the C library's rand(), which orders OpenCV's output
            (None: do not reseed).

    Returns:
        (P, 4) float32 xyxy boxes in original pixels, in OpenCV's order, without duplicates.

    Raises:
        DetectError: unknown mode or non-positive max_side / max_proposals.
        ValueError: image is not an (H, W, 3) uint8 array.
    """
    check_settings(mode, max_side, max_proposals, min_size)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return np.zeros((0, 4), np.float32)

    small = _downscale(image, max_side)
    rects = _run_opencv(small, mode, seed)
    scale = np.array([width / small.shape[1], height / small.shape[0]] * 2, np.float32)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    boxes = boxes.astype(np.float32) * scale
    boxes = np.clip(boxes, 0.0, np.array([width, height, width, height], np.float32))
    return _filter(boxes, min_size, max_proposals)


def check_settings(mode, max_side, max_proposals, min_size):
    """DetectError unless the arguments are valid for `selective_search` (and OpenCV has it)."""
    if OPENCV_PROBLEM:
        raise DetectError(OPENCV_PROBLEM)
    if mode not in MODES:
        raise DetectError(f"unknown selective search mode {mode!r}: expected one of {MODES}")
    if int(max_side) < 1:
        raise DetectError(f"selective search max_side must be >= 1, got {max_side}")
    if max_proposals is not None and int(max_proposals) < 1:
        raise DetectError(f"max_proposals must be >= 1 or None, got {max_proposals}")
    if min_size < 0:
        raise DetectError(f"min_size must be >= 0, got {min_size}")


def _downscale(image, max_side):
    """Resize so the longest side is max_side; images already that small are kept as is."""
    height, width = image.shape[:2]
    factor = max_side / max(height, width)
    if factor >= 1.0:
        return image
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    # INTER_AREA averages the source pixels, so thin structures do not alias away.
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _run_opencv(image, mode, seed):
    """(R, 4) int (x, y, w, h) rects of OpenCV's selective search on an RGB image."""
    if seed is not None:
        _seed_c_rand(seed)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    # OpenCV's colour conversions inside the search expect BGR.
    search.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    rects = search.process()
    if rects is None or len(rects) == 0:
        return np.zeros((0, 4), np.int64)
    return np.asarray(rects, np.int64).reshape(-1, 4)


def _seed_c_rand(seed):
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)
            _LIBC.srand.argtypes = [ctypes.c_uint]
        except (OSError, AttributeError, TypeError):
            _LIBC = False
    if _LIBC:
        _LIBC.srand(int(seed) & 0xFFFFFFFF)


def _filter(boxes, min_size, max_proposals):
    """Drop small boxes and repeats (first occurrence wins), then keep the first max_proposals."""
    sides = boxes[:, 2:] - boxes[:, :2]
    boxes = boxes[np.all((sides > 0) & (sides >= min_size), axis=1)]
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    if max_proposals is not None:
        boxes = boxes[: int(max_proposals)]
    return np.ascontiguousarray(boxes, dtype=np.float32)
