"""Dataset statistics and a picture grid (`detect data inspect`)."""

import math

import numpy as np

from detect.errors import DetectError

# COCO's object-size ranges, by box area in pixels.
SMALL_AREA = 32**2
MEDIUM_AREA = 96**2
CELL_PIXELS = 300
DPI = 100


def inspect(dataset):
    """Statistics of a Dataset.

    Returns:
        dict with keys: source, images, negative_images, boxes, classes (K),
        boxes_per_class {name: count} (in label order), sizes {small, medium, large}
        (box area < 32^2, < 96^2, else), iscrowd, difficult (counts), and image_sizes
        {min_width, max_width, min_height, max_height} (None for an empty dataset).
    """
    counts = np.zeros(len(dataset.classes), np.int64)
    sizes = {"small": 0, "medium": 0, "large": 0}
    crowd = difficult = negatives = 0
    for record in dataset.records:
        negatives += int(len(record.boxes) == 0)
        # minlength pads classes without boxes; labels are 1..K so index 0 is unused.
        counts += np.bincount(record.labels, minlength=len(counts) + 1)[1:len(counts) + 1]
        boxes = record.boxes
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        sizes["small"] += int(np.count_nonzero(area < SMALL_AREA))
        sizes["medium"] += int(np.count_nonzero((area >= SMALL_AREA) & (area < MEDIUM_AREA)))
        sizes["large"] += int(np.count_nonzero(area >= MEDIUM_AREA))
        crowd += int(np.count_nonzero(record.iscrowd))
        difficult += int(np.count_nonzero(record.difficult))
    widths = [r.width for r in dataset.records]
    heights = [r.height for r in dataset.records]
    return {
        "source": dataset.source,
        "images": len(dataset),
        "negative_images": negatives,
        "boxes": dataset.num_boxes(),
        "classes": len(dataset.classes),
        "boxes_per_class": {name: int(n) for name, n in zip(dataset.classes, counts)},
        "sizes": sizes,
        "iscrowd": crowd,
        "difficult": difficult,
        "image_sizes": {
            "min_width": min(widths, default=None),
            "max_width": max(widths, default=None),
            "min_height": min(heights, default=None),
            "max_height": max(heights, default=None),
        },
    }


def format_report(stats):
    """Multi-line text of an inspect() dict."""
    sizes, dims = stats["sizes"], stats["image_sizes"]
    lines = [
        f"dataset: {stats['source']}",
        f"images: {stats['images']} ({stats['negative_images']} without boxes)",
        f"boxes: {stats['boxes']} ({stats['iscrowd']} crowd, {stats['difficult']} difficult)",
        f"box sizes: {sizes['small']} small (< 32^2 px), {sizes['medium']} medium "
        f"(< 96^2 px), {sizes['large']} large",
    ]
    if dims["min_width"] is not None:
        lines.append(
            f"image sizes: width {dims['min_width']}..{dims['max_width']}, "
            f"height {dims['min_height']}..{dims['max_height']}"
        )
    lines.append(f"classes: {stats['classes']}")
    width = max((len(name) for name in stats["boxes_per_class"]), default=0)
    for name, count in stats["boxes_per_class"].items():
        lines.append(f"  {name:<{width}}  {count}")
    return "\n".join(lines)


def plot_grid(dataset, path, num=16, seed=0):
    """Save a PNG grid of up to num randomly chosen images with their boxes and class names.

    The same seed picks the same images. Raises DetectError for an empty dataset.
    """
    from matplotlib.figure import Figure

    from detect.data.images import read_image
    from detect.inference.draw import draw_detections

    if len(dataset) == 0:
        raise DetectError(f"dataset {dataset.source} has no images to plot")
    rng = np.random.default_rng(seed)
    count = min(int(num), len(dataset))
    chosen = sorted(rng.choice(len(dataset), size=count, replace=False))
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    # Figure (not pyplot) keeps this free of GUI backends and global figure state.
    inches = CELL_PIXELS / DPI
    figure = Figure(figsize=(inches * cols, inches * rows))
    for slot, index in enumerate(chosen, start=1):
        record = dataset.records[index]
        image = read_image(record.path)
        # Tiny images are enlarged first so the drawn names stay legible in a 300 px cell.
        factor = max(1, CELL_PIXELS // max(image.shape[:2]))
        image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
        image = draw_detections(image, record.boxes * factor, record.labels,
                                dataset.classes, None)
        axis = figure.add_subplot(rows, cols, slot)
        axis.imshow(image)
        axis.set_title(f"{record.file_name} ({len(record.boxes)})", fontsize=8)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=DPI)
    return path
