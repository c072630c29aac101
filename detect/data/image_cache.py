"""`input.cache: true`: decoded uint8 images kept in one file on disk, read back by index.

The tf.data pipeline shuffles image indices before loading, so a cache must be addressable
by index (tf.data's own `cache()` replays its first epoch in order, and reshuffling after
it needs a buffer of whole images). This cache holds each record's decoded pixels, exactly
as `read_image` returned them (uint8, before resizing, so the cached path resizes the same
way as the uncached one), at a fixed offset in one temporary file:

    offset[i] = sum(height_j * width_j * 3 for j < i)   (record sizes from the annotations)

The file lives in the user's cache folder and is unlinked as soon as it is created, so it
takes disk space only while the pipeline exists and never outlives a crash. Reads and
writes use pread/pwrite (no memory map), so the process RSS does not grow with the
dataset; the OS page cache keeps hot images in RAM when it has room. A full disk stops
caching with one warning; training goes on from the image files.
"""

import logging
import os
import threading

import numpy as np

from detect.data.header_cache import user_cache_dir

log = logging.getLogger(__name__)


class ImageCache:
    """Decoded (H, W, 3) uint8 images of a dataset's records, by record index.

    Args:
        dataset: the Dataset whose records (width, height) size the slots.
        folder: where the temporary file goes (default: user_cache_dir("image-cache")).
    """

    def __init__(self, dataset, folder=None):
        self.shapes = np.array([(r.height, r.width) for r in dataset.records], np.int64).reshape(-1, 2)
        sizes = self.shapes[:, 0] * self.shapes[:, 1] * 3
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.filled = np.zeros(len(sizes), bool)
        self.enabled = True
        self._lock = threading.Lock()
        folder = folder or user_cache_dir("image-cache")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"images-{os.getpid()}-{id(self):x}.u8")
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.unlink(path)  # the space is freed when the descriptor closes
        log.info("input.cache: up to %.1f GB of decoded images in %s", self.total_bytes / 1e9, folder)

    @property
    def total_bytes(self):
        """Bytes the cache takes once every image is in it."""
        return int(self.offsets[-1])

    def get(self, index):
        """The cached image of record `index`, or None when it is not cached yet."""
        if not self.filled[index]:
            return None
        height, width = self.shapes[index]
        data = os.pread(self._fd, int(height * width * 3), int(self.offsets[index]))
        return np.frombuffer(data, np.uint8).reshape(int(height), int(width), 3)

    def put(self, index, image):
        """Store record `index`'s decoded image (skipped when its shape is not the record's)."""
        if not self.enabled or self.filled[index] or tuple(image.shape) != (*self.shapes[index], 3):
            return
        try:
            os.pwrite(self._fd, np.ascontiguousarray(image, np.uint8).tobytes(), int(self.offsets[index]))
        except OSError as error:
            with self._lock:
                if self.enabled:
                    log.warning("input.cache: stopped caching images (%s)", error.strerror or error)
                self.enabled = False
            return
        self.filled[index] = True

    def close(self):
        """Release the file (its disk space)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except (OSError, AttributeError):
            pass
