"""Make docs/report.png: a report.html of synthetic detections on the shapes dataset.

The detections are the validation ground truth perturbed the way detectors err (loose or
tight boxes, some relabelled, duplicated or missed, plus background boxes), so every
section of the report has something to show without a trained model. Needs Debian's
chromium.

    .venv/bin/python scripts/report_screenshot.py [--out docs/report.png] [--work /tmp/report-demo]
"""

import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
from click.testing import CliRunner

from detect.cli import main
from detect.data.shapes import generate_shapes


def synthetic_detections(gt, seed=0):
    """COCO results derived from a COCO gt dict (see the module docstring)."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    sizes = {image["id"]: (image["width"], image["height"]) for image in gt["images"]}
    dets = []
    for ann in gt["annotations"]:
        if rng.random() < 0.15:
            continue  # missed
        x, y, w, h = ann["bbox"]
        for _ in range(1 + int(rng.random() < 0.15)):  # sometimes a duplicate
            jitter = rng.normal(0, rng.choice([0.04, 0.25]), size=4) * [w, h, w, h]
            cat = ann["category_id"] if rng.random() < 0.85 else int(rng.choice(cat_ids))
            dets.append({"image_id": ann["image_id"], "category_id": cat,
                         "bbox": [float(x + jitter[0]), float(y + jitter[1]), float(max(2, w + jitter[2])),
                                  float(max(2, h + jitter[3]))], "score": float(rng.uniform(0.3, 1.0))})
    for image_id, (width, height) in sizes.items():
        for _ in range(int(rng.integers(0, 2))):
            w, h = rng.uniform(10, 40, size=2)
            dets.append({"image_id": image_id, "category_id": int(rng.choice(cat_ids)),
                         "bbox": [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)),
                                  float(w), float(h)], "score": float(rng.uniform(0.05, 0.8))})
    return dets


def main_script():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/report.png")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "report-demo"))
    args = parser.parse_args()
    generate_shapes(os.path.join(args.work, "shapes"), num_images=120, image_size=128, seed=0, progress=False)
    annotations = os.path.join(args.work, "shapes", "annotations", "val.json")
    with open(annotations, encoding="utf-8") as f:
        gt = json.load(f)
    detections = os.path.join(args.work, "detections.json")
    with open(detections, "w", encoding="utf-8") as f:
        json.dump(synthetic_detections(gt), f)
    result = CliRunner().invoke(main, ["evaluate", "--detections", detections, "--annotations", annotations,
                                       "--images", os.path.join(args.work, "shapes", "images"),
                                       "--out", os.path.join(args.work, "eval")])
    print(result.output)
    report = os.path.join(args.work, "eval", "report.html")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", f"--user-data-dir={os.path.join(args.work, 'chromium')}",
                    f"--screenshot={os.path.abspath(args.out)}", "--window-size=1280,2400",
                    "file://" + os.path.abspath(report)], check=True, capture_output=True)
    print(f"screenshot written to {args.out}")


if __name__ == "__main__":
    main_script()
