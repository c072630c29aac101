"""Reading the proposal file shared by Fast R-CNN and R-CNN (its format is described in
detect/proposals/cache.py, which writes it): one image's (P, 4) xyxy boxes at a time, so
nothing of size num_images x P is ever built."""

import json
import os
import zipfile

import numpy as np

from detect.data.images import display_name
from detect.errors import DetectError

FORMAT = "detect-proposals"
VERSION = 1
METADATA_KEY = "__metadata__"


class ProposalFile:
    """Read access to a proposal file written by `compute_proposals`.

    Arrays are read lazily, one image at a time. Use as a context manager or call close().

    Attributes:
        path: the file.
        metadata: dict with "format", "version", "settings" and "images".
        settings: {mode, max_side, max_proposals, min_size} the file was computed with.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        name = display_name(self.path)
        try:
            self._npz = np.load(self.path, allow_pickle=False)
        except FileNotFoundError:
            raise DetectError(f"proposal file {name} does not exist") from None
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise DetectError(f"{name} is not a readable proposal file: {error}") from None
        if not hasattr(self._npz, "files") or METADATA_KEY not in self._npz.files:
            self.close()
            raise DetectError(f"{name} is not a proposal file: no {METADATA_KEY} entry")
        try:
            self.metadata = json.loads(str(self._npz[METADATA_KEY]))
        except (ValueError, zipfile.BadZipFile) as error:
            self.close()
            raise DetectError(f"{name}: unreadable {METADATA_KEY}: {error}") from None
        if self.metadata.get("format") != FORMAT:
            self.close()
            raise DetectError(f"{name} is not a proposal file (format "
                              f"{self.metadata.get('format')!r})")
        self.settings = self.metadata["settings"]
        self._images = self.metadata["images"]

    @property
    def image_ids(self):
        """Image ids (ints) in file order."""
        return [int(key) for key in self._images]

    def get(self, image_id):
        """(P, 4) float32 xyxy proposals of image_id; DetectError if the file lacks it."""
        key = str(int(image_id))
        if key not in self._images:
            raise DetectError(
                f"no proposals for image id {image_id} in {display_name(self.path)}: "
                f"recompute proposals for this dataset"
            )
        return self._npz[key].astype(np.float32, copy=False).reshape(-1, 4)

    def image_info(self, image_id):
        """(file_name, width, height) of the image the proposals of image_id were made for."""
        file_name, width, height = self._images[str(int(image_id))]
        return file_name, int(width), int(height)

    def __contains__(self, image_id):
        try:
            return str(int(image_id)) in self._images
        except (TypeError, ValueError):
            return False

    def __len__(self):
        return len(self._images)

    def close(self):
        """Close the underlying file."""
        if hasattr(self._npz, "close"):
            self._npz.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_proposals(path):
    """Open a proposal file; returns a ProposalFile (get, in, len, image_ids, metadata)."""
    return ProposalFile(path)
