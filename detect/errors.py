"""Errors a user causes (bad path, bad config key, corrupt image, unknown class).

The CLI prints such an error as one line and exits non-zero, without a traceback.
Messages name the file, key or box at fault.
"""


class DetectError(Exception):
    """A user-facing error: its message is printed as one line by the CLI."""
