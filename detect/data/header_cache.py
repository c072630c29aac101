"""What validation learned from image headers, kept between runs (a second start is fast).

Checking a dataset reads every image header (118k files for COCO train2017). The sizes
found are stored per dataset source in a small JSON file under the user's cache folder:

    <cache>/image-headers/<sha1 of the source path>[:16].json
    {"version": 2, "source": SOURCE, "images": {PATH: [file size, mtime_ns, width, height]}}

An entry counts only while the file's size and modification time (nanoseconds) are the
ones recorded, so a replaced or edited image is read again. The cache folder is
$DETECT_CACHE_DIR, else $XDG_CACHE_HOME/detect, else ~/.cache/detect. An unwritable or
corrupt cache file is ignored (every header is read, as without a cache).
"""

import hashlib
import json
import logging
import os
import stat

from detect.data.images import image_size
from detect.io import atomic_write

log = logging.getLogger(__name__)

# 2: sizes follow images.image_size's orientation rule for TIFF and trailing PNG eXIf
# chunks (version 1 files may hold those images' stored, unrotated sizes).
VERSION = 2


def user_cache_dir(*parts):
    """The toolkit's folder in the user's cache ($DETECT_CACHE_DIR overrides), joined with parts."""
    root = os.environ.get("DETECT_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "detect")
    return os.path.join(root, *parts)


class HeaderCache:
    """Image sizes by path, valid while a file keeps its size and mtime.

    Use as a context manager (the file is written on a clean exit when anything changed).

    Attributes:
        path: the JSON file.
        hits, misses: headers answered from the cache / read from the image file.
    """

    def __init__(self, source):
        source = os.path.abspath(os.fspath(source or "."))
        digest = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.path = user_cache_dir("image-headers", f"{digest}.json")
        self.source = source
        self.hits = self.misses = 0
        self._known = self._read()
        self._seen = {}

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("version") == VERSION and data.get("source") == self.source:
                return data["images"]
        except (OSError, ValueError, AttributeError, KeyError):
            pass
        return {}

    def image_size(self, path):
        """(width, height) of the image at path (see images.image_size).

        Raises:
            FileNotFoundError: path is missing or is not a regular file.
            DetectError: the header is unreadable (from images.image_size).
        """
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise FileNotFoundError(path)
        entry = self._known.get(path)
        if entry is not None and entry[0] == info.st_size and entry[1] == info.st_mtime_ns:
            self.hits += 1
            width, height = int(entry[2]), int(entry[3])
        else:
            self.misses += 1
            width, height = image_size(path)
        self._seen[path] = [info.st_size, info.st_mtime_ns, width, height]
        return width, height

    def save(self):
        """Write the entries of the images met in this run, if any header was read."""
        if not self.misses and len(self._seen) == len(self._known):
            return
        data = {"version": VERSION, "source": self.source, "images": self._seen}
        try:
            with atomic_write(self.path, fsync=False) as f:
                json.dump(data, f, separators=(",", ":"))
        except OSError as error:
            log.debug("image header cache not written (%s): %s", self.path, error)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.save()
