"""The canvas a model is built on (no TensorFlow: the models import it on every backend)."""


def canvas_for(max_size, canvas=None):
    """A square (max_size rounded up to 32) canvas, or the explicit (height, width) canvas.

    The canvas a model is built on; the pipeline uses transforms.canvases. `per_image`
    canvases vary with each image: the model's (the one exports take) is then the square."""
    if canvas and canvas != "per_image":
        return int(canvas[0]), int(canvas[1])
    side = int(-(-int(max_size) // 32) * 32)
    return side, side
