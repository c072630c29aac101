"""What every `detect` command module shares: TensorFlow imported quietly, logging set
up, and user errors (DetectError, missing files, bad options, Ctrl-C) turned into one line
and a non-zero exit without a traceback."""

import errno
import functools
import os
import sys

import click

from detect.errors import DetectError


def quiet_tensorflow(init_devices=True):
    """Import TensorFlow and initialize its devices with stderr silenced.

    TensorFlow's C++ start-up messages (CUDA probing, oneDNN notices) go through absl
    before its log is initialised, where TF_CPP_MIN_LOG_LEVEL does not reach them, so the
    file descriptor itself is muted meanwhile. Python exceptions still propagate once it
    is restored; TF_CPP_MIN_LOG_LEVEL=0 shows everything. Called only by the commands
    that use TensorFlow where it is installed, so `detect data ...` and `--help` stay fast;
    without TensorFlow (JAX or PyTorch and the PyDataset input path) it does nothing.
    Multi-worker training must create its strategy before any op runs: it passes
    init_devices=False.
    """
    import logging

    from detect.data.splits import has_tensorflow

    if not has_tensorflow():
        return
    if "tensorflow" not in sys.modules and os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0":
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            import tensorflow as tf

            if init_devices:
                tf.config.list_physical_devices()
                tf.constant(0) + 0
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def setup_logging():
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)


# Errors of the user's files, folders and disks rather than of detect: one line each.
_USER_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def _os_error_message(e):
    """The one-line message for an OSError a user can fix, else None (a bug: traceback)."""
    where = os.fsdecode(e.filename).encode("utf-8", "backslashreplace").decode() if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device" + (f" while writing {where}" if where else "")
    if e.errno in _USER_ERRNOS or isinstance(e, _USER_OS_ERRORS):
        reason = e.strerror or str(e)
        return f"{where}: {reason}" if where else reason
    return None


# Commands that pick up where they stopped when run again (the rest start over).
_RESUME_HINTS = {
    "train": "run the same command again to resume from the last finished epoch",
    "proposals": "run the same command again to resume: finished images are kept",
}


def _interrupted_message():
    """`interrupted`, and for resumable commands how to resume."""
    context = click.get_current_context(silent=True)
    hint = _RESUME_HINTS.get(context.info_name if context else None)
    return f"interrupted; {hint}" if hint else "interrupted"


def handle_errors(func):
    """Turn user errors into one clear line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DetectError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:
            message = _os_error_message(e)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            # A newline first: a progress bar may hold the cursor mid-line.
            click.echo("\n" + _interrupted_message(), err=True)
            sys.exit(130)

    return wrapper
