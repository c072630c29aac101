"""Timers of the speed table: per-stage and end-to-end seconds per image, and FLOPs.

A timer takes a `detect.benchmark.speed_table.BenchSetup` and returns a dict:
  stages      {proposals, backbone, roi_head, postprocess: seconds per image}
  end_to_end  seconds per image of the model's own `predict_step()` (network only: for R-CNN and
              Fast R-CNN it reads precomputed proposals, as the papers' test times do)
  flops       {stage: FLOPs per image, or None where nothing is counted}
  end_to_end_flops, flops_method (str), notes (list of str)
R-CNN and Fast R-CNN add `end_to_end_with_proposals` (predict_step() + selective search); R-CNN
adds `crop_batching` (see `time_rcnn`) and `extrapolation` when its proposals are capped.

Each stage is one `tf.function` with a static input signature (traced once) fed with the
previous stage's outputs on the same image; only the timed calls are timed. Selective
search runs in NumPy / OpenCV, outside TensorFlow, like the papers' CPU proposal stage.
"""

import copy
import logging
import statistics
import time

import numpy as np
import tensorflow as tf

from detect import compat
from detect.benchmark.report import STAGES
from detect.ops.boxes import scale_boxes_np, valid_mask

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- timing
def _block(outputs):
    """Fetch every tensor so the timed call has really finished."""
    return tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, outputs)


def median_seconds(fn, inputs, warmup, runs):
    """Median over `runs` passes of the mean seconds per call; `inputs` is a list of arg tuples."""
    for _ in range(warmup):
        for args in inputs:
            _block(fn(*args))
    passes = []
    for _ in range(runs):
        start = time.perf_counter()
        for args in inputs:
            _block(fn(*args))
        passes.append((time.perf_counter() - start) / len(inputs))
    return statistics.median(passes)


def _shape_flops(graph):
    """2 x multiply-adds of Conv2D / depthwise conv / MatMul ops with static shapes."""
    total = 0
    for op in graph.get_operations():
        if op.type not in ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2", "BatchMatMulV3"):
            continue
        out = op.outputs[0].shape
        if not out.is_fully_defined():
            continue
        size = int(np.prod(out.as_list()))
        if op.type == "Conv2D":
            kh, kw, cin, _ = op.inputs[1].shape.as_list()
            total += 2 * size * kh * kw * cin
        elif op.type == "DepthwiseConv2dNative":
            kh, kw, _, _ = op.inputs[1].shape.as_list()
            total += 2 * size * kh * kw
        else:
            a = op.inputs[0].shape.as_list()
            transposed = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
            total += 2 * size * (a[-2] if transposed else a[-1])
    return float(total)


def graph_flops(fn):
    """(FLOPs, method) of a tf.function with a static input signature.

    TF's graph profiler (float_ops) counts every op with a registered FLOP formula; if it
    fails, conv / matmul FLOPs are computed from the graph's static shapes instead.
    """
    graph = fn.get_concrete_function().graph
    flops = compat.graph_float_ops(graph)
    if flops is not None:
        return flops, "tf profiler float_ops"
    logger.warning("counting conv/matmul FLOPs from shapes")
    return _shape_flops(graph), "conv/matmul shapes (analytic)"


def time_stages(functions, inputs, warmup, runs, count_flops=None):
    """Seconds per image and FLOPs of each tf.function (static input signature) on its inputs.

    functions: {name: tf.function}; inputs: {name: [arg tuple per image]}; count_flops:
    names whose graph FLOPs are counted (None: all; the others get None).
    Returns (seconds {name: s}, flops {name: FLOPs or None}, methods set, notes on retracing).
    """
    seconds, flops, methods = {}, {}, set()
    for name, fn in functions.items():
        seconds[name] = median_seconds(fn, inputs[name], warmup, runs)
        flops[name] = None
        if count_flops is None or name in count_flops:
            flops[name], method = graph_flops(fn)
            methods.add(method)
    notes = [
        f"{name} traced {fn.experimental_get_tracing_count()} times"
        for name, fn in functions.items()
        if fn.experimental_get_tracing_count() != 1
    ]
    return seconds, flops, methods, notes


def _spec(*shape, dtype=tf.float32):
    return tf.TensorSpec(shape, dtype)


def _result(name, seconds, flops, methods, notes):
    return {
        "stages": {stage: seconds[stage] for stage in STAGES},
        "end_to_end": seconds["detect"],
        "flops": {stage: flops[stage] for stage in STAGES},
        "end_to_end_flops": flops["detect"],
        "flops_method": " + ".join(sorted(methods)),
        "notes": [f"{name}: {note}" for note in notes],
    }


# --------------------------------------------------------------------------- shared inputs
def prepared_images(setup):
    """Model inputs of every image (cached on the setup): dicts of images (1, Hc, Wc, 3),
    image_shape (1, 2) int32, scale (1, 2) (sy, sx) original -> canvas, as tf constants."""
    if "prepared" not in setup.cache:
        from detect.data.pipeline import prepare_image

        setup.cache["prepared"] = [
            {key: tf.constant(value) for key, value in prepare_image(
                image, min_size=setup.min_size, max_size=setup.max_size, canvas_size=setup.canvas_size).items()}
            for image in setup.images
        ]
    return setup.cache["prepared"]


def selective_search_proposals(setup):
    """(boxes, seconds) of selective search on every image, cached on the setup so R-CNN and
    Fast R-CNN read the same proposals and the same proposal time.

    boxes: list of (P_i, 4) float32 xyxy original-image pixels; seconds: median seconds per
    image of `selective_search(image, **setup.proposal_kwargs)` on the uint8 image.
    """
    if "selective_search" not in setup.cache:
        from detect.proposals.selective_search import selective_search

        def search(image):
            return selective_search(image, **setup.proposal_kwargs)

        boxes = [search(image) for image in setup.images]
        seconds = median_seconds(search, [(image,) for image in setup.images], setup.warmup, setup.runs)
        setup.cache["selective_search"] = (boxes, seconds)
    return setup.cache["selective_search"]


def canvas_proposals(boxes, scale, count):
    """(1, count, 4) float32 tensor: the first `count` boxes (P, 4) xyxy original pixels in
    canvas pixels (scale (1, 2) (sy, sx)); rows past P stay 0 (padding)."""
    sy, sx = (float(s) for s in np.asarray(scale)[0])
    out = np.zeros((1, count, 4), np.float32)
    kept = np.asarray(boxes, np.float32)[:count]
    out[0, : len(kept)] = scale_boxes_np(kept, sx, sy)
    return tf.constant(out)


# --------------------------------------------------------------------------- Faster / Fast R-CNN
def two_stage_model(setup, detector):
    """A random-weight TwoStageDetector for the setup's backbone, canvas and settings."""
    from detect.config import from_dict
    from detect.models.registry import build_model

    model = copy.deepcopy(setup.model_config)
    config = from_dict({
        **model,
        "detector": detector,
        "backbone": {**model.get("backbone", {}), "name": setup.backbone, "weights": "none"},
        "input": {"min_size": setup.min_size, "max_size": setup.max_size, "canvas": list(setup.canvas_size)},
    })
    return build_model(config, setup.class_names)


def fpn_model(setup):
    """A random-weight Faster R-CNN with a feature pyramid over the setup's backbone
    (`<backbone>_fpn`), with the setup's `fpn_model_config` sections."""
    from detect.config import from_dict
    from detect.models.registry import build_model

    model = copy.deepcopy(setup.fpn_model_config)
    config = from_dict({
        **model,
        "detector": "faster_rcnn",
        "backbone": {**model.get("backbone", {}), "name": f"{setup.backbone}_fpn", "weights": "none"},
        "input": {"min_size": setup.min_size, "max_size": setup.max_size, "canvas": list(setup.canvas_size)},
    })
    return build_model(config, setup.class_names)


def _feature_specs(model, canvas_size):
    """TensorSpec of `model.features` on a (1, H, W, 3) canvas: one map, or a list of
    levels with a neck (FPN: P2..P6)."""
    shape = model.backbone.compute_output_shape((1, *canvas_size, 3))
    if model.neck is None:
        return _spec(*shape)
    return [_spec(*level) for level in model.neck.compute_output_shape([tuple(s) for s in shape])]


def _two_stage_functions(model, canvas_size, num_rois):
    """tf.functions of the model's public stages (`features`, `rpn`, `box_head`,
    `postprocess`) and of `predict_step` on static batch-1 shapes, R = num_rois RoIs per
    image. With an RPN the proposals stage is the RPN head + proposal layer; without
    one, predict_step reads proposals (1, R, 4) from its inputs."""
    features = _feature_specs(model, canvas_size)
    images, image_shape, scale = _spec(1, *canvas_size, 3), _spec(1, 2, dtype=tf.int32), _spec(1, 2)
    r, k = int(num_rois), model.num_classes
    rois = _spec(1, r, 4)

    @tf.function(input_signature=[images])
    def backbone(images):
        return model.features(images)

    @tf.function(input_signature=[features, rois])
    def roi_head(features, rois):
        return model.box_head(features, rois)

    head = {"class_logits": _spec(1, r, k + 1), "box_deltas": _spec(1, r, k, 4), "rois": rois,
            "roi_valid": _spec(1, r, dtype=tf.bool)}

    @tf.function(input_signature=[head, image_shape, scale])
    def postprocess(outputs, image_shape, scale):
        return model.postprocess(outputs, image_shape, scale)

    fns = {"backbone": backbone, "roi_head": roi_head, "postprocess": postprocess}
    detect_spec = {"images": images, "image_shape": image_shape, "scale": scale}
    if model.use_rpn:
        @tf.function(input_signature=[features, image_shape])
        def proposals(features, image_shape):
            outputs = model.rpn(features, image_shape)
            return outputs["proposals"], outputs["proposal_valid"]

        fns["proposals"] = proposals
    else:
        detect_spec["proposals"] = rois
    fns["detect"] = tf.function(model.predict_step, input_signature=[detect_spec])
    return fns


def _post_args(logits, deltas, rois, valid, batch):
    return ({"class_logits": logits, "box_deltas": deltas, "rois": rois, "roi_valid": valid},
            batch["image_shape"], batch["scale"])


def time_faster_rcnn(setup):
    """Stage and end-to-end timing of a random-weight Faster R-CNN (see the module docstring)."""
    return _time_rpn_model(setup, two_stage_model(setup, "faster_rcnn"), "faster_rcnn")


def time_faster_rcnn_fpn(setup):
    """Faster R-CNN with a Feature Pyramid Network: backbone + FPN neck (backbone column),
    RPN over P2..P6 with the proposal layer (proposals), multi-level RoIAlign + 2-fc head +
    predictor (RoI head), postprocess. Backbones without an FPN variant (vgg16) are
    unavailable."""
    from detect.errors import DetectError
    from detect.models.backbones import FPN_BACKBONES

    if f"{setup.backbone}_fpn" not in FPN_BACKBONES:
        raise DetectError(f"no FPN variant of the {setup.backbone} backbone (FPN: {', '.join(FPN_BACKBONES)})")
    result = _time_rpn_model(setup, fpn_model(setup), "faster_rcnn_fpn")
    rpn, roi = setup.fpn_model_config["rpn"], setup.fpn_model_config["roi"]
    result["notes"].append(
        f"faster_rcnn_fpn: backbone column = {setup.backbone} C2-C5 + FPN neck (P2-P6, "
        f"{setup.fpn_model_config['fpn']['channels']} channels); proposals = RPN over P2-P6 (anchors "
        f"{rpn['anchor_sizes']}, {rpn['pre_nms_top_n_test']} boxes per level before NMS, NMS per level, "
        f"{rpn['post_nms_top_n_test']} proposals); RoI head = multi-level {roi['size']}x{roi['size']} RoIAlign "
        f"over P2-P5 + 2-fc {roi['head_dim']}"
    )
    return result


def _time_rpn_model(setup, model, name):
    fns = _two_stage_functions(model, setup.canvas_size, model.rpn.post_nms_top_n[False])
    inputs = {name: [] for name in fns}
    proposal_count = detection_count = 0
    for batch in prepared_images(setup):
        features = fns["backbone"](batch["images"])
        boxes, valid = fns["proposals"](features, batch["image_shape"])
        logits, deltas = fns["roi_head"](features, boxes)
        post_args = _post_args(logits, deltas, boxes, valid, batch)
        proposal_count += int(tf.reduce_sum(tf.cast(valid, tf.int32)))
        detection_count += int(fns["postprocess"](*post_args)["num_detections"][0])
        inputs["backbone"].append((batch["images"],))
        inputs["proposals"].append((features, batch["image_shape"]))
        inputs["roi_head"].append((features, boxes))
        inputs["postprocess"].append(post_args)
        inputs["detect"].append((batch,))
    result = _result(name, *time_stages(fns, inputs, setup.warmup, setup.runs))
    count = len(setup.images)
    result["notes"].append(
        f"{name}: {proposal_count / count:.0f} RPN proposals and {detection_count / count:.0f} "
        "detections per image on average"
    )
    return result


def time_fast_rcnn(setup):
    """Fast R-CNN: selective search (proposals), one trunk pass per image (backbone), RoI
    pooling + fc6/fc7 + predictor over every proposal (RoI head), postprocess.

    The proposals of every image are padded with zero rows to the largest count P, the
    static RoI count the stage functions and predict_step() are traced for.
    """
    boxes, search_seconds = selective_search_proposals(setup)
    count = max(max(len(b) for b in boxes), 1)
    model = two_stage_model(setup, "fast_rcnn")
    fns = _two_stage_functions(model, setup.canvas_size, count)
    inputs = {name: [] for name in fns}
    for batch, image_boxes in zip(prepared_images(setup), boxes):
        rois = canvas_proposals(image_boxes, batch["scale"], count)
        features = fns["backbone"](batch["images"])
        logits, deltas = fns["roi_head"](features, rois)
        inputs["backbone"].append((batch["images"],))
        inputs["roi_head"].append((features, rois))
        inputs["postprocess"].append(_post_args(logits, deltas, rois, valid_mask(rois), batch))
        inputs["detect"].append(({**batch, "proposals": rois},))
    seconds, flops, methods, notes = time_stages(fns, inputs, setup.warmup, setup.runs)
    seconds["proposals"], flops["proposals"] = search_seconds, None
    result = _result("fast_rcnn", seconds, flops, methods, notes)
    result["end_to_end_with_proposals"] = seconds["detect"] + search_seconds
    mean = np.mean([len(b) for b in boxes])
    result["notes"].append(
        f"fast_rcnn: {mean:.0f} selective-search proposals per image on average (RoI head traced for {count}); "
        f"predict_step() {seconds['detect']:.3g} s network only, {result['end_to_end_with_proposals']:.3g} s with "
        f"selective search ({search_seconds:.3g} s)"
    )
    return result


# --------------------------------------------------------------------------- R-CNN
def crop_function(model):
    """tf.function of R-CNN's crop feature extractor (`model.crop_features`: the CNN, plus
    pool5 / fc6 / fc7 for VGG16) on any number of (c, c, 3) crops."""
    c = model.crop_size
    return tf.function(lambda crops: model.crop_features(crops), input_signature=[_spec(None, c, c, 3)])


def random_crops(count, crop_size, seed=0):
    """(count, c, c, 3) float32 crops, uniform in [0, 255]."""
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(0.0, 255.0, (int(count), crop_size, crop_size, 3)).astype(np.float32))


def crop_batch_seconds(fn, crop_size, batch_sizes, warmup, runs):
    """{b: seconds per crop} of `fn` (see crop_function) on b random crops in one call, per batch size b."""
    return {int(b): median_seconds(fn, [(random_crops(b, crop_size),)], max(int(warmup), 1), runs) / int(b)
            for b in batch_sizes}


def interleaved_ratio(detect_fn, detect_inputs, crop_fn, crops, crops_per_image, rounds):
    """predict_step() seconds per image / (crops per image x seconds per crop of one `crops` batch).

    Both sides are the fastest of `rounds` passes taken alternately, so load from other
    processes on a shared machine reaches both alike. Returns (ratio, detect seconds per
    image, seconds per crop)."""
    detect_times, crop_times = [], []
    for _ in range(int(rounds)):
        detect_times.append(median_seconds(detect_fn, detect_inputs, 0, 1))
        crop_times.append(median_seconds(crop_fn, [(crops,)], 0, 1) / int(crops.shape[0]))
    detect_seconds, per_crop = min(detect_times), min(crop_times)
    return detect_seconds / max(crops_per_image * per_crop, 1e-12), detect_seconds, per_crop


def best_chunk_size(per_crop, counts):
    """The batch size b of `per_crop` ({b: seconds per crop}) that runs crop counts `counts`
    (one per image) fastest in chunks of b, the last chunk padded: minimises
    sum_i ceil(M_i / b) * b * per_crop[b]."""
    return min(per_crop, key=lambda b: sum(-(-int(m) // b) * b for m in counts) * per_crop[b])


def _rcnn_functions(model, canvas_size, num_rois):
    """tf.functions of R-CNN's public stages and of `predict_step`, P = num_rois proposal rows."""
    images, image_shape, scale = _spec(1, *canvas_size, 3), _spec(1, 2, dtype=tf.int32), _spec(1, 2)
    p, k = int(num_rois), model.num_classes
    rois = _spec(1, p, 4)

    @tf.function(input_signature=[images, _spec(None, 4), _spec(None, dtype=tf.int32)])
    def backbone(images, boxes, box_indices):
        return model.chunked_region_features(images, boxes, box_indices)

    @tf.function(input_signature=[_spec(None, model.feature_dim), _spec(None, model.regression_dim),
                                  _spec(None, 2, dtype=tf.int64)])
    def roi_head(features, regression, index):
        return model.box_head(features, regression, index, tf.constant([1, p], tf.int64))

    head = {"rois": rois, "roi_valid": _spec(1, p, dtype=tf.bool), "class_logits": _spec(1, p, k + 1),
            "svm_scores": _spec(1, p, k), "box_deltas": _spec(1, p, k, 4)}

    @tf.function(input_signature=[head, image_shape, scale])
    def postprocess(outputs, image_shape, scale):
        return model.postprocess(outputs, image_shape, scale)

    detect_spec = {"images": images, "image_shape": image_shape, "scale": scale, "proposals": rois}
    return {"backbone": backbone, "roi_head": roi_head, "postprocess": postprocess,
            "detect": tf.function(model.predict_step, input_signature=[detect_spec])}


def _rcnn_inputs(fns, setup, boxes, count):
    """Per-stage argument tuples of every image; returns (inputs, crops per image)."""
    inputs = {name: [] for name in fns}
    crops = []
    for batch, image_boxes in zip(prepared_images(setup), boxes):
        rois = canvas_proposals(image_boxes, batch["scale"], count)
        valid = valid_mask(rois)
        index = tf.where(valid)
        flat = tf.gather_nd(rois, index)
        box_indices = tf.cast(index[:, 0], tf.int32)
        features, regression = fns["backbone"](batch["images"], flat, box_indices)
        head = fns["roi_head"](features, regression, index)
        crops.append(int(index.shape[0]))
        inputs["backbone"].append((batch["images"], flat, box_indices))
        inputs["roi_head"].append((features, regression, index))
        inputs["postprocess"].append(({"rois": rois, "roi_valid": valid, **head}, batch["image_shape"], batch["scale"]))
        inputs["detect"].append(({**batch, "proposals": rois},))
    return inputs, crops


def _rcnn_flops(model, crops):
    """FLOPs per image of R-CNN's stages for `crops` crops per image: the profiler's count of
    one crop through the crop feature extractor times the crops, and the SVM / classifier /
    regressor matmuls (2 x multiply-adds). Returns ({stage or "detect": FLOPs or None}, method)."""
    c = model.crop_size
    one = tf.function(lambda crops: model.crop_features(crops), input_signature=[_spec(1, c, c, 3)])
    per_crop, method = graph_flops(one)
    k = model.num_classes
    head = 2.0 * crops * (model.feature_dim * (2 * k + 1) + model.regression_dim * 4 * k)
    backbone = per_crop * crops
    flops = {"proposals": None, "backbone": backbone, "roi_head": head, "postprocess": None, "detect": backbone + head}
    return flops, method


def time_rcnn(setup):
    """R-CNN: selective search (proposals), the CNN over every warped crop (backbone: R-CNN's
    cost), classifier + SVM + box-regressor layers over the crop features (RoI head),
    postprocess (decode, per-class NMS, rescale).

    Crop batching: the crop feature extractor is timed on random crops at each of
    `setup.crop_batch_sizes` and the configured chunk size; the model's chunk size is set to
    the one of these batch sizes that runs this run's crop counts fastest, and `crop_batching`
    reports predict_step() seconds per image / (crops per image x seconds per crop at the best
    batch size) as `ratio` (1 = perfectly batched; see interleaved_ratio).

    With `setup.max_rcnn_proposals` set, only the first C proposals of each image are
    cropped; every network time (stages and predict_step()) is measured on them and scaled by
    (all proposals / C), the CNN's cost being linear in the crop count.
    """
    from detect.models.rcnn import RCNN

    boxes, search_seconds = selective_search_proposals(setup)
    cap = setup.max_rcnn_proposals
    capped = [b[: int(cap)] if cap else b for b in boxes]
    count = max(max(len(b) for b in capped), 1)
    model = RCNN(
        class_names=setup.class_names, canvas_size=setup.canvas_size, backbone=setup.backbone,
        backbone_weights="none", **setup.rcnn_kwargs,
    )
    configured, crop_fn = model.chunk_size, crop_function(model)
    sizes = sorted({*(int(b) for b in setup.crop_batch_sizes), configured})
    per_crop = crop_batch_seconds(crop_fn, model.crop_size, sizes, setup.warmup, setup.runs)
    # chunked_region_features reads chunk_size when it is traced, i.e. below.
    model.chunk_size = best_chunk_size(per_crop, [len(b) for b in capped])
    fns = _rcnn_functions(model, setup.canvas_size, count)
    inputs, crops = _rcnn_inputs(fns, setup, capped, count)
    seconds, _, _, notes = time_stages(fns, inputs, setup.warmup, setup.runs, count_flops=())
    mean_all, mean_crops = float(np.mean([len(b) for b in boxes])), float(np.mean(crops))
    best = min(per_crop, key=per_crop.get)
    rounds = max(setup.runs, 2)
    ratio, detect_seconds, best_seconds = interleaved_ratio(
        fns["detect"], inputs["detect"], crop_fn, random_crops(best, model.crop_size), mean_crops, rounds)
    factor = sum(len(b) for b in boxes) / max(sum(crops), 1)
    measured_detect = seconds["detect"]
    seconds = {name: value * factor for name, value in seconds.items()}
    seconds["proposals"] = search_seconds
    flops, method = _rcnn_flops(model, mean_all)
    result = _result("rcnn", seconds, flops, {f"{method} per crop x crops; SVM/regressor matmuls analytic"}, notes)
    result["end_to_end_with_proposals"] = seconds["detect"] + search_seconds
    result["crop_batching"] = {
        "seconds_per_crop": per_crop, "best_batch_size": best, "best_seconds_per_crop": best_seconds,
        "crops_per_image": mean_crops, "detect_seconds": detect_seconds, "ratio": ratio, "rounds": rounds,
        "chunk_size": model.chunk_size, "configured_chunk_size": configured,
    }
    if factor != 1.0:
        result["extrapolation"] = {"cap": int(cap), "crops_per_image": mean_crops, "proposals_per_image": mean_all,
                                   "factor": factor, "measured_detect_seconds": measured_detect}
    result["notes"] += _rcnn_notes(result, search_seconds)
    return result


def _rcnn_notes(result, search_seconds):
    batching = result["crop_batching"]
    times = ", ".join(f"{b}: {s * 1e3:.3g} ms" for b, s in batching["seconds_per_crop"].items())
    chunk = batching["chunk_size"]
    tuned = (" (as configured)" if chunk == batching["configured_chunk_size"] else
             f" (tuned for this run from the configured {batching['configured_chunk_size']})")
    notes = [
        f"rcnn: crop CNN seconds per crop by batch size: {times}; R-CNN runs its crops in chunks of {chunk}{tuned}",
        f"rcnn: crop batching ratio {batching['ratio']:.2f} = predict_step() {batching['detect_seconds']:.3g} s / "
        f"({batching['crops_per_image']:.0f} crops x {batching['best_seconds_per_crop'] * 1e3:.3g} ms per crop "
        f"at batch {batching['best_batch_size']}), each the fastest of {batching['rounds']} alternating passes; "
        "1.0 = every crop as cheap as in the best batch",
        f"rcnn: predict_step() {result['end_to_end']:.3g} s network only, {result['end_to_end_with_proposals']:.3g} s "
        f"with selective search ({search_seconds:.3g} s)",
    ]
    if batching["ratio"] > 1.3:
        notes.append("rcnn: crop batching ratio above 1.3: R-CNN loses time outside the batched crop CNN")
    e = result.get("extrapolation")
    if e:
        notes.append(
            f"rcnn: proposals capped at {e['cap']} per image: predict_step() measured {e['measured_detect_seconds']:.3g} s "
            f"on {e['crops_per_image']:.0f} crops per image, extrapolated linearly x{e['factor']:.2f} to all "
            f"{e['proposals_per_image']:.0f} proposals: {result['end_to_end']:.3g} s (every R-CNN network time in "
            "the table is extrapolated alike)")
    return notes


TIMERS = {"rcnn": time_rcnn, "fast_rcnn": time_fast_rcnn, "faster_rcnn": time_faster_rcnn,
          "faster_rcnn_fpn": time_faster_rcnn_fpn}
