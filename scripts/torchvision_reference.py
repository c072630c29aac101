"""torchvision's own outputs for the zoo parity tests (runs where torch + torchvision are).

    python scripts/torchvision_reference.py --arch fasterrcnn_resnet50_fpn --seed 0 \
        --images a.png b.png --out DIR [--checkpoint FILE.pth]

Builds the torchvision detector (`--checkpoint`: its weights; otherwise random weights from
`torch.manual_seed(seed)`, torchvision's own initialisation, saved as DIR/state_dict.pth with
torch.save(model.state_dict())) with the score threshold 0, runs it in eval mode on each image
(uint8 RGB PNG/JPEG read with PIL, as a float tensor in [0, 1]) and writes DIR/reference.npz:

  <i>_boxes (D, 4) xyxy original pixels, <i>_scores (D,), <i>_labels (D,) (COCO ids 1..90),
  <i>_input (3, Hp, Wp) the normalized, padded batch image GeneralizedRCNNTransform made,
  <i>_image_size (2,) its resized (height, width), <i>_features_<name> (C, H, W) for each map of
  backbone(+FPN), <i>_proposals (P, 4) the RPN's proposals in resized-image pixels; Mask R-CNN
  also <i>_masks (D, H, W) bool, its pasted masks at probability >= 0.5.

`--calibrate-bn`: before saving, every BatchNorm's running statistics are set from the images
(one forward pass in training mode with cumulative averages). A randomly initialised
MobileNetV3 otherwise shrinks activations to ~1e-8 by its last stage, so every RPN score and
class score ties and the order of equal scores, not the model, decides the detections.

Needs only torch, torchvision, numpy and Pillow; no network (no weights are downloaded).
"""

import argparse
import json
import os

import numpy as np
import torch
import torchvision
from PIL import Image

ARCHS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
         "maskrcnn_resnet50_fpn")


def build(arch, checkpoint, seed):
    torch.manual_seed(seed)
    builder = getattr(torchvision.models.detection, arch)
    kwargs = {"weights": None, "weights_backbone": None, "box_score_thresh": 0.0}
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        # Published checkpoints are trained: their BatchNorm is torchvision's frozen one.
        trained = any(k.endswith("running_var") for k in state) and not any(
            k.endswith("num_batches_tracked") for k in state)
        if trained:
            kwargs["norm_layer"] = torchvision.ops.misc.FrozenBatchNorm2d
        model = builder(**{k: v for k, v in kwargs.items() if k != "norm_layer"})
        model.load_state_dict(state)
    else:
        model = builder(**kwargs)
    return model.eval()


def calibrate(model, images):
    """Running mean / variance of every BatchNorm2d from one pass over `images` (training mode,
    momentum None = cumulative average), then back to eval mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.eval()
    for m in norms:
        m.train()
    with torch.no_grad():
        batch = model.transform(images)[0]
        features = model.backbone(batch.tensors)
        if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.roi_heads.box_head.modules()):
            proposals, _ = model.rpn(batch, features)
            model.roi_heads.box_head(model.roi_heads.box_roi_pool(features, proposals, batch.image_sizes))
    model.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True, choices=ARCHS)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibrate-bn", action="store_true", help="BatchNorm statistics from the images")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    model = build(args.arch, args.checkpoint, args.seed)
    images = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255.0
              for p in args.images]
    if args.calibrate_bn:
        calibrate(model, images)
    if not args.checkpoint:
        torch.save(model.state_dict(), os.path.join(args.out, "state_dict.pth"))

    captured = {}
    model.backbone.register_forward_hook(lambda m, i, o: captured.__setitem__("features", o))
    model.rpn.register_forward_hook(lambda m, i, o: captured.__setitem__("proposals", o[0]))
    model.transform.register_forward_hook(lambda m, i, o: captured.__setitem__("images", o[0]))
    arrays = {}
    with torch.no_grad():
        for i, tensor in enumerate(images):
            (result,) = model([tensor])
            arrays[f"{i}_boxes"] = result["boxes"].numpy()
            arrays[f"{i}_scores"] = result["scores"].numpy()
            arrays[f"{i}_labels"] = result["labels"].numpy()
            if "masks" in result:  # (D, 1, H, W) probabilities, pasted into the image
                arrays[f"{i}_masks"] = result["masks"][:, 0].numpy() >= 0.5
            arrays[f"{i}_input"] = captured["images"].tensors[0].numpy()
            arrays[f"{i}_image_size"] = np.asarray(captured["images"].image_sizes[0])
            for name, value in captured["features"].items():
                arrays[f"{i}_features_{name}"] = value[0].numpy()
            arrays[f"{i}_proposals"] = captured["proposals"][0].numpy()
    np.savez_compressed(os.path.join(args.out, "reference.npz"), **arrays)
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump({"arch": args.arch, "seed": args.seed, "images": args.images,
                   "torch": torch.__version__, "torchvision": torchvision.__version__}, f, indent=1)
    print(f"reference outputs: {args.out}")


if __name__ == "__main__":
    main()
