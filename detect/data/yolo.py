"""YOLO txt labels (ultralytics and darknet layouts) -> Dataset.

A label file holds one object a line, `class cx cy w h`, with the class index 0-based and
the centre, width and height normalized by the image size, so in pixels
x1 = (cx - w / 2) * W, x2 = (cx + w / 2) * W (and the same for y with H). A segmentation
line `class x1 y1 x2 y2 ...` (a polygon, normalized) is reduced to its bounding box and
counted; the polygon, in pixels, is kept as the object's mask (detect/data/masks.py). An
image without a label file, or with an empty one, is a negative. `write_yolo` writes an
object with a mask as a segmentation line (its polygons' outer contour, the first polygon).

Layouts:
    ultralytics: a data.yaml with `names` (a list, or a dict {index: name}), an optional
        `path` (the dataset root; relative to the yaml's folder) and `train` / `val` /
        `test`, each a folder of images, an image-list .txt, or a list of those, relative
        to the root (a yaml without them: the images/ folder beside it). The folder that
        holds data.yaml is accepted in its place; a yaml with one split needs no `split`.
        The label of .../images/.../x.jpg is .../labels/.../x.txt (the last `images`
        folder of the path swapped for `labels`).
    darknet: labels beside the images (x.jpg + x.txt); the annotations are an image folder
        or an image-list .txt, and the class names come from a names file (`--classes`).
"""

import os

import numpy as np
import yaml

from detect.data.images import image_size
from detect.data.records import Dataset, Record
from detect.errors import DetectError
from detect.io import read_text

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
POLYGONS = "polygons reduced to their bounding box"


def load_yolo(annotations, split=None, classes=None):
    """Read a YOLO dataset into an unvalidated Dataset.

    Args:
        annotations: a data.yaml (ultralytics), or an image folder / image-list .txt
            (darknet: labels beside the images).
        split: data.yaml only: the key to read (train, val or test).
        classes: class names (label k = classes[k - 1] = class index k - 1); required for
            the darknet layout, and when given with a data.yaml it must match `names`.

    Returns:
        Dataset with one Record per image (sorted paths for folders, listed order for
        .txt lists), image ids 1.., sizes from the image headers, file_names relative to
        the dataset root (ultralytics) or the annotations folder (darknet).
    """
    if not os.path.exists(annotations):
        raise DetectError(f"YOLO data.yaml, image folder or image list not found: {annotations}")
    annotations = _data_yaml_in(annotations) or annotations
    if annotations.lower().endswith((".yaml", ".yml")):
        root, sources, names = _read_data_yaml(annotations, split)
        if classes is not None and list(classes) != names:
            raise DetectError(f"{annotations}: names {names} differ from the class list {list(classes)}")
        classes = names
    else:
        if classes is None:
            raise DetectError(
                f"{annotations}: a darknet-layout YOLO dataset needs its class names "
                "(--classes FILE, one name a line, or dataset.classes)"
            )
        sources = [os.path.abspath(annotations)]
        root = sources[0] if os.path.isdir(sources[0]) else os.path.dirname(sources[0])
    image_paths = [path for source in sources for path in _image_paths(source)]
    records, polygons = [], 0
    for image_id, path in enumerate(image_paths, start=1):
        width, height = image_size(path)
        boxes, labels, masks = _read_labels(label_path(path), width, height, len(classes))
        reduced = sum(mask is not None for mask in masks)
        polygons += reduced
        file_name = os.path.relpath(path, root).replace(os.sep, "/")
        records.append(Record(image_id, file_name, path, width, height, boxes, labels,
                              masks=masks if reduced else None))
    return Dataset(classes=list(classes), records=records, source=os.path.abspath(annotations),
                   notes={POLYGONS: polygons})


def _data_yaml_in(folder):
    """The data.yaml (or data.yml) directly inside `folder`, else None (a darknet image
    folder, or not a folder): a dataset folder is accepted wherever its data.yaml is."""
    if not os.path.isdir(folder):
        return None
    for name in ("data.yaml", "data.yml"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def label_path(image_path):
    """The label file of an image, or None: the path with its last /images/ swapped for
    /labels/ (ultralytics' rule) when that file exists, else the .txt beside the image
    (darknet's rule) when that exists."""
    for candidate in (_swapped_label_path(image_path), os.path.splitext(image_path)[0] + ".txt"):
        if os.path.isfile(candidate):
            return candidate
    return None


def _swapped_label_path(image_path):
    """.../images/<rest>.ext -> .../labels/<rest>.txt (the last images folder), or the .txt
    beside the image when the path has no images folder."""
    head, sep, tail = image_path.rpartition(f"{os.sep}images{os.sep}")
    swapped = f"{head}{os.sep}labels{os.sep}{tail}" if sep else image_path
    return os.path.splitext(swapped)[0] + ".txt"


def _read_data_yaml(path, split):
    """(root folder, [image folders or list files], class names) of an ultralytics yaml."""
    if not os.path.isfile(path):
        raise DetectError(f"YOLO data.yaml not found: {path}")
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as error:
        raise DetectError(f"{path}: invalid YAML: {error}") from None
    if not isinstance(data, dict):
        raise DetectError(f"{path}: expected a mapping with names and train/val")
    names = _names(data.get("names"), path)
    if "nc" in data and data["nc"] != len(names):
        raise DetectError(f"{path}: nc is {data['nc']} but names lists {len(names)} classes")
    splits = [key for key in ("train", "val", "test") if data.get(key)]
    root = os.path.join(os.path.dirname(os.path.abspath(path)), str(data.get("path") or ""))
    if not splits and split is None and os.path.isdir(os.path.join(root, "images")):
        # No split keys (supervision's as_yolo writes names only): images/ beside the yaml.
        return os.path.normpath(root), [os.path.normpath(os.path.join(root, "images"))], names
    if split is None and len(splits) == 1:
        split = splits[0]
    if split is None or split not in splits:
        given = "no split given" if split is None else f"no {split!r} entry"
        raise DetectError(f"{path}: {given}; choose one of {splits} (--split / dataset.<split>.split)")
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    sources = [os.path.normpath(os.path.join(root, str(entry))) for entry in entries]
    for source in sources:
        if not os.path.exists(source):
            raise DetectError(f"{path}: {split} folder or list not found: {source}")
    return os.path.normpath(root), sources, names


def _names(names, path):
    """Class names from a list, or a dict {0: name, 1: name, ...} with keys 0..K-1."""
    if isinstance(names, dict):
        try:
            indexed = {int(key): str(value) for key, value in names.items()}
        except (TypeError, ValueError):
            raise DetectError(f"{path}: names keys must be class indices 0, 1, ...") from None
        if sorted(indexed) != list(range(len(indexed))):
            raise DetectError(f"{path}: names keys must be 0..{len(indexed) - 1}, got {sorted(indexed)}")
        names = [indexed[i] for i in range(len(indexed))]
    if not isinstance(names, list) or not names:
        raise DetectError(f"{path}: names must be a non-empty list or dict of class names")
    names = [str(name) for name in names]
    if len(set(names)) != len(names):
        raise DetectError(f"{path}: duplicate class names in {names}")
    return names


def _image_paths(source):
    """Image paths of a folder (recursive, sorted) or of an image-list .txt (in order)."""
    if os.path.isdir(source):
        found = []
        for folder, dirs, files in os.walk(source):
            dirs.sort()
            found += [os.path.join(folder, f) for f in sorted(files)
                      if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise DetectError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {source}")
        return found
    if not os.path.isfile(source):
        raise DetectError(f"YOLO image folder or list not found: {source}")
    base = os.path.dirname(os.path.abspath(source))
    lines = [line.strip() for line in read_text(source).splitlines() if line.strip()]
    # Relative entries (also `./images/x.jpg`) are relative to the list file's folder.
    return [os.path.normpath(os.path.join(base, line)) for line in lines]


def _read_labels(path, width, height, num_classes):
    """(boxes (N, 4) xyxy pixels, labels (N,) 1..K, masks: a flat pixel polygon or None per
    box) of one label file."""
    if path is None:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), []
    boxes, labels, masks = [], [], []
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{line_number}"
        index, coords = _parse_line(fields, where)
        if not 0 <= index < num_classes:
            raise DetectError(
                f"{where}: class index {index} is outside 0..{num_classes - 1} ({num_classes} names)"
            )
        if len(coords) == 4:
            cx, cy, w, h = coords
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            masks.append(None)
        else:
            xs, ys = coords[0::2], coords[1::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
            masks.append([[float(v * (width if i % 2 == 0 else height)) for i, v in enumerate(coords)]])
        boxes.append(np.array(box, np.float64) * [width, height, width, height])
        labels.append(index + 1)
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int32), masks


def _parse_line(fields, where):
    """(class index, [normalized numbers]) of one label line."""
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        raise DetectError(
            f"{where}: expected `class cx cy w h` or a polygon `class x1 y1 x2 y2 x3 y3 ...`, "
            f"got {len(fields)} fields"
        )
    try:
        value = float(fields[0])
        coords = [float(v) for v in fields[1:]]
    except ValueError:
        raise DetectError(f"{where}: fields must be numbers: {' '.join(fields)}") from None
    if not value.is_integer():
        raise DetectError(f"{where}: class index must be an integer, got {fields[0]}")
    return int(value), coords


def write_yolo(dataset, out_dir, subset="train", image_mode="link"):
    """Write dataset in the ultralytics layout under out_dir.

    Writes out_dir/images/<subset>/<file_name> (linked or copied, see links.place_image),
    out_dir/labels/<subset>/<file_name stem>.txt (an empty file for a negative; the
    ultralytics path swap decides, see label_path) and
    out_dir/data.yaml with `names` as {index: name} (every class, used or not) and
    `<subset>: images/<subset>`; an existing data.yaml there gains the subset (its names
    must agree). No `path` key: ultralytics then takes the yaml's folder as the root.
    Crowd boxes (ignore regions, which YOLO cannot express) are left out and counted.

    Args:
        dataset: a validated Dataset; record.file_name is the image's relative name.
        out_dir: output folder. subset: split name. image_mode: "link" or "copy".

    Returns:
        number of crowd boxes left out.
    """
    from detect.data.links import place_image
    from detect.io import atomic_write

    yaml_path = os.path.join(out_dir, "data.yaml")
    data = _existing_yaml(yaml_path, dataset.classes)
    skipped = 0
    for record in dataset.records:
        name = _safe_relative(record.file_name, record.path)
        image_path = os.path.join(os.path.abspath(out_dir), "images", subset, name)
        place_image(record.path, image_path, image_mode)
        keep = ~record.iscrowd
        skipped += int(np.count_nonzero(~keep))
        masks = record.masks if record.masks is not None else [None] * len(record.boxes)
        lines = [_label_line(box, label, record.width, record.height, mask)
                 for box, label, mask, kept in zip(record.boxes, record.labels, masks, keep) if kept]
        # The label goes where readers look for it: names holding an images/ folder of
        # their own move the swap to that last images/ folder.
        with atomic_write(_swapped_label_path(image_path), fsync=False) as f:
            f.write("".join(lines))
    data[subset] = f"images/{subset}"
    with atomic_write(yaml_path) as f:
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
    return skipped


def _existing_yaml(path, classes):
    """The data.yaml dict to extend: the existing one (same names) or a new one."""
    names = {index: name for index, name in enumerate(classes)}
    if not os.path.isfile(path):
        return {"names": names}
    data = yaml.safe_load(read_text(path)) or {}
    if _names(data.get("names"), path) != list(classes):
        raise DetectError(f"{path} exists with other class names than {list(classes)}")
    data["names"] = names
    return data


def _safe_relative(file_name, path):
    """file_name when it stays inside its folder, else the image's base name."""
    name = os.path.normpath(file_name.replace("/", os.sep))
    if os.path.isabs(name) or name.startswith(os.pardir):
        return os.path.basename(path)
    return name


def _label_line(box, label, width, height, mask=None):
    """`index cx cy w h` normalized, for a (4,) xyxy pixel box and a label 1..K; with a
    compact mask, the segmentation line `index x1 y1 x2 y2 ...` of its largest polygon."""
    if mask is not None:
        from detect.data.masks import polygons_of

        polygons = polygons_of(mask, height, width)
        if polygons:
            polygon = max(polygons, key=len)
            values = [v / (width if i % 2 == 0 else height) for i, v in enumerate(polygon)]
            return f"{int(label) - 1} " + " ".join(f"{v:.6f}" for v in values) + "\n"
    x1, y1, x2, y2 = (float(v) for v in box)
    values = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
    return f"{int(label) - 1} " + " ".join(f"{v:.6f}" for v in values) + "\n"
