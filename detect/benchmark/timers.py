"""Timers of the speed table: per-stage and end-to-end seconds per image, and FLOPs.

A timer takes a `detect.benchmark.speed_table.BenchSetup` and returns a dict:
  stages      {proposals, backbone, roi_head, postprocess: seconds per image}
  end_to_end  seconds per image of the model's own `predict_step()` (network only: for R-CNN and
              Fast R-CNN it reads precomputed proposals, as the papers' test times do)
  flops       {stage: FLOPs per image, or None where nothing is counted}
  end_to_end_flops, flops_method (str), notes (list of str)
R-CNN and Fast R-CNN add `end_to_end_with_proposals` (predict_step() + selective search); R-CNN
adds `crop_batching` (see `time_rcnn`) and `extrapolation` when its proposals are capped.

Each stage is one compiled function with a static input signature (a Stage: traced once)
fed with the previous stage's outputs on the same image; only the timed calls are timed.
Selective search runs in NumPy / OpenCV, outside the model, like the papers' CPU proposal
stage. Stages compile for the Keras backend that runs: tf.function on TensorFlow, jax.jit
of the stage run statelessly on the model's variables on JAX, eager under no_grad on
PyTorch (Keras' own torch predict path).
"""

import copy
import logging
import statistics
import time

import keras
import numpy as np

from detect import compat
from detect.benchmark.report import STAGES
from detect.inference.precision import apply_precision
from detect.ops.boxes import scale_boxes_np, valid_mask

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- timing
def _block(outputs):
    """Fetch every tensor so the timed call has really finished."""
    return keras.tree.map_structure(
        lambda t: keras.ops.convert_to_numpy(t) if keras.ops.is_tensor(t) else t, outputs)


def _backend():
    return keras.backend.backend()


class Stage:
    """One stage function compiled once for a static input signature (a list of spec(...)
    per argument) on the running backend. Callable; `tracing_count()` counts traces
    (None on PyTorch, which runs eagerly); `flops(*args)` counts FLOPs per call where the
    backend can (TF's graph profiler, XLA's cost analysis, torch's FlopCounterMode)."""

    def __init__(self, fn, signature, model=None):
        self.fn, self.signature, self.model = fn, signature, model
        self.traces = 0
        self.backend = _backend()
        if self.backend == "tensorflow":
            import tensorflow as tf

            self._compiled = tf.function(fn, input_signature=signature)
        elif self.backend == "jax":
            import jax

            self._compiled = jax.jit(self._stateless)
        else:
            self._compiled = None

    def _variables(self):
        model = self.model
        return list(model.trainable_variables) + list(model.non_trainable_variables)

    def _stateless(self, values, *args):
        self.traces += 1
        with keras.StatelessScope(state_mapping=list(zip(self._variables(), values))):
            return self.fn(*args)

    def __call__(self, *args):
        if self.backend == "tensorflow":
            return self._compiled(*args)
        if self.backend == "jax":
            return self._compiled([v.value for v in self._variables()], *args)
        import torch

        with torch.no_grad():
            return self.fn(*args)

    def tracing_count(self):
        if self.backend == "tensorflow":
            return self._compiled.experimental_get_tracing_count()
        return self.traces if self.backend == "jax" else None

    def flops(self, *args):
        """(FLOPs per call, method) on `args` (unused on TensorFlow: the signature's graph)."""
        if self.backend == "tensorflow":
            return graph_flops(self._compiled)
        if self.backend == "jax":
            try:
                lowered = self._compiled.lower([v.value for v in self._variables()], *args)
                analysis = lowered.compile().cost_analysis()
                analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
                return float(analysis["flops"]), "XLA cost analysis"
            except Exception as e:  # noqa: BLE001 - the table says what was not counted
                logger.warning("XLA cost analysis failed (%s)", e)
                return None, "not counted"
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self(*args)
        return float(counter.get_total_flops()), "torch FlopCounterMode (conv/matmul)"


def stage(signature, model=None):
    """Decorator: `@stage([spec(...), ...], model)` makes a Stage of the function."""
    return lambda fn: Stage(fn, signature, model)


def tensor(value):
    """A backend tensor of a NumPy array (the inputs a stage is timed on)."""
    return keras.ops.convert_to_tensor(value)


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
    """(FLOPs, method) of a tf.function with a static input signature (TensorFlow).

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
    """Seconds per image and FLOPs of each Stage (static input signature) on its inputs.

    functions: {name: Stage}; inputs: {name: [arg tuple per image]}; count_flops:
    names whose FLOPs are counted (None: all; the others get None).
    Returns (seconds {name: s}, flops {name: FLOPs or None}, methods set, notes on retracing).
    """
    seconds, flops, methods = {}, {}, set()
    for name, fn in functions.items():
        seconds[name] = median_seconds(fn, inputs[name], warmup, runs)
        flops[name] = None
        if count_flops is None or name in count_flops:
            flops[name], method = fn.flops(*inputs[name][0])
            methods.add(method)
    notes = [
        f"{name} traced {fn.tracing_count()} times"
        for name, fn in functions.items()
        if fn.tracing_count() not in (1, None)
    ]
    return seconds, flops, methods, notes


def spec(*shape, dtype="float32"):
    """A stage argument's shape and dtype: a tf.TensorSpec on TensorFlow (the traced
    signature), a KerasTensor elsewhere (documentation only: JAX traces on first call)."""
    dtype = keras.backend.standardize_dtype(dtype)
    if _backend() == "tensorflow":
        import tensorflow as tf

        return tf.TensorSpec(shape, dtype)
    return keras.KerasTensor(shape, dtype)


def timer_result(name, seconds, flops, methods, notes):
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
    image_shape (1, 2) int32, scale (1, 2) (sy, sx) original -> canvas, as backend tensors
    (prepared by tf.image where TensorFlow is installed, by numpy_transforms elsewhere)."""
    if "prepared" not in setup.cache:
        from detect.data.splits import has_tensorflow

        if has_tensorflow():
            from detect.data.pipeline import prepare_image
        else:
            from detect.data.numpy_transforms import prepare_image

        setup.cache["prepared"] = [
            {key: tensor(value) for key, value in prepare_image(
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
    return tensor(out)


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
    return apply_precision(build_model(config, setup.class_names), setup.precision)


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
    return apply_precision(build_model(config, setup.class_names), setup.precision)


def _feature_specs(model, canvas_size):
    """TensorSpec of `model.features` on a (1, H, W, 3) canvas: one map, or a list of
    levels with a neck (FPN: P2..P6), in the dtype they are computed in (bfloat16 under
    --precision bf16)."""
    shape = model.backbone.compute_output_shape((1, *canvas_size, 3))
    if model.neck is None:
        return spec(*shape, dtype=model.backbone.compute_dtype)
    levels = model.neck.compute_output_shape([tuple(s) for s in shape])
    return [spec(*level, dtype=model.neck.compute_dtype) for level in levels]


def _two_stage_functions(model, canvas_size, num_rois):
    """Stages of the model's public stages (`features`, `rpn`, `box_head`,
    `postprocess`) and of `predict_step` on static batch-1 shapes, R = num_rois RoIs per
    image. With an RPN the proposals stage is the RPN head + proposal layer; without
    one, predict_step reads proposals (1, R, 4) from its inputs."""
    features = _feature_specs(model, canvas_size)
    images, image_shape, scale = spec(1, *canvas_size, 3), spec(1, 2, dtype="int32"), spec(1, 2)
    r, k = int(num_rois), model.num_classes
    rois = spec(1, r, 4)

    @stage([images], model)
    def backbone(images):
        return model.features(images)

    @stage([features, rois], model)
    def roi_head(features, rois):
        return model.box_head(features, rois)

    head = {"class_logits": spec(1, r, k + 1), "box_deltas": spec(1, r, k, 4), "rois": rois,
            "roi_valid": spec(1, r, dtype="bool")}

    @stage([head, image_shape, scale], model)
    def postprocess(outputs, image_shape, scale):
        return model.postprocess(outputs, image_shape, scale)

    fns = {"backbone": backbone, "roi_head": roi_head, "postprocess": postprocess}
    detect_spec = {"images": images, "image_shape": image_shape, "scale": scale}
    if model.use_rpn:
        @stage([features, image_shape], model)
        def proposals(features, image_shape):
            outputs = model.rpn(features, image_shape)
            return outputs["proposals"], outputs["proposal_valid"]

        fns["proposals"] = proposals
    else:
        detect_spec["proposals"] = rois
    fns["detect"] = Stage(model.predict_step, [detect_spec], model)
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
        proposal_count += int(np.sum(keras.ops.convert_to_numpy(valid)))
        detection_count += int(keras.ops.convert_to_numpy(fns["postprocess"](*post_args)["num_detections"])[0])
        inputs["backbone"].append((batch["images"],))
        inputs["proposals"].append((features, batch["image_shape"]))
        inputs["roi_head"].append((features, boxes))
        inputs["postprocess"].append(post_args)
        inputs["detect"].append((batch,))
    result = timer_result(name, *time_stages(fns, inputs, setup.warmup, setup.runs))
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
    result = timer_result("fast_rcnn", seconds, flops, methods, notes)
    result["end_to_end_with_proposals"] = seconds["detect"] + search_seconds
    mean = np.mean([len(b) for b in boxes])
    result["notes"].append(
        f"fast_rcnn: {mean:.0f} selective-search proposals per image on average (RoI head traced for {count}); "
        f"predict_step() {seconds['detect']:.3g} s network only, {result['end_to_end_with_proposals']:.3g} s with "
        f"selective search ({search_seconds:.3g} s)"
    )
    return result
