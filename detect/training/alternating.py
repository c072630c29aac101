"""The Faster R-CNN paper's 4-step alternating training (`training.schedule: alternating`).

1. Train an RPN (backbone + RPN head; RPN losses only).
2. Train a separate detector (a freshly initialized network) on the proposals of the
   step-1 RPN, computed once over the training set (flipped with their images).
3. Initialize the RPN head from step 1 on the step-2 network, fix the shared backbone and
   the detection head, and fine-tune only the RPN layers.
4. Keep the backbone and the RPN fixed; fine-tune the detection head on the proposals of
   the step-3 RPN (computed online).
The result is one network whose backbone is shared by the RPN and the detector.

Each step writes its own folder `step{k}/` (checkpoints, history) and, when done, its
weights; a rerun after a crash skips finished steps and resumes the running one.
"""

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from detect.models.registry import build_model

STEP_NAMES = ("1_rpn", "2_detector", "3_rpn_finetune", "4_detector_finetune")


def rpn_proposals(model, tf_dataset, dataset, path=None):
    """Training-time RPN proposals of `model` for every image of a (non-shuffled, non-flipped)
    pipeline: (num_images, P, 4) float32 in original image pixels, zero rows = padding.

    With `path`, they are streamed into that proposal file instead (proposals.cache format,
    read back one image at a time by the pipeline) and path is returned: nothing of size
    num_images x P stays in RAM.
    """

    @tf.function(reduce_retracing=True)
    def propose(inputs):
        return model.propose(inputs, training_counts=True)

    boxes_by_image = _boxes_by_image(propose, tf_dataset)
    if path is not None:
        from detect.proposals.cache import write_proposals

        return write_proposals(path, dataset, boxes_by_image, {"source": "rpn"})
    by_id = dict(boxes_by_image)
    size = next(iter(by_id.values())).shape[0]
    out = np.zeros((len(dataset.records), size, 4), np.float32)
    for i, record in enumerate(dataset.records):
        if record.image_id in by_id:
            out[i] = by_id[record.image_id]
    return out


def _set_trainable(model, trunk, rpn, head):
    model.trunk.trainable = trunk
    if model.rpn_head is not None:
        model.rpn_head.trainable = rpn
    model.roi_head.trainable = head
    model.predictor.trainable = head


def _boxes_by_image(propose, tf_dataset):
    """Yields (image_id, (P, 4) float32 original pixels, invalid rows zero) per image."""
    for batch in tf_dataset:
        inputs = {k: batch[k] for k in ("images", "image_shape")}
        boxes, valid = propose(inputs)
        scale = batch["scale"].numpy()
        boxes = boxes.numpy() / np.concatenate([scale[:, 1:2], scale[:, 0:1]] * 2, axis=1)[:, None, :]
        boxes[~valid.numpy()] = 0.0
        for image_id, b in zip(batch["image_id"].numpy(), boxes):
            yield int(image_id), b.astype(np.float32)


def _epochs(config):
    t = config["training"]
    epochs = t.get("alternating_epochs") or [t["epochs"]] * 4
    if len(epochs) != 4:
        raise ValueError("training.alternating_epochs must list 4 epoch counts")
    return [int(e) for e in epochs]


def train_alternating(config, out_dir, train_set, val_set, skipped, strategy):
    """Run (or resume) the four steps; returns the path of the final model.keras."""
    from detect.training.train import fit_model, make_optimizer, pipeline, steps_per_epoch

    state_path = os.path.join(out_dir, "alternating.json")
    state = json.load(open(state_path)) if os.path.isfile(state_path) else {"done": []}
    epochs = _epochs(config)
    steps = steps_per_epoch(config, train_set)
    t = config["training"]

    def save_state(step):
        state["done"].append(step)
        with open(state_path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(state_path + ".tmp", state_path)

    def run_step(index, model, proposals_train=None, proposals_val=None):
        name = STEP_NAMES[index]
        weights = os.path.join(out_dir, f"step{name}.weights.h5")
        if name in state["done"]:
            model.load_weights(weights)
            return
        print(f"alternating training, step {name}")
        train_ds = pipeline(config, train_set, training=True, skipped=skipped)
        val = None
        if val_set is not None:
            val = (pipeline(config, val_set, training=False), val_set)
        if proposals_train is not None:
            train_ds = pipeline(config, train_set, training=True, skipped=skipped, proposals=proposals_train)
            if val_set is not None:
                val = (pipeline(config, val_set, training=False, proposals=proposals_val), val_set)
        model.compile(optimizer=make_optimizer(t), jit_compile=False)
        step_dir = os.path.join(out_dir, f"step{name}")
        os.makedirs(step_dir, exist_ok=True)
        fit_model(model, config, step_dir, train_ds, val, steps, skipped, epochs=epochs[index])
        model.save_weights(weights)
        save_state(name)

    with strategy.scope():
        rpn_model = build_model(config, train_set.classes)
        rpn_model.stage = "rpn"
        _set_trainable(rpn_model, True, True, False)
    run_step(0, rpn_model)

    ordered = lambda ds: pipeline(config, ds, training=False)  # noqa: E731
    files = [os.path.join(out_dir, f"rpn_proposals_{split}.npz") for split in ("train", "val")]
    proposals_train = rpn_proposals(rpn_model, ordered(train_set), train_set, files[0])
    proposals_val = rpn_proposals(rpn_model, ordered(val_set), val_set, files[1]) if val_set is not None else None
    with strategy.scope():
        model = build_model(config, train_set.classes)
        model.stage = "detector"
        _set_trainable(model, True, False, True)
    run_step(1, model, proposals_train, proposals_val)

    model.rpn_head.set_weights(rpn_model.rpn_head.get_weights())
    model.stage = "rpn"
    _set_trainable(model, False, True, False)
    run_step(2, model)

    model.stage = "detector"
    _set_trainable(model, False, False, True)
    run_step(3, model)

    model.stage = "joint"
    _set_trainable(model, True, True, True)
    final = os.path.join(out_dir, "model.keras")
    model.save(final + ".partial.keras")
    os.replace(final + ".partial.keras", final)
    last_history = os.path.join(out_dir, f"step{STEP_NAMES[3]}", "history.csv")
    if os.path.isfile(last_history):
        shutil.copyfile(last_history, os.path.join(out_dir, "history.csv"))
    return final
