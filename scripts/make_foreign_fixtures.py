"""Write tests/fixtures/foreign/: one small COCO set, and the same set as supervision and
globox write it in YOLO, LabelMe and CVAT form (tests/data/test_foreign.py reads them).

supervision pulls opencv-python, which shadows the OpenCV contrib build detect needs, so
the tools live in a separate virtual environment, never in the project's .venv:

    python3 -m venv /tmp/venv-fmt
    /tmp/venv-fmt/bin/pip install supervision globox
    /tmp/venv-fmt/bin/python scripts/make_foreign_fixtures.py

supervision writes YOLO only (DetectionDataset.as_yolo: images/, labels/, data.yaml with
names and nc); globox writes YOLO (labels only, save_yolo_v5), LabelMe (save_labelme) and
CVAT (save_cvat). Where a tool writes annotations only, this script copies the images where
the format expects them and writes the names file globox takes as label_to_id. The tool
versions go to foreign/VERSIONS.
"""

import json
import os
import shutil

from PIL import Image, ImageDraw

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "foreign")
SOURCE = os.path.join(ROOT, "source")
# Category ids with gaps, names with a space and a non-ASCII letter; every class is used.
CATEGORIES = [(5, "traffic light"), (9, "café"), (11, "dog")]
# file name -> (width, height, [(category id, [x, y, w, h])]); né.png is a negative.
IMAGES = {
    "a.png": (64, 48, [(5, [10.5, 5.0, 20.0, 15.25]), (9, [0.0, 0.0, 12.0, 48.0])]),
    "b c.jpg": (80, 60, [(9, [40.25, 30.0, 30.5, 20.0]), (11, [1.0, 2.0, 3.5, 4.0]), (5, [60, 0, 20, 60])]),
    "né.png": (30, 20, []),
    "d.jpg": (50, 50, [(11, [5.0, 5.0, 40.0, 40.0])]),
}


def write_source():
    """source/images/* and source/annotations/instances.json (written here, by hand)."""
    images, annotations = [], []
    for image_id, (name, (width, height, boxes)) in enumerate(IMAGES.items(), start=1):
        image = Image.new("RGB", (width, height), (30 * image_id, 110, 170))
        ImageDraw.Draw(image).rectangle([width // 4, height // 4, width // 2, height // 2], fill=(240, 200, 40))
        path = os.path.join(SOURCE, "images", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image.save(path, **({"quality": 85} if name.endswith(".jpg") else {}))
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for cat_id, bbox in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id,
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in CATEGORIES]}
    path = os.path.join(SOURCE, "annotations", "instances.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
    return path


def copy_images(folder):
    os.makedirs(folder, exist_ok=True)
    for name in IMAGES:
        shutil.copy2(os.path.join(SOURCE, "images", name), os.path.join(folder, name))


def main():
    import globox
    import supervision as sv

    shutil.rmtree(ROOT, ignore_errors=True)
    coco = write_source()

    dataset = sv.DetectionDataset.from_coco(os.path.join(SOURCE, "images"), coco)
    out = os.path.join(ROOT, "supervision_yolo")
    dataset.as_yolo(os.path.join(out, "images"), os.path.join(out, "labels"), os.path.join(out, "data.yaml"))

    annotations = globox.AnnotationSet.from_coco(coco)
    label_to_id = {name: index for index, (_, name) in enumerate(CATEGORIES)}
    out = os.path.join(ROOT, "globox_yolo")
    annotations.save_yolo_v5(out, label_to_id=label_to_id)
    copy_images(out)
    with open(os.path.join(out, "obj.names"), "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for _, name in CATEGORIES))

    out = os.path.join(ROOT, "globox_labelme")
    annotations.save_labelme(out)
    copy_images(out)

    out = os.path.join(ROOT, "globox_cvat")
    os.makedirs(out, exist_ok=True)
    annotations.save_cvat(os.path.join(out, "annotations.xml"))
    copy_images(os.path.join(out, "images"))

    from importlib.metadata import version

    with open(os.path.join(ROOT, "VERSIONS"), "w", encoding="utf-8") as f:
        f.write(f"supervision {version('supervision')}\nglobox {version('globox')}\n"
                "written by scripts/make_foreign_fixtures.py\n")
    print(f"foreign fixtures written to {ROOT}")


if __name__ == "__main__":
    main()
