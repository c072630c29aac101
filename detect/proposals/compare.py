"""`detect proposals recall`: proposal recall of selective search and of a trained RPN on
the same split, as a markdown table and the Faster R-CNN paper's recall figure."""

import os

import numpy as np

from detect.errors import DetectError
from detect.ops.boxes import valid_mask_np
from detect.proposals.recall import plot_recall, recall_table


def _ground_truth(dataset):
    """Per-image (G, 4) boxes without crowd / difficult regions."""
    out = []
    for record in dataset.records:
        keep = ~(np.asarray(record.iscrowd, bool) | np.asarray(record.difficult, bool))
        out.append(np.asarray(record.boxes, np.float32)[keep])
    return out


def _rpn_proposals(model_dir, config, dataset):
    from detect.models.loading import load_model_dir
    from detect.training.alternating import rpn_proposals
    from detect.data.splits import pipeline

    model, model_config = load_model_dir(model_dir)
    if not model.use_rpn:
        raise DetectError(f"{model_dir}: the model has no RPN (detector {model_config['detector']})")
    ordered = pipeline({**model_config, "dataset": config["dataset"]}, dataset, training=False)
    boxes = rpn_proposals(model, ordered, dataset)
    return [b[valid_mask_np(b)] for b in boxes]


def compare_recall(config, split="val", model_dir=None, proposal_file=None, out_dir="runs/recall"):
    """Recall table + plot for selective search (proposal file) and/or an RPN (model folder)."""
    from detect.proposals.cache import load_proposals
    from detect.data.splits import load_split

    dataset = load_split(config, split)
    if dataset is None:
        raise DetectError(f"config: dataset.{split}.annotations is not set")
    proposal_file = proposal_file or config["proposals"].get(split)
    named = {}
    if proposal_file:
        if not os.path.isfile(proposal_file):
            raise DetectError(f"proposal file not found: {proposal_file}")
        with load_proposals(proposal_file) as proposals:
            named["selective search"] = [proposals.get(r.image_id) for r in dataset.records]
    if model_dir:
        named["RPN"] = _rpn_proposals(model_dir, config, dataset)
    if not named:
        raise DetectError("give --proposals FILE (or proposals.<split> in the config) and/or --model MODEL_DIR")
    gt = _ground_truth(dataset)
    os.makedirs(out_dir, exist_ok=True)
    table = recall_table(named, gt)
    with open(os.path.join(out_dir, "recall.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    plot = plot_recall(named, gt, os.path.join(out_dir, "recall.png"))
    return {"table": table, "plot": plot, "out_dir": out_dir}
