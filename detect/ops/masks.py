"""Instance-mask maths: mask targets of RoIs (keras.ops) and pasting RoI masks into images (NumPy).

Shapes: N images, G padded ground-truth objects, Hc x Wc canvas, R RoIs per image, S the
mask side (28). Boxes are xyxy pixels with continuous edges (pixel j covers [j, j + 1)).
"""

import numpy as np
from keras import ops

from detect.ops.boxes import pairwise_iou
from detect.ops.roi_pool import roi_align_flat


def matched_gt(rois, gt_boxes, gt_labels):
    """(N, R) int32 index of the ground-truth box each RoI overlaps most (padding gt never
    wins; with no gt at all, 0). For a foreground RoI this is the object the sampler
    matched it to (the matcher takes the best IoU, which is >= fg_iou)."""
    def one(args):
        boxes, labels, image_rois = args
        iou = ops.where((labels > 0)[:, None], pairwise_iou(boxes, image_rois), -1.0)  # (G, R)
        return ops.cast(ops.argmax(iou, axis=0), "int32")

    return ops.map(one, (ops.cast(gt_boxes, "float32"), ops.cast(gt_labels, "int32"), ops.cast(rois, "float32")))


def mask_targets(gt_masks, gt_index, rois, size, sampling_ratio=2):
    """(N, R, S, S) float32 0/1 targets: each RoI's matched gt mask RoIAligned into the RoI.

    The mask (N, G, Hc, Wc) 0/1 is sampled like features (RoIAlign aligned, spatial scale 1,
    `sampling_ratio`^2 bilinear samples a bin) and thresholded at 0.5 (detectron2's
    BitMasks.crop_and_resize), so a bin is foreground when most of it lies on the object.
    gt_index: (N, R) int32 row of gt_masks per RoI (`matched_gt`); rois: (N, R, 4) canvas px.
    """
    n, g = ops.shape(gt_masks)[0], gt_masks.shape[1]
    r = rois.shape[1]
    planes = ops.reshape(ops.cast(gt_masks, "float32"), (-1, ops.shape(gt_masks)[2], ops.shape(gt_masks)[3], 1))
    image = ops.repeat(ops.arange(n, dtype="int32")[:, None], r, axis=1)
    index = ops.reshape(image * g + ops.cast(gt_index, "int32"), (-1,))
    crops = roi_align_flat(planes, ops.reshape(rois, (-1, 4)), index, size, 1.0, sampling_ratio)
    return ops.reshape(ops.cast(crops[..., 0] >= 0.5, "float32"), (n, r, size, size))


def paste_mask(mask, box, height, width, threshold=0.5):
    """One S x S mask (probabilities) pasted into an image: (height, width) bool.

    Pixel (x, y) of the image, centre (x + 0.5, y + 0.5), reads the mask bilinearly at
    u = (x + 0.5 - x1) / (x2 - x1) * S - 0.5 (mask cell j has its centre at j + 0.5 of
    the box's S cells; detectron2's paste_masks_in_image, grid_sample align_corners=False,
    border cells clamped) and is on when that value is >= threshold; pixels whose centre
    lies outside the box are off. box: (4,) xyxy in the image's pixels.
    """
    out = np.zeros((int(height), int(width)), bool)
    mask = np.asarray(mask, np.float32)
    size_y, size_x = mask.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        return out
    # Pixels whose centre is inside the box: x + 0.5 in [x1, x2).
    cols = np.arange(max(int(np.floor(x1 - 0.5)), 0), min(int(np.ceil(x2 - 0.5)), int(width)))
    rows = np.arange(max(int(np.floor(y1 - 0.5)), 0), min(int(np.ceil(y2 - 0.5)), int(height)))
    cols = cols[(cols + 0.5 >= x1) & (cols + 0.5 < x2)]
    rows = rows[(rows + 0.5 >= y1) & (rows + 0.5 < y2)]
    if not len(cols) or not len(rows):
        return out
    u = np.clip((cols + 0.5 - x1) / (x2 - x1) * size_x - 0.5, 0, size_x - 1)
    v = np.clip((rows + 0.5 - y1) / (y2 - y1) * size_y - 0.5, 0, size_y - 1)
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    u1, v1 = np.minimum(u0 + 1, size_x - 1), np.minimum(v0 + 1, size_y - 1)
    du, dv = (u - u0)[None, :], (v - v0)[:, None]
    top = mask[v0][:, u0] * (1 - du) + mask[v0][:, u1] * du
    bottom = mask[v1][:, u0] * (1 - du) + mask[v1][:, u1] * du
    values = top * (1 - dv) + bottom * dv
    out[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = values >= threshold
    return out


PASTE_RULES = ("detectron2", "torchvision")


def _axis_weights(size_in, size_out):
    """Source indices and weights of torch's bilinear interpolate(align_corners=False) along one
    axis: source = max((i + 0.5) * in / out - 0.5, 0), between floor(source) and the next cell."""
    source = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(int), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = (source - low).astype(np.float32)
    return low, high, frac


def _resize_bilinear(image, height, width):
    """(h, w) float32 -> (height, width), bilinear with half-pixel centres and no antialiasing."""
    y0, y1, fy = _axis_weights(image.shape[0], height)
    x0, x1, fx = _axis_weights(image.shape[1], width)
    rows = image[y0] * (1 - fy)[:, None] + image[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx)[None, :] + rows[:, x1] * fx[None, :]


def paste_mask_torchvision(mask, box, height, width, threshold=0.5):
    """One S x S mask pasted as torchvision's paste_masks_in_image pastes it: the mask padded
    by one zero cell on each side and its box grown by the same factor (S + 2) / S about its
    centre, the box's corners truncated to integers (x1, y1, x2, y2), the padded mask resized
    bilinearly (half-pixel centres, no antialiasing) to (y2 - y1 + 1) x (x2 - x1 + 1) pixels
    and placed with its top-left at (x1, y1), cut to the image; on where >= threshold."""
    out = np.zeros((int(height), int(width)), bool)
    mask = np.pad(np.asarray(mask, np.float32), 1)
    scale = mask.shape[1] / (mask.shape[1] - 2.0)
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    half_w, half_h = (x2 - x1) * 0.5 * scale, (y2 - y1) * 0.5 * scale
    # torch's .to(int64) truncates toward zero.
    x1, x2 = int(np.float32(cx - half_w)), int(np.float32(cx + half_w))
    y1, y2 = int(np.float32(cy - half_h)), int(np.float32(cy + half_h))
    w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    resized = _resize_bilinear(mask, h, w)
    xa, xb = max(x1, 0), min(x2 + 1, int(width))
    ya, yb = max(y1, 0), min(y2 + 1, int(height))
    if xb > xa and yb > ya:
        out[ya:yb, xa:xb] = resized[ya - y1:yb - y1, xa - x1:xb - x1] >= threshold
    return out


def paste_masks(masks, boxes, height, width, threshold=0.5, rule="detectron2"):
    """(D, S, S) masks into (D, height, width) bool at their (D, 4) xyxy boxes: `paste_mask`
    (rule detectron2) or `paste_mask_torchvision`."""
    paste = paste_mask_torchvision if rule == "torchvision" else paste_mask
    out = np.zeros((len(masks), int(height), int(width)), bool)
    for index, (mask, box) in enumerate(zip(masks, boxes)):
        out[index] = paste(mask, box, height, width, threshold)
    return out
