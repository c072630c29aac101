"""Scale rehearsal: a COCO-sized dataset on disk, measured through the data path.

Generates (once, under --root):
  train: --images images (default 118287, COCO train2017) as real JPEG files whose
    headers carry COCO-like sizes (longer side mostly 640; 480x640, 427x640, ...;
    a quarter portrait), solid colours so each file is a few KB; 80 classes,
    Poisson(7.3) boxes per image; a proposal file with 2000 boxes per image.
  val: --eval-images images (default 5000) and a detections file of 100 detections each.
Then measures, each phase in a fresh process (peak RSS = that process's ru_maxrss):
  startup 1 / 2: load + validate the train split (header cache cold, then warm);
  faster_rcnn / fast_rcnn: the training input pipeline (600 / 1000, batch 2, flip;
    Fast R-CNN with 2000 proposals per image read from the proposal file): time to the
    first batch and input images/s over --seconds;
  evaluate: `detect evaluate --detections` work (COCO + VOC metrics, report) on the val set.
Prints a markdown table and writes it with the raw numbers to ROOT/results.json.

    python scripts/scale_rehearsal.py --root /work/scale [--images 118287] [--seconds 60]
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import types

import numpy as np

NUM_CLASSES = 80
BOXES_PER_IMAGE = 7.3
PROPOSALS = 2000
# (shorter side, share) for images whose longer side is 640 (~94% of COCO), and the
# share of portrait images; the rest have a longer side of 300..639.
SHORT_SIDES = [(480, 0.42), (427, 0.22), (426, 0.05), (428, 0.05), (360, 0.04), (640, 0.03), (512, 0.03)]
PORTRAIT = 0.25


def coco_sizes(rng, n):
    """(n, 2) int (width, height) with a COCO-like distribution."""
    sides, shares = zip(*SHORT_SIDES)
    other = 1.0 - sum(shares)
    choice = rng.choice(len(sides) + 1, size=n, p=list(shares) + [other])
    long_side = np.where(choice < len(sides), 640, rng.integers(300, 640, n))
    short = np.array(list(sides) + [0])[choice]
    random_short = (long_side * rng.uniform(0.5, 1.0, n)).astype(int)
    short = np.where(choice < len(sides), short, random_short)
    portrait = rng.random(n) < PORTRAIT
    width = np.where(portrait, short, long_side)
    height = np.where(portrait, long_side, short)
    return np.stack([width, height], 1).astype(int)


def jpeg_bytes(width, height, cache):
    """A solid-colour JPEG of width x height (encoded once per size)."""
    key = (int(width), int(height))
    if key not in cache:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        colour = tuple(int(c) for c in np.random.default_rng(key).integers(0, 256, 3))
        Image.new("RGB", key, colour).save(buffer, format="JPEG", quality=75)
        cache[key] = buffer.getvalue()
    return cache[key]


def random_boxes(rng, count, width, height):
    """(count, 4) float32 xyxy boxes inside a width x height image, at least 2 px a side."""
    x = np.sort(rng.uniform(0, width, (count, 2)), axis=1)
    y = np.sort(rng.uniform(0, height, (count, 2)), axis=1)
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)
    boxes[:, 2] = np.maximum(boxes[:, 2], np.minimum(boxes[:, 0] + 2, width))
    boxes[:, 3] = np.maximum(boxes[:, 3], np.minimum(boxes[:, 1] + 2, height))
    return boxes.astype(np.float32)


def write_split(root, name, n, seed, proposals):
    """Images, COCO json and (optionally) a proposal file of one split; returns its paths."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "images", name)
    os.makedirs(folder, exist_ok=True)
    sizes, cache, images, annotations = coco_sizes(rng, n), {}, [], []
    for i, (w, h) in enumerate(tqdm(sizes, desc=f"{name} images", unit="img"), start=1):
        file_name = f"{name}/{i:012d}.jpg"
        with open(os.path.join(root, "images", file_name), "wb") as f:
            f.write(jpeg_bytes(w, h, cache))
        images.append({"id": i, "file_name": file_name, "width": int(w), "height": int(h)})
        for box in random_boxes(rng, rng.poisson(BOXES_PER_IMAGE), w, h):
            x1, y1, x2, y2 = (round(float(v), 2) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i, "iscrowd": 0,
                                "category_id": int(rng.integers(1, NUM_CLASSES + 1)),
                                "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                                "area": round((x2 - x1) * (y2 - y1), 2)})
    categories = [{"id": k, "name": f"class{k}"} for k in range(1, NUM_CLASSES + 1)]
    ann_path = os.path.join(root, f"{name}.json")
    with open(ann_path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    out = {"annotations": ann_path, "images": os.path.join(root, "images")}
    if proposals:
        out["proposals"] = write_proposal_file(root, name, images, rng)
    return out


def write_proposal_file(root, name, images, rng):
    from tqdm import tqdm

    from detect.proposals.cache import write_proposals

    records = [types.SimpleNamespace(image_id=e["id"], file_name=e["file_name"], width=e["width"],
                                     height=e["height"]) for e in images]
    items = ((r.image_id, random_boxes(rng, PROPOSALS, r.width, r.height))
             for r in tqdm(records, desc=f"{name} proposals", unit="img"))
    path = os.path.join(root, f"{name}_proposals.npz")
    return write_proposals(path, types.SimpleNamespace(records=records), items, {"source": "rehearsal"})


def write_detections(root, val_json, per_image, seed):
    rng = np.random.default_rng(seed)
    with open(val_json) as f:
        images = json.load(f)["images"]
    detections = []
    for image in images:
        for box in random_boxes(rng, per_image, image["width"], image["height"]):
            x1, y1, x2, y2 = (round(float(v), 2) for v in box)
            detections.append({"image_id": image["id"], "category_id": int(rng.integers(1, NUM_CLASSES + 1)),
                               "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                               "score": round(float(rng.random()), 4)})
    path = os.path.join(root, "val_detections.json")
    with open(path, "w") as f:
        json.dump(detections, f)
    return path


def generate(root, images, eval_images, seed=0):
    """The dataset under root (reused when a previous run made the same sizes)."""
    marker = os.path.join(root, "dataset.json")
    wanted = {"images": images, "eval_images": eval_images, "seed": seed}
    if os.path.isfile(marker):
        with open(marker) as f:
            made = json.load(f)
        if made["wanted"] == wanted:
            return made["paths"]
    shutil.rmtree(root, ignore_errors=True)
    start = time.monotonic()
    paths = {"train": write_split(root, "train", images, seed, proposals=True),
             "val": write_split(root, "val", eval_images, seed + 1, proposals=False)}
    paths["detections"] = write_detections(root, paths["val"]["annotations"], 100, seed + 2)
    paths["generate_seconds"] = round(time.monotonic() - start, 1)
    with open(marker, "w") as f:
        json.dump({"wanted": wanted, "paths": paths}, f)
    return paths


def config_for(paths, detector):
    from detect.config import from_dict

    return from_dict({
        "detector": detector,
        "backbone": {"name": "vgg16"},
        "dataset": {"format": "coco", "train": {k: paths["train"][k] for k in ("annotations", "images")}},
        "input": {"min_size": 600, "max_size": 1000, "flip": True},
        "proposals": {"train": paths["train"]["proposals"], "max_proposals": PROPOSALS},
        "training": {"batch_size": 2},
    })


def phase_startup(paths, args):
    from detect.data.splits import load_split

    start = time.monotonic()
    dataset = load_split(config_for(paths, "faster_rcnn"), "train")
    return {"seconds": time.monotonic() - start, "images": len(dataset)}


def phase_pipeline(paths, args, detector):
    from detect.data.splits import load_split, pipeline

    config = config_for(paths, detector)
    start = time.monotonic()
    dataset = load_split(config, "train")
    loaded = time.monotonic()
    iterator = iter(pipeline(config, dataset, training=True))
    batch = next(iterator)
    first = time.monotonic()
    images = 0
    while time.monotonic() - first < args.seconds:
        batch = next(iterator)
        images += int(batch["images"].shape[0])
    return {"load_seconds": loaded - start, "first_batch_seconds": first - loaded,
            "images_per_second": images / (time.monotonic() - first),
            "batch_shape": list(batch["images"].shape), "images": len(dataset)}


def phase_evaluate(paths, args):
    from detect.evaluation.report import evaluate_files

    start = time.monotonic()
    metrics = evaluate_files(paths["detections"], paths["val"]["annotations"], os.path.join(args.root, "eval"))
    return {"seconds": time.monotonic() - start, "AP": metrics["coco"]["AP"], "images": metrics["num_images"]}


PHASES = {
    "startup": phase_startup,
    "faster_rcnn": lambda paths, args: phase_pipeline(paths, args, "faster_rcnn"),
    "fast_rcnn": lambda paths, args: phase_pipeline(paths, args, "fast_rcnn"),
    "evaluate": phase_evaluate,
}


def run_child(args):
    """--phase NAME: run one phase in this process and print its result as JSON."""
    with open(os.path.join(args.root, "dataset.json")) as f:
        paths = json.load(f)["paths"]
    result = PHASES[args.phase](paths, args)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB -> GB
    print("RESULT " + json.dumps(result))


def run_phase(args, name, cache_dir, fresh_cache=False):
    if fresh_cache:
        shutil.rmtree(cache_dir, ignore_errors=True)
    env = {**os.environ, "DETECT_CACHE_DIR": cache_dir, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, os.path.abspath(__file__), "--root", args.root, "--phase", name,
               "--seconds", str(args.seconds)]
    start = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr[-4000:])
        return {"error": f"exit {done.returncode}", "wall_seconds": time.monotonic() - start}
    return {**json.loads(lines[-1][7:]), "wall_seconds": time.monotonic() - start}


def table(results, args):
    def gb(r):
        return f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else r.get("error", "")

    s1, s2 = results["startup_1"], results["startup_2"]
    rows = [
        ("start-up 1 (header cache cold)", f"{s1.get('seconds', 0):.1f} s", gb(s1)),
        ("start-up 2 (header cache warm)", f"{s2.get('seconds', 0):.1f} s", gb(s2)),
    ]
    for name in ("faster_rcnn", "fast_rcnn"):
        r = results[name]
        if "error" in r:
            rows.append((f"{name} input pipeline", r["error"], ""))
            continue
        rows.append((f"{name} input: first batch", f"{r['first_batch_seconds']:.1f} s", gb(r)))
        rows.append((f"{name} input: images/s", f"{r['images_per_second']:.1f}", gb(r)))
    e = results["evaluate"]
    rows.append((f"evaluate {args.eval_images} images x 100 detections", f"{e.get('seconds', 0):.0f} s", gb(e)))
    lines = ["| phase | time / rate | peak RSS (GB) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/scale_rehearsal")
    parser.add_argument("--images", type=int, default=118287)
    parser.add_argument("--eval-images", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=60.0, help="input pipeline measuring time")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.root = os.path.abspath(args.root)
    if args.phase:
        return run_child(args)
    paths = generate(args.root, args.images, args.eval_images)
    cache_dir = os.path.join(args.root, "cache")
    results = {"images": args.images, "generate_seconds": paths.get("generate_seconds")}
    results["startup_1"] = run_phase(args, "startup", cache_dir, fresh_cache=True)
    results["startup_2"] = run_phase(args, "startup", cache_dir)
    for name in ("faster_rcnn", "fast_rcnn", "evaluate"):
        results[name] = run_phase(args, name, cache_dir)
    text = table(results, args)
    with open(os.path.join(args.root, "results.json"), "w") as f:
        json.dump({**results, "table": text}, f, indent=2)
    print(text)
    print(f"results written to {os.path.join(args.root, 'results.json')}")


if __name__ == "__main__":
    main()
