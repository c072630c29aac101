"""Placing a dataset's images in a written dataset: a symbolic link or a copy."""

import os
import shutil

from detect.errors import DetectError

IMAGE_MODES = ("link", "copy")


def place_image(source, destination, mode="link"):
    """Make `destination` show the image at `source`.

    Args:
        source: existing image file.
        destination: path to create (parent folders are made; an existing file or link
            there is replaced).
        mode: "link" (a symbolic link to the absolute source path: no extra disk space,
            but the dataset then depends on the source folder) or "copy".
    """
    if mode not in IMAGE_MODES:
        raise DetectError(f"image mode {mode!r}: expected one of {IMAGE_MODES}")
    if not os.path.isfile(source):
        raise DetectError(f"image file not found: {source}")
    os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
    if os.path.lexists(destination):
        same = os.path.realpath(destination) == os.path.realpath(source)
        if same and (mode == "link" or not os.path.islink(destination)):
            return  # already in place (or the destination is the source itself)
        os.remove(destination)
    if mode == "link":
        os.symlink(os.path.abspath(source), destination)
    else:
        shutil.copy2(source, destination)
