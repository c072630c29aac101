"""Per-stage speed table of the R-CNN family: timings, FLOPs, markdown / CSV / bar chart.

Every detector runs on the same backbone and the same images, one image at a time
(batch 1), with random weights: speed does not depend on the weights. Each stage is its
own compiled function with a static input signature (a timers.Stage: tf.function on
TensorFlow, jax.jit on JAX, an eager no_grad call on PyTorch; it traces once), called
`warmup` times per image before `runs` timed passes over all images; a stage's time is
the median over the passes of the mean seconds per image. Model building and tracing
are never timed. The end-to-end time is one Stage around `model.predict_step`, which
is what a user of the model gets; for R-CNN and Fast R-CNN it reads precomputed
selective-search proposals (network only, as in the papers), and the time with selective
search is reported beside it.

Stages (columns): proposals (selective search for R-CNN / Fast R-CNN, RPN head +
proposal layer for Faster R-CNN), backbone (R-CNN: the CNN over every warped crop), RoI
head (RoI pooling + fc6/fc7 + predictor; R-CNN: SVM and regressor layers), postprocess
(decode, per-class NMS, top-k, rescale).

A detector's timing is a function in `TIMERS` (name -> timer, detect.benchmark.timers and rcnn_timers).
A timer takes a `BenchSetup` and returns a dict: `stages` {stage: seconds per image},
`end_to_end` seconds, `flops` {stage: FLOPs per image or None}, `end_to_end_flops`,
`flops_method`, `notes` (list of str). A timer raising ImportError or DetectError marks
the detector unavailable, as does a name missing from `TIMERS`.
"""

import copy
import dataclasses
import os

import keras
import numpy as np

from detect.benchmark.mask_timers import time_mask_rcnn
from detect.benchmark.rcnn_timers import time_rcnn
from detect.benchmark.report import STAGES, write_outputs
from detect.benchmark.timers import time_fast_rcnn, time_faster_rcnn, time_faster_rcnn_fpn
from detect.errors import DetectError
from detect.runtime import describe

# Detector name -> timer (detect.benchmark.timers, rcnn_timers).
# How each backend runs a stage (detect.benchmark.timers.Stage).
STAGE_COMPILER = {"tensorflow": "tf.function", "jax": "jax.jit", "torch": "eager call (no_grad)"}

TIMERS = {"rcnn": time_rcnn, "fast_rcnn": time_fast_rcnn, "faster_rcnn": time_faster_rcnn,
          "faster_rcnn_fpn": time_faster_rcnn_fpn, "mask_rcnn": time_mask_rcnn}

# Published test times per image, VGG16 on an Nvidia K40 (seconds). Faster R-CNN paper
# (Ren et al. 2015) Table 5 splits conv / proposal / region-wise time; its region-wise
# time (RoI pooling, fc layers, softmax, NMS) sits in the RoI head column.
PAPER = {
    "rcnn": {"total": 47.0, "stages": {}, "source": "Fast R-CNN paper, Table 4: R-CNN VGG16 test rate 47 s/img"},
    "fast_rcnn": {
        "total": 1.83, "stages": {"proposals": 1.51, "backbone": 0.146, "roi_head": 0.174},
        "source": "Faster R-CNN paper, Table 5: selective search 1.51 s (CPU) + Fast R-CNN 0.32 s",
    },
    "faster_rcnn": {
        "total": 0.198, "stages": {"proposals": 0.010, "backbone": 0.141, "roi_head": 0.047},
        "source": "Faster R-CNN paper, Table 5: RPN + Fast R-CNN, 0.198 s (5 fps)",
    },
}

# Model and input settings per backbone; any other backbone uses the paper's ("vgg16").
# Selective search as in the papers: fast mode on the image shrunk to 500 px, <= 2000 boxes.
# "model" holds config sections (detect.config keys) on top of the defaults.
_SEARCH = dict(mode="fast", max_side=500, max_proposals=2000)


def _model(anchor_sizes, channels, pre_nms, post_nms, head_dim):
    return {"backbone": {"width": 32},
            "rpn": {"anchor_sizes": list(anchor_sizes), "channels": channels, "pre_nms_top_n_test": pre_nms,
                    "post_nms_top_n_test": post_nms},
            "roi": {"pool": "align", "size": 7, "sampling_ratio": 2, "head_dim": head_dim}}


SETTINGS = {
    "vgg16": {"min_size": 600, "max_size": 1000, "proposals": _SEARCH,
              "model": _model((128, 256, 512), 512, 6000, 300, 4096),
        # R-CNN crops 224 px with 16 px context (configs/rcnn/base.yaml); 2000 VGG16 crops
        # take minutes per image on a CPU, so by default 64 are timed and scaled up.
        "rcnn": dict(backbone_width=32, crop_size=224, context=16, chunk_size=64, head_dim=4096),
        "max_rcnn_proposals": 64},
    "tiny": {"min_size": 128, "max_size": 128, "proposals": _SEARCH,
             "model": _model((16, 32, 64, 128), 256, 1000, 100, 256),
        "rcnn": dict(backbone_width=32, crop_size=48, context=6, chunk_size=256, head_dim=256),
        "max_rcnn_proposals": None},
}
# faster_rcnn_fpn (backbone `<name>_fpn`): detectron2 / torchvision R50-FPN test settings
# (anchors 32..512 one per level, 1000 boxes per level before NMS, 1000 proposals, 2-fc
# 1024); the tiny pyramid as configs/faster_rcnn/tiny_fpn_multiscale.yaml.
def _fpn_model(anchor_sizes, channels, pre_nms, post_nms, canonical_size):
    model = _model(anchor_sizes, channels, pre_nms, post_nms, 1024)
    model["fpn"] = {"channels": channels}
    model["roi"]["canonical_size"] = canonical_size
    return model


FPN_SETTINGS = {
    "tiny": _fpn_model((16, 32, 64, 128, 256), 64, 500, 100, 112.0),
    "default": _fpn_model((32, 64, 128, 256, 512), 256, 1000, 1000, 224.0),
}
CROP_BATCH_SIZES = (1, 8, 32, 128)

POOL_NAMES = {"align": "RoIAlign", "pool": "RoIPool"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclasses.dataclass
class BenchSetup:
    """What every timer shares: one backbone, one image list, one canvas.

    images: list of (H, W, 3) uint8 RGB; canvas_size: (Hc, Wc) padded canvas, a multiple
    of 32 holding every resized image; model_config: config sections (rpn, roi, backbone)
    of the two-stage models on top of detect.config's defaults; rcnn_kwargs: RCNN
    keyword arguments likewise; proposal_kwargs: selective_search keyword arguments;
    max_rcnn_proposals: R-CNN crops at most this many proposals per image and scales its
    times up to all of them (None: every proposal); crop_batch_sizes: batch sizes of the
    R-CNN crop-batching measurement; cache: values timers share (proposals, inputs);
    fpn_model_config: config sections of the faster_rcnn_fpn model (backbone `<name>_fpn`);
    precision: float32 | bf16, set on every model built (detect/inference/precision.py).
    """

    backbone: str
    images: list
    class_names: list
    canvas_size: tuple
    min_size: int
    max_size: int
    model_config: dict
    runs: int
    warmup: int
    rcnn_kwargs: dict = dataclasses.field(default_factory=dict)
    proposal_kwargs: dict = dataclasses.field(default_factory=lambda: dict(_SEARCH))
    max_rcnn_proposals: int | None = None
    crop_batch_sizes: tuple = CROP_BATCH_SIZES
    cache: dict = dataclasses.field(default_factory=dict)
    fpn_model_config: dict = dataclasses.field(default_factory=lambda: copy.deepcopy(FPN_SETTINGS["default"]))
    precision: str = "float32"


# --------------------------------------------------------------------------- inputs
def random_images(count, image_size, seed=0):
    """`count` smooth random (H, W, 3) uint8 images: colour blobs about 10 px apart plus mild noise.

    Smooth content keeps selective search in its usual regime (pure noise would split
    into thousands of one-pixel regions); blobs this dense give about 1,900 fast-mode
    proposals on 600x800 images, near the papers' 2,000 per photo.
    """
    import cv2

    height, width = (int(s) for s in image_size)
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.uniform(0, 255, (max(height // 10, 2), max(width // 10, 2), 3)).astype(np.float32)
        smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        noisy = smooth + rng.normal(0, 12, smooth.shape)
        images.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return images


def load_images(folder):
    """Every image of a folder (sorted by name) as (H, W, 3) uint8 RGB arrays."""
    from detect.data.images import read_image

    if not os.path.isdir(folder):
        raise DetectError(f"benchmark images: {folder} is not a folder")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DetectError(f"benchmark images: no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return [read_image(os.path.join(folder, name)) for name in names]


def canvas_for_images(images, min_size, max_size):
    """(Hc, Wc): the largest resized image, rounded up to a multiple of 32 (as torchvision pads)."""
    heights, widths = [], []
    for image in images:
        h, w = image.shape[:2]
        scale = min(min_size / min(h, w), max_size / max(h, w))
        heights.append(max(int(round(h * scale)), 1))
        widths.append(max(int(round(w * scale)), 1))
    return -(-max(heights) // 32) * 32, -(-max(widths) // 32) * 32


# --------------------------------------------------------------------------- rows
def _measured_row(name, result, environment):
    row = {"detector": name, "source": f"measured ({environment})", "status": "ok", "note": ""}
    for stage in STAGES:
        seconds = result["stages"].get(stage)
        flops = result["flops"].get(stage)
        row[f"{stage}_s"] = seconds
        row[f"{stage}_gflop"] = None if flops is None else flops / 1e9
    row["stages_sum_s"] = sum(v for v in result["stages"].values() if v is not None)
    row["detect_s"] = result["end_to_end"]
    row["detect_gflop"] = result["end_to_end_flops"] / 1e9
    row["detect_gflop_per_s"] = row["detect_gflop"] / row["detect_s"]
    row["flops_method"] = result["flops_method"]
    _add_extras(row, result)
    return row


def _add_extras(row, result):
    """Time with selective search, R-CNN's crop batching and extrapolation: row keys, and
    the CSV note; an extrapolated row says so in its source cell."""
    notes = []
    if "end_to_end_with_proposals" in result:
        row["detect_with_proposals_s"] = result["end_to_end_with_proposals"]
        notes.append(f"predict_step() with selective search {row['detect_with_proposals_s']:.4g} s")
    if "crop_batching" in result:
        row["crop_batching"] = batching = result["crop_batching"]
        notes.append(f"crop batching ratio {batching['ratio']:.2f} (chunks of {batching['chunk_size']})")
    if "extrapolation" in result:
        row["extrapolation"] = e = result["extrapolation"]
        measured = (f"network times from {e['crops_per_image']:.0f} of {e['proposals_per_image']:.0f} "
                    f"proposals, extrapolated x{e['factor']:.2f}")
        row["source"] += f"; {measured}"
        notes.append(f"{measured} (predict_step() measured {e['measured_detect_seconds']:.4g} s)")
    row["note"] = "; ".join(notes)


def _paper_row(name):
    paper = PAPER[name]
    row = {"detector": name, "source": "paper (K40 GPU)", "status": "paper", "note": paper["source"]}
    for stage in STAGES:
        row[f"{stage}_s"] = paper["stages"].get(stage)
    row["stages_sum_s"] = row["detect_s"] = paper["total"]
    row["speedup_vs_rcnn"] = PAPER["rcnn"]["total"] / paper["total"]
    return row


def _unavailable_row(name, reason):
    return {"detector": name, "source": "-", "status": "unavailable", "note": reason}


def _add_speedups(rows):
    """speedup_vs_rcnn on predict_step() (network only) in each measured row; returns a note with
    the speed-ups when selective search counts too (Faster R-CNN's predict_step() has its RPN)."""
    rcnn = next((r for r in rows if r["detector"] == "rcnn" and r["status"] == "ok"), None)
    if rcnn is None:
        return []
    for row in rows:
        if row["status"] == "ok":
            row["speedup_vs_rcnn"] = rcnn["detect_s"] / row["detect_s"]

    def total(row):
        return row.get("detect_with_proposals_s", row["detect_s"])

    measured = [r for r in rows if r["status"] == "ok"]
    return ["speed-up vs R-CNN with proposal time included: " + ", ".join(
        f"{r['detector']} {total(r):.3g} s ({total(rcnn) / total(r):,.1f}x)" for r in measured)]


def _average_precision(name, dataset_config, model_dirs, out_dir, precision="float32"):
    """(AP, AP50, note) of a trained model folder for `name`, or Nones and the reason."""
    folder = (model_dirs or {}).get(name, os.path.join("models", name))
    if not os.path.isfile(os.path.join(folder, "model.keras")):
        return None, None, f"AP of {name} skipped: no trained model folder at {folder}"
    from detect.evaluation.evaluate_model import evaluate_model

    metrics = evaluate_model(
        folder, dataset_config, split="val", out_dir=os.path.join(out_dir, f"eval_{name}"), progress=False,
        precision=precision,
    )
    note = f"AP of {name}: {folder} (its own backbone and trained weights) on the val split of {dataset_config}"
    return metrics["coco"]["AP"], metrics["coco"]["AP50"], note


# --------------------------------------------------------------------------- outputs


def _load_average():
    """1-minute load average ("n/a" where the OS has none): other processes share the CPU."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


# --------------------------------------------------------------------------- entry point
def _make_setup(backbone, images, image_size, num_images, num_classes, runs, warmup, max_rcnn_proposals,
                precision="float32"):
    settings = SETTINGS.get(backbone, SETTINGS["vgg16"])
    pictures = load_images(images) if images else random_images(num_images, image_size)
    cap = settings["max_rcnn_proposals"] if max_rcnn_proposals == "default" else max_rcnn_proposals
    return BenchSetup(
        backbone=backbone, images=pictures, class_names=[f"class_{i}" for i in range(1, int(num_classes))],
        canvas_size=canvas_for_images(pictures, settings["min_size"], settings["max_size"]),
        min_size=settings["min_size"], max_size=settings["max_size"], model_config=copy.deepcopy(settings["model"]),
        runs=int(runs), warmup=int(warmup), rcnn_kwargs=dict(settings["rcnn"]),
        proposal_kwargs=dict(settings["proposals"]), max_rcnn_proposals=None if cap is None else int(cap),
        fpn_model_config=copy.deepcopy(FPN_SETTINGS.get(backbone, FPN_SETTINGS["default"])), precision=precision,
    )


def _setup_notes(setup, detectors, source):
    rpn, roi = setup.model_config["rpn"], setup.model_config["roi"]
    height, width = setup.canvas_size
    notes = [
        f"{setup.backbone} backbone, random weights, {source}, resized (shorter side {setup.min_size}, longer "
        f"at most {setup.max_size}) onto a {height}x{width} canvas, batch 1, "
        f"{len(setup.class_names) + 1} classes with background",
        f"RPN: {rpn['pre_nms_top_n_test']} boxes before NMS, {rpn['post_nms_top_n_test']} proposals; "
        f"{roi['size']}x{roi['size']} {POOL_NAMES[roi['pool']]}; fc6/fc7 {roi['head_dim']}",
        f"median of {setup.runs} runs after {setup.warmup} warm-up runs per image; each stage one "
        f"{STAGE_COMPILER.get(keras.backend.backend(), 'compiled function')} traced once on static shapes; "
        "model building and tracing excluded; predict_step() is the end-to-end call "
        "users get",
        "random weights: the boxes reaching NMS are not a trained model's, so postprocess time is indicative",
        "paper rows: VGG16 on an Nvidia K40 GPU; the paper's region-wise time (RoI pooling, fc, NMS) is in the "
        "RoI head column; speed-ups compare each source with its own R-CNN figure",
        *(f"paper {name}: {PAPER[name]['source']}" for name in dict.fromkeys(detectors) if name in PAPER),
    ]
    return notes + _proposal_notes(setup, detectors)


def _proposal_notes(setup, detectors):
    search, rcnn, notes = setup.proposal_kwargs, setup.rcnn_kwargs, []
    if {"rcnn", "fast_rcnn"} & set(detectors):
        notes.append(
            f"selective search: {search['mode']} mode, longest side {search['max_side']} px, at most "
            f"{search['max_proposals']} proposals, timed on the uint8 image in NumPy / OpenCV (outside the model); R-CNN "
            "and Fast R-CNN read the same proposals; their predict_step() is network only, the stages sum adds "
            "selective search")
    if "rcnn" in detectors:
        cropped = ("every proposal cropped" if setup.max_rcnn_proposals is None else
                   f"at most {setup.max_rcnn_proposals} proposals per image cropped and its network times scaled "
                   "linearly to all proposals")
        notes.append(f"R-CNN: {rcnn['crop_size']} px warped crops with {rcnn['context']} px context, {cropped}")
    return notes


def run_benchmark(detectors, backbone="vgg16", images=None, dataset_config=None, runs=5,
                  out_dir="runs/benchmark", warmup=2, num_classes=21, image_size=(600, 800),
                  model_dirs=None, num_images=2, max_rcnn_proposals="default", precision="float32"):
    """Time each detector's stages on one backbone and one image set; write the table.

    Args:
      detectors: names (rcnn, fast_rcnn, faster_rcnn); unknown or unavailable ones get a row saying so.
      backbone: vgg16 (paper settings: shorter side 600, longer at most 1000, 300 RPN
        proposals after 6000 pre-NMS, 7x7 RoIAlign, fc6/fc7 4096) or tiny (128 px).
      images: folder of images; None: `num_images` random `image_size` (H, W) images.
      dataset_config: config whose val split scores a trained model of each detector
        (`model_dirs[name]`, default models/NAME) for an AP column; skipped with a note otherwise.
      runs / warmup: timed / untimed passes per stage; num_classes: K + 1 with background.
      max_rcnn_proposals: R-CNN crops at most this many proposals per image and scales its
        network times linearly to all of them (the CNN cost is per crop); None: every
        proposal; "default": the backbone's setting (64 for vgg16, None for tiny).
      precision: float32 | bf16 (Keras mixed_bfloat16, boxes and scores in float32); named
        in each measured row's source and in the notes, and used for the AP column too.
    Returns:
      {"table": markdown str, "rows": [dict per CSV row], "paths": {"markdown", "csv", "chart"}}.
    """
    if not detectors:
        raise DetectError("benchmark: no detectors given")
    if int(runs) < 1 or int(warmup) < 0:
        raise DetectError(f"benchmark: runs must be >= 1 and warmup >= 0, got {runs} and {warmup}")
    if int(num_classes) < 2:
        raise DetectError(f"benchmark: num_classes counts the background and must be >= 2, got {num_classes}")
    if max_rcnn_proposals not in (None, "default") and int(max_rcnn_proposals) < 1:
        raise DetectError(f"benchmark: max_rcnn_proposals must be >= 1 or None, got {max_rcnn_proposals}")
    from detect.inference.precision import bf16_support, check_precision

    check_precision(precision)
    setup = _make_setup(backbone, images, image_size, num_images, num_classes, runs, warmup, max_rcnn_proposals,
                        precision)
    source = f"{len(setup.images)} images from {images}" if images else (
        f"{len(setup.images)} random {image_size[0]}x{image_size[1]} images")
    notes = _setup_notes(setup, detectors, source)
    environment = f"{describe()}, {precision}"
    if precision == "bf16":
        native = bf16_support()
        notes.append("bf16: Keras mixed_bfloat16 (float32 weights; box decoding, NMS and scores in float32); "
                     + (f"native bfloat16 on this CPU ({', '.join(native)})" if native else
                        "this CPU has no AVX512_BF16 or AMX, so bfloat16 is emulated"))
    load = _load_average()
    rows = []
    for name in detectors:
        timer = TIMERS.get(name)
        if timer is None:
            rows.append(_unavailable_row(name, f"not available in this version (available: {', '.join(TIMERS)})"))
            continue
        try:
            result = timer(setup)
        except (ImportError, DetectError) as e:
            rows.append(_unavailable_row(name, str(e).splitlines()[0]))
            continue
        rows.append(_measured_row(name, result, environment))
        notes += result["notes"]
        if dataset_config:
            rows[-1]["ap"], rows[-1]["ap50"], note = _average_precision(name, dataset_config, model_dirs, out_dir,
                                                                        precision)
            notes.append(note)
        if name in PAPER:
            rows.append(_paper_row(name))
    notes += _add_speedups(rows)
    notes.append(f"1-minute load average {load} before timing, {_load_average()} after ({os.cpu_count()} CPUs)")
    table, paths = write_outputs(rows, notes, out_dir)
    return {"table": table, "rows": rows, "paths": paths}
