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

import keras
import numpy as np

from detect.data.splits import pipeline
from detect.io import atomic_path, write_json
from detect.models.registry import build_model
from detect.training.init_from import apply_init
from detect.runtime import jit_compile
from detect.training.loop import fit_model, steps_per_epoch
from detect.training.optimizers import build_optimizer
from detect.ops.boxes import scale_boxes_np

STEP_NAMES = ("1_rpn", "2_detector", "3_rpn_finetune", "4_detector_finetune")


def rpn_proposals(model, tf_dataset, dataset, path=None):
    """Training-time RPN proposals of `model` for every image of a (non-shuffled, non-flipped)
    pipeline: (num_images, P, 4) float32 in original image pixels, zero rows = padding.

    With `path`, they are streamed into that proposal file instead (proposals.cache format,
    read back one image at a time by the pipeline) and path is returned: nothing of size
    num_images x P stays in RAM.
    """

    from detect.inference.predict_function import traced

    @traced
    def propose(inputs):
        proposals, valid, _ = model.propose(inputs, model.features(inputs["images"]), training=True)
        return proposals, valid

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


def _boxes_by_image(propose, tf_dataset):
    """Yields (image_id, (P, 4) float32 original pixels, invalid rows zero) per image."""
    for batch in tf_dataset:
        inputs = {k: keras.ops.convert_to_tensor(np.asarray(batch[k])) for k in ("images", "image_shape")}
        boxes, valid = (keras.ops.convert_to_numpy(t) for t in propose(inputs))
        scale = np.asarray(batch["scale"])
        boxes = scale_boxes_np(boxes, 1 / scale[:, 1, None], 1 / scale[:, 0, None])
        boxes[~valid] = 0.0
        for image_id, b in zip(np.asarray(batch["image_id"]), boxes):
            yield int(image_id), b.astype(np.float32)


def _epochs(config):
    t = config["training"]
    epochs = t.get("alternating_epochs") or [t["epochs"]] * 4
    if len(epochs) != 4:
        raise ValueError("training.alternating_epochs must list 4 epoch counts")
    return [int(e) for e in epochs]


class _Schedule:
    """The four steps' shared state: which are done (alternating.json), where they write."""

    def __init__(self, config, out_dir, train_set, val_set, skipped, meter):
        self.config, self.out_dir, self.skipped, self.meter = config, out_dir, skipped, meter
        self.train_set, self.val_set = train_set, val_set
        self.state_path = os.path.join(out_dir, "alternating.json")
        self.state = {"done": []}
        if os.path.isfile(self.state_path):
            with open(self.state_path, encoding="utf-8") as f:
                self.state = json.load(f)
        self.epochs = _epochs(config)
        self.steps = steps_per_epoch(config, train_set)

    def _pipelines(self, proposals_train, proposals_val):
        config, skipped = self.config, self.skipped
        train_ds = pipeline(config, self.train_set, training=True, skipped=skipped, proposals=proposals_train)
        val = None
        if self.val_set is not None:
            val = (pipeline(config, self.val_set, training=False, proposals=proposals_val), self.val_set)
        return train_ds, val

    def run(self, index, model, proposals_train=None, proposals_val=None):
        """Train step `index` (0..3), or load its weights when a previous run finished it."""
        name = STEP_NAMES[index]
        weights = os.path.join(self.out_dir, f"step{name}.weights.h5")
        if name in self.state["done"]:
            model.load_weights(weights)
            return
        print(f"alternating training, step {name}")
        train_ds, val = self._pipelines(proposals_train, proposals_val)
        model.compile(optimizer=build_optimizer(self.config["training"]), jit_compile=jit_compile())
        step_dir = os.path.join(self.out_dir, f"step{name}")
        os.makedirs(step_dir, exist_ok=True)
        fit_model(model, self.config, step_dir, train_ds, val, self.steps, self.skipped, epochs=self.epochs[index],
                  meter=self.meter)
        with atomic_path(weights) as tmp:
            model.save_weights(tmp)
        self.state["done"].append(name)
        write_json(self.state_path, self.state)


def _model(config, classes, strategy, stage, **trainable):
    with strategy.scope():
        model = build_model(config, classes)
        apply_init(model, config)
    model.stage = stage
    model.set_trainable(**trainable)
    return model


def train_alternating(config, out_dir, train_set, val_set, skipped, strategy, meter=None):
    """Run (or resume) the four steps; returns the path of the final model.keras."""
    schedule = _Schedule(config, out_dir, train_set, val_set, skipped, meter)
    rpn_model = _model(config, train_set.classes, strategy, "rpn", backbone=True, rpn=True, heads=False)
    schedule.run(0, rpn_model)

    ordered = lambda ds: pipeline(config, ds, training=False)  # noqa: E731
    files = [os.path.join(out_dir, f"rpn_proposals_{split}.npz") for split in ("train", "val")]
    proposals_train = rpn_proposals(rpn_model, ordered(train_set), train_set, files[0])
    proposals_val = rpn_proposals(rpn_model, ordered(val_set), val_set, files[1]) if val_set is not None else None
    model = _model(config, train_set.classes, strategy, "detector", backbone=True, rpn=False, heads=True)
    schedule.run(1, model, proposals_train, proposals_val)

    model.rpn.set_weights(rpn_model.rpn.get_weights())
    model.stage = "rpn"
    model.set_trainable(backbone=False, rpn=True, heads=False)
    schedule.run(2, model)

    model.stage = "detector"
    model.set_trainable(backbone=False, rpn=False, heads=True)
    schedule.run(3, model)

    model.stage = "joint"
    model.set_trainable(backbone=True, rpn=True, heads=True)
    final = os.path.join(out_dir, "model.keras")
    with atomic_path(final) as tmp:
        model.save(tmp)
    last_history = os.path.join(out_dir, f"step{STEP_NAMES[3]}", "history.csv")
    if os.path.isfile(last_history):
        shutil.copyfile(last_history, os.path.join(out_dir, "history.csv"))
    return final
