"""File helpers every writer in the toolkit uses.

`atomic_write` is the one way a file is written: readers see either the old file or the
whole new one, never a partial file, even after a crash, a full disk or a SIGKILL.
"""

import contextlib
import errno
import json
import os
import uuid

import numpy as np

from detect.errors import DetectError


def refuse_folder(path):
    """Raise IsADirectoryError naming `path` when it is an existing folder: the rename
    onto it would fail only after the whole file was written, naming the temporary file."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", os.fspath(path))


def _named_for_user(error, path, tmp):
    """`error` (an OSError) naming the user's `path` where it named the temporary file or
    no file at all (a full disk during write or fsync); other errors unchanged."""
    if error.errno is None or error.filename not in (None, tmp):
        return error
    renamed = type(error)(error.errno, error.strerror or os.strerror(error.errno), os.fspath(path))
    return renamed.with_traceback(error.__traceback__)


def temp_path_beside(path):
    """A unique temporary name in `path`'s folder (os.replace is atomic within a file system)."""
    folder = os.path.dirname(os.path.abspath(path))
    return os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8", fsync=True):
    """Open a temporary file beside `path`; on a clean exit it replaces `path` atomically.

    Usage: `with atomic_write("metrics.json") as f: json.dump(data, f)`. On an exception
    (disk full, KeyboardInterrupt, ...) the temporary file is removed and `path` keeps its
    earlier content. `mode` is "w" (text) or "wb" (bytes). The temporary file is opened with
    open(..., "x"), which (unlike mkstemp) leaves the permissions to the umask.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    refuse_folder(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_path_beside(path)
    kwargs = {"encoding": encoding} if mode == "w" else {}
    try:
        with open(tmp, mode.replace("w", "x"), **kwargs) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise _named_for_user(error, path, tmp) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside `path` for writers that want a file name (np.savez,
    model.save, cv2.VideoWriter); moved onto `path` on a clean exit, removed otherwise.

    Keeps the suffix of `path` (Keras and NumPy choose the format from it; Keras wants
    `.weights.h5` whole).
    """
    refuse_folder(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    suffix = ".weights.h5" if str(path).endswith(".weights.h5") else os.path.splitext(path)[1]
    tmp = temp_path_beside(path) + suffix
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise _named_for_user(error, path, tmp) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def json_default(value):
    """json.dump `default=` that turns NumPy scalars and arrays into Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_json(path, data, indent=1):
    """Write `data` as JSON to `path` atomically (NumPy values allowed)."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=indent, default=json_default)
        f.write("\n")


def read_text(path):
    """The text of a UTF-8 file (a leading byte-order mark dropped, as Windows tools write
    one). Raises DetectError naming the file and the byte when it is not UTF-8; OSError
    (missing, unreadable) is left to the caller."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DetectError(f"{path}: not a UTF-8 text file (byte {error.start}: {data[error.start:error.start + 1]!r})") from None
