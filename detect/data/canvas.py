"""Canvas rules: the canvas a model is built on and the canvases a batch is padded to (no
TensorFlow: the models and the NumPy input path import them on every backend)."""

RESIZE_RULES = ("detect", "torchvision")


def canvas_for(max_size, canvas=None):
    """A square (max_size rounded up to 32) canvas, or the explicit (height, width) canvas.

    The canvas a model is built on; the pipeline uses transforms.canvases. `per_image`
    canvases vary with each image: the model's (the one exports take) is then the square."""
    if canvas and canvas != "per_image":
        return int(canvas[0]), int(canvas[1])
    side = int(-(-int(max_size) // 32) * 32)
    return side, side


def canvases(min_size, max_size, canvas=None, multiple=32):
    """(landscape, portrait) canvases (height, width) for the resize rule.

    Under "shorter side min_size, longer side at most max_size" a landscape or square image
    (width >= height) becomes at most min_size x max_size (height x width), a portrait one
    at most max_size x min_size. The landscape canvas is that bound rounded up to
    `multiple` (or the explicit `canvas` [height, width]); the portrait canvas is its
    transpose. 375x500 (WxH) at min 600 / max 1000 -> 600x800 fits the portrait canvas
    (1024, 608) whichever canvas it came with.
    """
    if canvas:
        landscape = (int(canvas[0]), int(canvas[1]))
    else:
        landscape = tuple(int(-(-int(side) // multiple) * multiple) for side in (min_size, max_size))
    return landscape, (landscape[1], landscape[0])


def per_image_canvas(height, width, multiple=32):
    """(Hc, Wc): the content size rounded up to `multiple` (torchvision's batch_images and
    detectron2's size_divisibility for a batch of one)."""
    return (-(-height // multiple)) * multiple, (-(-width // multiple)) * multiple


def is_portrait(height, width):
    """True where height > width (a (content) shape that needs the portrait canvas)."""
    return height > width
