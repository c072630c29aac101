"""The proposal file shared by Fast R-CNN and R-CNN: selective search boxes per image.

File format (`out_path`, a NumPy .npz archive readable with `np.load(allow_pickle=False)`):
    "<image_id>":    (P, 4) float32 xyxy boxes in pixels of the original image, in
                     selective search order (see selective_search.py).
    "__metadata__":  0-d str array holding JSON: {"format", "version", "settings":
                     {mode, max_side, max_proposals, min_size}, "images":
                     {"<image_id>": [file_name, width, height]}}.

Resuming: while `compute_proposals` runs, each finished image is written atomically
(temp file + os.replace) to `<out_path>.parts/<image_id>.npz`, next to a
`settings.json`. Only renamed files count, so a run killed at any moment (SIGKILL
included) keeps what it finished and a rerun computes only the rest. At the end the parts
and any earlier `out_path` with the same settings are merged into a new file that
replaces `out_path` atomically, and the parts folder is removed.

Workers are started with the "spawn" method: the parent may have TensorFlow loaded, and a
forked copy of it is unsafe. Workers import only this module and its NumPy, OpenCV and
PIL-level dependencies, not the caller's main script.

Reading: a ProposalFile reads one image's array at a time (the archive's members are
separate), so the training pipeline reads each image's proposals as it reads the image
(data/example_reader.py) and nothing of size num_images x P is ever built.
`write_proposals` streams proposals from another source (the alternating schedule's RPN)
into a file of the same format.
"""

import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import types
import uuid
import zipfile

import numpy as np

from detect.data.images import display_name, read_image
from detect.errors import DetectError
from detect.io import atomic_path, atomic_write, refuse_folder
# The file format and its reader live in proposal_file.py; re-exported for the callers here.
from detect.proposals.proposal_file import FORMAT, METADATA_KEY, VERSION, ProposalFile, load_proposals  # noqa: F401
from detect.proposals.selective_search import check_settings, selective_search

logger = logging.getLogger(__name__)

_SETTINGS_FILE = "settings.json"
_TMP_PREFIX = ".tmp-"


def compute_proposals(dataset, out_path, mode="fast", max_side=500, max_proposals=2000,
                      workers=None, progress=True, min_size=4):
    """Selective search over every record of `dataset`, stored in one .npz at `out_path`.

    Args:
        dataset: a Dataset (records with unique image_id, path, file_name, width, height).
        out_path: the .npz file to write (folders are created).
        mode, max_side, max_proposals, min_size: passed to `selective_search`.
        workers: worker processes (None: os.cpu_count()); 1 runs in this process.
        progress: show a tqdm progress bar.

    Returns:
        out_path.

    Raises:
        DetectError: existing parts or an existing `out_path` were made with other
            settings or for other images under the same id; an image cannot be read or
            its size differs from the record's.
    """
    out_path = os.fspath(out_path)
    refuse_folder(out_path)
    settings = _settings(mode, max_side, max_proposals, min_size)
    records = _unique_records(dataset)
    parts_dir = out_path + ".parts"
    previous = _previous_images(out_path, settings)
    os.makedirs(parts_dir, exist_ok=True)
    parts = _finished_parts(parts_dir)
    _claim_parts_dir(parts_dir, settings, has_parts=bool(parts))
    for record in records:
        found = parts.get(record.image_id) or previous.get(record.image_id)
        if found is not None:
            _check_same_image(record, found, out_path)
    todo = [r for r in records if r.image_id not in parts and r.image_id not in previous]
    if todo:
        _run(todo, parts_dir, settings, workers, progress, done=len(records) - len(todo))
        parts = _finished_parts(parts_dir)
    if parts or not os.path.exists(out_path):
        _merge(out_path, parts_dir, parts, settings)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return out_path


def _settings(mode, max_side, max_proposals, min_size):
    check_settings(mode, max_side, max_proposals, min_size)
    return {
        "mode": mode,
        "max_side": int(max_side),
        "max_proposals": None if max_proposals is None else int(max_proposals),
        "min_size": float(min_size),
    }


def _unique_records(dataset):
    seen = {}
    for record in dataset.records:
        image_id = int(record.image_id)
        if image_id in seen:
            raise DetectError(
                f"image id {image_id} is used by both {seen[image_id]} and {record.file_name}"
            )
        seen[image_id] = record.file_name
    return list(dataset.records)


def _describe(settings):
    return ", ".join(f"{key}={value}" for key, value in settings.items())


def _claim_parts_dir(parts_dir, settings, has_parts):
    """Write settings.json into the parts folder, or check it matches existing parts."""
    path = os.path.join(parts_dir, _SETTINGS_FILE)
    if not has_parts:
        # Nothing finished yet (or a run failed on its first image): any settings may start.
        with atomic_write(path) as f:
            json.dump(settings, f)
        return
    try:
        with open(path, encoding="utf-8") as f:
            existing = json.load(f)
    except (OSError, ValueError) as error:
        raise DetectError(f"unreadable {display_name(path)}: {error}") from None
    if existing != settings:
        raise DetectError(
            f"unfinished proposals in {display_name(parts_dir)} were computed with "
            f"{_describe(existing)}, not {_describe(settings)}: rerun with those settings "
            f"or delete the folder"
        )


def _previous_images(out_path, settings):
    """{image_id: (file_name, width, height)} of an earlier out_path with the same settings."""
    if not os.path.exists(out_path):
        return {}
    with load_proposals(out_path) as previous:
        if previous.settings != settings:
            raise DetectError(
                f"{display_name(out_path)} was computed with {_describe(previous.settings)}, "
                f"not {_describe(settings)}: delete it or choose another output file"
            )
        return {image_id: tuple(previous.image_info(image_id)) for image_id in previous.image_ids}


def _finished_parts(parts_dir):
    """{image_id: (file_name, width, height)} of the complete part files in parts_dir.

    Stale temp files from a killed run are removed; an unreadable part is removed too (and
    recomputed) with a warning.
    """
    parts = {}
    for name in os.listdir(parts_dir):
        path = os.path.join(parts_dir, name)
        if name.startswith(_TMP_PREFIX):
            os.remove(path)
            continue
        stem, ext = os.path.splitext(name)
        if ext != ".npz" or not stem.lstrip("-").isdigit():
            continue
        try:
            parts[int(stem)] = _read_part(path)[1]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            logger.warning("removing unreadable proposal part %s: %s", display_name(path), error)
            os.remove(path)
    return parts


def _read_part(path):
    with np.load(path, allow_pickle=False) as part:
        boxes = part["boxes"]
        info = (str(part["file_name"]), int(part["width"]), int(part["height"]))
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes have shape {boxes.shape}")
    return boxes, info


def _check_same_image(record, info, out_path):
    expected = (record.file_name, int(record.width), int(record.height))
    if tuple(info) != expected:
        raise DetectError(
            f"image id {record.image_id}: proposals for {display_name(out_path)} were "
            f"computed for {info[0]} ({info[1]}x{info[2]}), but the dataset has "
            f"{expected[0]} ({expected[1]}x{expected[2]}); use another output file"
        )


def _run(records, parts_dir, settings, workers, progress, done):
    from tqdm import tqdm

    tasks = [
        (int(r.image_id), r.path, r.file_name, int(r.width), int(r.height), parts_dir, settings)
        for r in records
    ]
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    workers = max(1, min(workers, len(tasks)))
    bar = tqdm(total=done + len(tasks), initial=done, disable=not progress,
               desc="selective search", unit="img")
    with bar:
        if workers == 1:
            for task in tasks:
                _compute_part(task)
                bar.update(1)
            return
        context = multiprocessing.get_context("spawn")
        with _main_module_hidden():
            pool = context.Pool(workers, initializer=_init_worker)
        with pool:
            for _ in pool.imap_unordered(_compute_part, tasks, chunksize=1):
                bar.update(1)


@contextlib.contextmanager
def _main_module_hidden():
    """Start spawned processes without re-importing the caller's main script.

    A spawned child normally imports the parent's `__main__` file first; a script that
    imports TensorFlow at the top would then load it into every worker. The workers only
    need this module, so the main module is swapped for an empty one while they start.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _init_worker():
    import cv2

    # One search per process: OpenCV's own threads would only compete with the other workers.
    cv2.setNumThreads(1)


def _compute_part(task):
    """Selective search on one image; writes <parts_dir>/<image_id>.npz atomically."""
    image_id, path, file_name, width, height, parts_dir, settings = task
    image = read_image(path)
    if image.shape[:2] != (height, width):
        raise DetectError(
            f"{display_name(path)} is {image.shape[1]}x{image.shape[0]} pixels but its "
            f"annotation says {width}x{height}"
        )
    boxes = selective_search(
        image, mode=settings["mode"], max_side=settings["max_side"],
        max_proposals=settings["max_proposals"], min_size=settings["min_size"],
    )
    tmp = os.path.join(parts_dir, f"{_TMP_PREFIX}{image_id}-{uuid.uuid4().hex}.npz")
    with open(tmp, "xb") as f:
        np.savez(f, boxes=boxes, file_name=np.array(file_name), width=np.array(width),
                 height=np.array(height))
    os.replace(tmp, os.path.join(parts_dir, f"{image_id}.npz"))
    return image_id


def _merge(out_path, parts_dir, parts, settings):
    """Write earlier out_path entries + parts into a new out_path (temp file + os.replace).

    Arrays are streamed one by one into the zip, so memory stays at one image's boxes.
    """
    images = {}
    tmp = os.path.join(parts_dir, f"{_TMP_PREFIX}merge-{uuid.uuid4().hex}.npz")
    with zipfile.ZipFile(tmp, "x", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as out:
        if os.path.exists(out_path):
            with load_proposals(out_path) as previous:
                for image_id in previous.image_ids:
                    if image_id not in parts:
                        _write_member(out, str(image_id), previous.get(image_id))
                        images[str(image_id)] = list(previous.image_info(image_id))
        for image_id in sorted(parts):
            boxes, info = _read_part(os.path.join(parts_dir, f"{image_id}.npz"))
            _write_member(out, str(image_id), boxes.astype(np.float32, copy=False))
            images[str(image_id)] = list(info)
        metadata = {"format": FORMAT, "version": VERSION, "settings": settings,
                    "images": images}
        _write_member(out, METADATA_KEY, np.array(json.dumps(metadata)))
    folder = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(folder, exist_ok=True)
    os.replace(tmp, out_path)


def _write_member(archive, key, array):
    with archive.open(key + ".npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def write_proposals(path, dataset, boxes_by_image, settings, compress=False):
    """Stream (image_id, (P, 4) xyxy original pixels) pairs into a proposal file at `path`.

    The file has the format `compute_proposals` writes, so `load_proposals` and the
    pipeline read it one image at a time; memory stays at one image's boxes.

    Args:
        dataset: the Dataset the image ids belong to (file name and size are recorded).
        boxes_by_image: iterable of (image_id, boxes); images it skips get no entry.
        settings: dict recorded as the file's settings (e.g. {"source": "rpn"}); its
            "max_proposals" defaults to the largest count written.
        compress: deflate the members (RPN boxes are float noise: little gain, much time).

    Returns:
        path.
    """
    path = os.fspath(path)
    info = {int(r.image_id): [r.file_name, int(r.width), int(r.height)] for r in dataset.records}
    images, largest = {}, 0
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "x", compression=method, allowZip64=True) as out:
        for image_id, boxes in boxes_by_image:
            boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            _write_member(out, str(int(image_id)), boxes)
            images[str(int(image_id))] = info[int(image_id)]
            largest = max(largest, len(boxes))
        settings = {"max_proposals": largest, **settings}
        metadata = {"format": FORMAT, "version": VERSION, "settings": settings, "images": images}
        _write_member(out, METADATA_KEY, np.array(json.dumps(metadata)))
    return path
