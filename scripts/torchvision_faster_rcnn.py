#!/usr/bin/env python3
"""Peer timing: torchvision's Faster R-CNN in the paper's VGG16 configuration, on this CPU.

The reference configuration both sides must use for a fair ratio:
  VGG16 conv1_1..conv5_3 (stride 16, 512 channels), 9 anchors (sizes 128/256/512 x ratios
  0.5/1/2), RPN pre-NMS top 6000 / post-NMS top 300 at test, NMS 0.7, 7x7 RoI pooling,
  fc6/fc7 of 4096, 21 classes, one 600x800 RGB image, float32, weights random.

Copied from shared/peers/torchvision_faster_rcnn.py; this copy adds `--precision bf16`:
the model runs under torch.autocast("cpu", dtype=torch.bfloat16), torch's own mixed
precision on CPU (convolutions and linear layers in bfloat16, weights float32), the
torch counterpart of `detect ... --precision bf16`. scripts/compare_peer.py runs it.

Usage (torch lives in its own virtual environment, never in the project's):
  python3 -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.14.1 torchvision==0.29.1
  /tmp/peer/bin/python scripts/torchvision_faster_rcnn.py [--mode infer|train] [--runs 5]
      [--precision float32|bf16]

Prints one JSON line: {"peer": "torchvision", "mode": ..., "median_s": ..., "runs": [...]}.
Time the project's own equivalent in the same shell session, right before or after, and
report the ratio ours/peer: these machines are noisy, absolute seconds are not comparable
across runs.
"""
import argparse, contextlib, json, statistics, time

import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign


def build(num_classes=21):
    backbone = torchvision.models.vgg16(weights=None).features[:-1]  # drop pool5: conv5_3, stride 16
    backbone.out_channels = 512
    return FasterRCNN(
        backbone, num_classes=None,
        rpn_anchor_generator=AnchorGenerator(sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(512 * 7 * 7, 4096),
        box_predictor=FastRCNNPredictor(4096, num_classes),
        min_size=600, max_size=1000,
        rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=300,
        rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
        box_batch_size_per_image=128,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["infer", "train"], default="infer")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--height", type=int, default=600)
    ap.add_argument("--width", type=int, default=800)
    ap.add_argument("--precision", choices=["float32", "bf16"], default="float32",
                    help="bf16: torch.autocast('cpu', dtype=torch.bfloat16) around the model")
    args = ap.parse_args()
    def autocast():
        if args.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()
    torch.manual_seed(0)
    model = build()
    image = [torch.rand(3, args.height, args.width)]
    times = []
    if args.mode == "infer":
        model.eval()
        with torch.no_grad(), autocast():
            model(image)  # warm-up
            for _ in range(args.runs):
                t = time.perf_counter(); model(image); times.append(time.perf_counter() - t)
    else:
        model.train()
        target = [{"boxes": torch.tensor([[50., 60., 300., 400.], [400., 100., 700., 500.], [100., 300., 250., 580.]]),
                   "labels": torch.tensor([1, 2, 3])}]
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        def step():
            opt.zero_grad()
            with autocast():
                loss = sum(model(image, target).values())
            loss.backward(); opt.step()
        step()  # warm-up
        for _ in range(args.runs):
            t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    print(json.dumps({"peer": "torchvision", "version": torchvision.__version__, "mode": args.mode,
                      "threads": torch.get_num_threads(), "image": [args.height, args.width], "precision": args.precision,
                      "torch": torch.__version__,
                      "median_s": round(statistics.median(times), 4), "runs": [round(t, 4) for t in times]}))


if __name__ == "__main__":
    main()
