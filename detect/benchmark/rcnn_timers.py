"""R-CNN's timer for the speed table: selective search (proposals), the CNN over warped
crops in chunks (backbone), SVM / regressor heads (RoI head), postprocess, plus the
crop-batching measurement; see detect.benchmark.timers for the result's fields."""

import numpy as np

from detect.benchmark.timers import (
    Stage, canvas_proposals, graph_flops, median_seconds, prepared_images, selective_search_proposals, spec, time_stages,
    timer_result,
)
from detect.compat import on_tensorflow, tf


def stage_of(model, signature):
    """Decorator: a timers.Stage (a tf.function of that signature: R-CNN times on TensorFlow)."""
    return lambda fn: Stage(fn, signature, model)
from detect.errors import DetectError
from detect.ops.boxes import valid_mask


def crop_function(model):
    """tf.function of R-CNN's crop feature extractor (`model.crop_features`: the CNN, plus
    pool5 / fc6 / fc7 for VGG16) on any number of (c, c, 3) crops."""
    c = model.crop_size
    return tf.function(lambda crops: model.crop_features(crops), input_signature=[spec(None, c, c, 3)])


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
    """Stages (tf.functions) of R-CNN's public stages and of `predict_step`, P = num_rois proposal rows."""
    images, image_shape, scale = spec(1, *canvas_size, 3), spec(1, 2, dtype=tf.int32), spec(1, 2)
    p, k = int(num_rois), model.num_classes
    rois = spec(1, p, 4)

    @stage_of(model, [images, spec(None, 4), spec(None, dtype=tf.int32)])
    def backbone(images, boxes, box_indices):
        return model.chunked_region_features(images, boxes, box_indices)

    @stage_of(model, [spec(None, model.feature_dim), spec(None, model.regression_dim),
                      spec(None, 2, dtype=tf.int64)])
    def roi_head(features, regression, index):
        return model.box_head(features, regression, index, tf.ones([1, p], tf.bool))

    head = {"rois": rois, "roi_valid": spec(1, p, dtype=tf.bool), "class_logits": spec(1, p, k + 1),
            "svm_scores": spec(1, p, k), "box_deltas": spec(1, p, k, 4)}

    @stage_of(model, [head, image_shape, scale])
    def postprocess(outputs, image_shape, scale):
        return model.postprocess(outputs, image_shape, scale)

    detect_spec = {"images": images, "image_shape": image_shape, "scale": scale, "proposals": rois}
    return {"backbone": backbone, "roi_head": roi_head, "postprocess": postprocess,
            "detect": Stage(model.predict_step, [detect_spec], model)}


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
    one = tf.function(lambda crops: model.crop_features(crops), input_signature=[spec(1, c, c, 3)])
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
    if not on_tensorflow():
        # Its crop count changes from image to image: timed as TensorFlow functions only.
        raise DetectError("the R-CNN timer needs KERAS_BACKEND=tensorflow (its stages take a varying crop count)")
    from detect.inference.precision import apply_precision
    from detect.models.rcnn import RCNN

    boxes, search_seconds = selective_search_proposals(setup)
    cap = setup.max_rcnn_proposals
    capped = [b[: int(cap)] if cap else b for b in boxes]
    count = max(max(len(b) for b in capped), 1)
    model = RCNN(
        class_names=setup.class_names, canvas_size=setup.canvas_size, backbone=setup.backbone,
        backbone_weights="none", **setup.rcnn_kwargs,
    )
    apply_precision(model, setup.precision)
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
    result = timer_result("rcnn", seconds, flops, {f"{method} per crop x crops; SVM/regressor matmuls analytic"}, notes)
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
