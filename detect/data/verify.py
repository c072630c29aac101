"""`detect data inspect --verify`: decode every image of a dataset, list those that fail.

Loading a dataset reads image headers only, so a truncated JPEG passes `inspect` and is
only met during training. Verification decodes every pixel with the reader training uses
(images.read_image: truncated files are never half-accepted) and checks that the decoded
size, EXIF orientation applied, is the annotations' width x height, in parallel threads (PIL's
decoders release the GIL), with a progress bar on a terminal.
"""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from detect.data.images import read_image
from detect.errors import DetectError


def _problem(path, width, height):
    """None when the image at `path` decodes to the annotations' (width, height), else the
    one-line reason (names the file). A size that disagrees means the header and the
    decoder read the EXIF orientation differently, or the file changed since loading."""
    try:
        shape = read_image(path).shape
    except DetectError as error:
        return str(error)
    except MemoryError:
        return f"out of memory while decoding {path}"
    if (shape[1], shape[0]) != (width, height):
        return (f"{path}: decodes to {shape[1]}x{shape[0]} (WxH, EXIF orientation applied) but the "
                f"annotations say {width}x{height}")
    return None


def verify_images(dataset, workers=None, progress=True):
    """Decode every image of `dataset` once.

    Args:
        dataset: a Dataset; each distinct record path is decoded once.
        workers: decoding threads (default: the CPU count, at most 8).
        progress: show a tqdm bar on stderr when it is a terminal.

    Returns:
        (checked, problems): the number of distinct images and a list of
        (path, reason) for those that do not decode, in dataset order.
    """
    sizes = {}
    for record in dataset.records:
        sizes.setdefault(record.path, (record.width, record.height))
    paths = list(sizes)
    workers = workers or min(8, os.cpu_count() or 1)
    problems = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda path: _problem(path, *sizes[path]), paths)
        bar = tqdm(results, total=len(paths), desc="decoding images", unit="img", file=sys.stderr,
                   disable=None if progress else True, leave=False)
        for path, reason in zip(paths, bar):
            if reason is not None:
                problems.append((path, reason))
    return len(paths), problems


def format_problems(checked, problems):
    """The report lines of verify_images' result (one line per undecodable file)."""
    if not problems:
        return f"all {checked} images decode"
    lines = [f"{len(problems)} of {checked} images do not decode:"]
    lines += [f"  {reason}" for _, reason in problems]
    return "\n".join(lines)
