"""keras-retinanet CSV -> Dataset.

One line per box, `path,x1,y1,x2,y2,class_name`, and `path,,,,,` for an image without
boxes. Coordinates are absolute pixels taken as given (x2/y2 are continuous right/bottom
edges). Relative paths are relative to the CSV file's folder. An optional class-mapping
CSV `class_name,id` fixes the label order (ascending id); without it the classes are the
sorted unique names.
"""

import csv
import logging
import os

import numpy as np

from detect.data.images import image_size
from detect.data.records import Dataset, Record
from detect.errors import DetectError

logger = logging.getLogger(__name__)


def load_csv(path, classes_path=None, images_dir=None):
    """Read a keras-retinanet CSV into an unvalidated Dataset.

    Args:
        path: the annotations CSV.
        classes_path: optional class-mapping CSV (`name,id` per line).
        images_dir: folder relative image paths are taken from (default: the CSV's folder).

    Returns:
        Dataset with one Record per distinct image path (first-appearance order, image ids
        1..); width/height are read from the image headers.
    """
    images = _group_rows(path)
    if classes_path is not None:
        classes = _read_class_mapping(classes_path)
    else:
        classes = sorted({name for _, objects in images.values() for _, name, _ in objects})
    label_of = {name: label for label, name in enumerate(classes, start=1)}
    base = os.path.abspath(images_dir or os.path.dirname(os.path.abspath(path)))

    records = []
    for image_id, (file_name, (first_line, objects)) in enumerate(images.items(), start=1):
        for _, name, line in objects:
            if name not in label_of:
                raise DetectError(
                    f"{path}:{line}: class {name!r} is not in {classes_path} ({classes})"
                )
        image_path = os.path.abspath(os.path.join(base, file_name))
        width, height = _image_size(image_path, f"{path}:{first_line}")
        records.append(
            Record(
                image_id=image_id,
                file_name=file_name,
                path=image_path,
                width=width,
                height=height,
                boxes=[box for box, _, _ in objects],
                labels=[label_of[name] for _, name, _ in objects],
            )
        )
    return Dataset(classes=classes, records=records, source=os.path.abspath(path))


def _group_rows(path):
    """{file_name: (first line, [(box (4,) xyxy, class name, line)])} in file order."""
    images = {}
    for line, row in _read_rows(path, 6, "path,x1,y1,x2,y2,class_name", numeric=(1, 2, 3, 4)):
        file_name = row[0].strip()
        if not file_name:
            raise DetectError(f"{path}:{line}: empty image path")
        objects = images.setdefault(file_name, (line, []))[1]
        box = _box(row[1:5], path, line)
        name = row[5].strip()
        if box is None and name:
            raise DetectError(f"{path}:{line}: class {name!r} given without a box")
        if box is not None:
            if not name:
                raise DetectError(f"{path}:{line}: box without a class name")
            objects.append((box, name, line))
    return images


def _image_size(image_path, where):
    """(width, height) from the header; errors also name the CSV line (`where`)."""
    if not os.path.exists(image_path):
        raise DetectError(f"image not found: {image_path} ({where})")
    try:
        return image_size(image_path)
    except DetectError as error:
        raise DetectError(f"{error} ({where})") from None


def _read_rows(path, columns, layout, numeric):
    """[(1-based line number, row)] of a CSV file; blank lines skipped.

    Files from Excel or pandas are read as written: a UTF-8 byte-order mark is dropped,
    CRLF line ends are accepted, and a first row whose `numeric` columns are all words
    (e.g. `path,x1,y1,x2,y2,class_name`) is a header row and skipped.
    """
    if not os.path.isfile(path):
        raise DetectError(f"CSV file not found: {path}")
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if not rows and _is_header(row, numeric):
                    logger.info("%s:%d: header row skipped: %s", path, reader.line_num, ",".join(row))
                    rows.append(None)
                    continue
                if len(row) != columns:
                    raise DetectError(
                        f"{path}:{reader.line_num}: expected {columns} columns "
                        f"({layout}), got {len(row)}"
                    )
                rows.append((reader.line_num, row))
    except (csv.Error, UnicodeDecodeError) as error:
        raise DetectError(f"{path}: cannot parse CSV: {error}") from None
    return [row for row in rows if row is not None]


# A class mapping's one number column is a header only with one of these names ("dog,zero"
# stays an error); the four coordinate columns of an annotations row are a header when all
# four are words.
_ID_HEADERS = {"id", "class_id", "classid", "label_id", "index", "idx", "label"}


def _is_header(row, numeric):
    """True when every cell of the `numeric` columns is present and not a number."""
    cells = [row[i].strip() for i in numeric if i < len(row)]
    if len(cells) != len(numeric):
        return False
    if len(cells) == 1 and cells[0].lower() not in _ID_HEADERS:
        return False
    for cell in cells:
        try:
            float(cell)
            return False
        except ValueError:
            if not cell:
                return False
    return True


def _box(cells, path, line):
    """(4,) float32 xyxy, or None for the all-empty negative-image line."""
    cells = [cell.strip() for cell in cells]
    if not any(cells):
        return None
    try:
        return np.array([float(cell) for cell in cells], np.float32)
    except ValueError:
        raise DetectError(
            f"{path}:{line}: x1,y1,x2,y2 must be numbers, got {','.join(cells)}"
        ) from None


def _read_class_mapping(path):
    """Class names ordered by their mapping id."""
    entries, names, ids = [], set(), set()
    for line, (name, class_id) in _read_rows(path, 2, "class_name,id", numeric=(1,)):
        name = name.strip()
        try:
            class_id = int(class_id)
        except ValueError:
            raise DetectError(
                f"{path}:{line}: class id must be an integer, got {class_id!r}"
            ) from None
        if not name:
            raise DetectError(f"{path}:{line}: empty class name")
        if name in names or class_id in ids:
            raise DetectError(f"{path}:{line}: duplicate class name or id ({name},{class_id})")
        names.add(name)
        ids.add(class_id)
        entries.append((class_id, name))
    if not entries:
        raise DetectError(f"{path}: no classes")
    return [name for _, name in sorted(entries)]


def write_csv(dataset, path):
    """Write dataset as a keras-retinanet CSV plus its class mapping classes.csv beside it.

    Rows are `image,x1,y1,x2,y2,class_name` (image relative to the CSV's folder, absolute
    pixels as stored) and `image,,,,,` for a negative. classes.csv lists every class as
    `name,index` (0-based, keras-retinanet's convention), used by a box or not, so reading
    it back with the mapping restores the class list and its order. Crowd boxes (ignore
    regions, which the CSV cannot express) are left out.

    Returns:
        (path of the class mapping, number of crowd boxes left out).
    """
    from detect.io import atomic_write

    folder = os.path.dirname(os.path.abspath(path))
    mapping = os.path.join(folder, "classes.csv")
    if os.path.abspath(mapping) == os.path.abspath(path):
        raise DetectError(f"{path}: pick another name; classes.csv is written beside it")
    skipped = 0
    with atomic_write(path, encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        for record in dataset.records:
            image = _relative_or_absolute(record.path, folder)
            keep = ~record.iscrowd
            skipped += int(np.count_nonzero(~keep))
            if not keep.any():
                writer.writerow([image, "", "", "", "", ""])
            for box, label in zip(record.boxes[keep], record.labels[keep]):
                writer.writerow([image, *(f"{float(v):.4f}".rstrip("0").rstrip(".") for v in box),
                                 dataset.classes[int(label) - 1]])
    with atomic_write(mapping, encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerows([name, index] for index, name in enumerate(dataset.classes))
    return mapping, skipped


def _relative_or_absolute(path, folder):
    """path relative to folder when they share more than the file-system root, else absolute."""
    path = os.path.abspath(path)
    if os.path.dirname(os.path.commonpath([path, folder])) == os.path.commonpath([path, folder]):
        return path.replace(os.sep, "/")
    return os.path.relpath(path, folder).replace(os.sep, "/")
