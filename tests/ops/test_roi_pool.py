import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from detect.ops.roi_pool import RoIAlign, RoIPool


def reference_bilinear(fmap, y, x):
    """detectron2's ROIAlign bilinear sample of fmap (H, W, C) at feature coords (y, x)."""
    height, width = fmap.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(fmap.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * fmap[y0, x0] + (1 - ly) * lx * fmap[y0, x1]
            + ly * (1 - lx) * fmap[y1, x0] + ly * lx * fmap[y1, x1])


def reference_roi_align(features, rois, size, scale, ratio):
    """Aligned RoIAlign: bins in image pixels, samples at sub-bin centres, cell k at k."""
    out = np.zeros(rois.shape[:2] + (size, size, features.shape[-1]))
    for b, r in np.ndindex(*rois.shape[:2]):
        x1, y1, x2, y2 = rois[b, r] * scale - 0.5
        bin_w, bin_h = (x2 - x1) / size, (y2 - y1) / size
        for py, px, iy, ix in np.ndindex(size, size, ratio, ratio):
            y = y1 + (py + (iy + 0.5) / ratio) * bin_h
            x = x1 + (px + (ix + 0.5) / ratio) * bin_w
            out[b, r, py, px] += reference_bilinear(features[b], y, x) / ratio**2
    return out


def c_round(value):
    return math.copysign(math.floor(abs(value) + 0.5), value)


def reference_roi_pool(features, rois, size, scale):
    """Caffe RoIPool in float32; also returns the argmax cell of every non-empty bin."""
    height, width = features.shape[1:3]
    out = np.zeros(rois.shape[:2] + (size, size, features.shape[-1]), np.float32)
    argmax_cells = []
    for b, r in np.ndindex(*rois.shape[:2]):
        x1, y1, x2, y2 = [c_round(v) for v in rois[b, r] * np.float32(scale)]
        bin_h = np.float32(max(y2 - y1 + 1, 1)) / np.float32(size)
        bin_w = np.float32(max(x2 - x1 + 1, 1)) / np.float32(size)
        for py, px in np.ndindex(size, size):
            ys = int(np.clip(math.floor(np.float32(py) * bin_h) + y1, 0, height))
            ye = int(np.clip(math.ceil(np.float32(py + 1) * bin_h) + y1, 0, height))
            xs = int(np.clip(math.floor(np.float32(px) * bin_w) + x1, 0, width))
            xe = int(np.clip(math.ceil(np.float32(px + 1) * bin_w) + x1, 0, width))
            if ye <= ys or xe <= xs:
                continue
            region = features[b, ys:ye, xs:xe]
            out[b, r, py, px] = region.max(axis=(0, 1))
            for c in range(features.shape[-1]):
                y, x = np.unravel_index(np.argmax(region[..., c]), region.shape[:2])
                argmax_cells.append((b, ys + y, xs + x, c))
    return out, argmax_cells


def random_rois(rng, batch, count, image_h, image_w):
    xy = rng.uniform(-0.2, 1.0, (batch, count, 2)) * [image_w, image_h]
    wh = rng.uniform(0.02, 0.8, (batch, count, 2)) * [image_w, image_h]
    rois = np.concatenate([xy, xy + wh], -1)
    fixed = [
        [0, 0, image_w, image_h],  # the whole image: touches every border
        [5, 5, 5.5, 5.5],  # smaller than a cell
        [3 * image_w, 3 * image_h, 4 * image_w, 4 * image_h],  # outside
    ]
    rois[:, : len(fixed)] = fixed
    return rois.astype(np.float32)


@pytest.mark.parametrize("size,ratio", [(7, 2), (3, 1), (2, 3)])
def test_roi_align_matches_reference(size, ratio):
    rng = np.random.default_rng(size)
    features = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    rois = random_rois(rng, 2, 10, image_h=9 * 4, image_w=11 * 4)  # stride 4
    layer = RoIAlign(output_size=size, spatial_scale=0.25, sampling_ratio=ratio)
    out = layer(features, rois).numpy()
    assert out.shape == (2, 10, size, size, 3)
    expected = reference_roi_align(features, rois, size, 0.25, ratio)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_roi_align_samples_bin_centres_in_pixel_space():
    ramp = (10 * np.arange(6)[:, None] + np.arange(6)[None, :]).astype(np.float32)  # f = 10y + x
    features = ramp[None, :, :, None]
    # Stride 1: roi columns [1, 5) -> bins [1, 3), [3, 5) centred at pixels x = 2, 4, i.e.
    # feature coords 1.5, 3.5 (cell k is centred at pixel k + 0.5); rows [1, 3) -> y = 1, 2.
    out = RoIAlign(output_size=2, spatial_scale=1.0, sampling_ratio=1)(
        features, np.array([[[1, 1, 5, 3]]], np.float32)
    )
    np.testing.assert_allclose(out.numpy()[0, 0, :, :, 0], [[11.5, 13.5], [21.5, 23.5]], atol=1e-5)
    # Stride 16: the centre of roi [16, 16, 48, 48] is pixel 32 -> feature coord 32/16 - 0.5
    out = RoIAlign(output_size=1, spatial_scale=1 / 16, sampling_ratio=1)(
        features, np.array([[[16, 16, 48, 48]]], np.float32)
    )
    np.testing.assert_allclose(out.numpy().ravel(), [10 * 1.5 + 1.5], atol=1e-5)


def test_roi_align_border_bins_are_not_darkened():
    features = np.ones((1, 4, 5, 2), np.float32)
    out = RoIAlign(output_size=4, spatial_scale=0.5, sampling_ratio=2)(
        features, np.array([[[0, 0, 10, 8]]], np.float32)  # exactly the whole image
    )
    np.testing.assert_allclose(out.numpy(), 1.0, atol=1e-6)


def test_roi_align_gradient_reaches_features():
    rng = np.random.default_rng(0)
    features = tf.constant(rng.normal(size=(2, 6, 7, 2)), tf.float32)
    rois = tf.constant(random_rois(rng, 2, 5, 24, 28))
    layer = RoIAlign(output_size=3, spatial_scale=0.25)
    with tf.GradientTape() as tape:
        tape.watch(features)
        total = tf.reduce_sum(layer(features, rois))
    grad = tape.gradient(total, features)
    assert np.count_nonzero(grad.numpy()) > 0
    # The op is linear in the features, so <gradient, features> equals the output sum.
    np.testing.assert_allclose(tf.reduce_sum(grad * features).numpy(), total.numpy(), rtol=1e-4)


def parse_art(art):
    """Feature map from ASCII art: numbers are cells, '*' marks a bin max, | - + draw bins."""
    rows = []
    for line in art.strip().splitlines():
        line = line.replace("|", " ")
        if line.strip().strip("-+"):
            rows.append(line.split())
    values = np.array([[float(c.strip("*")) for c in row] for row in rows], np.float32)
    marks = np.array([[c.startswith("*") for c in row] for row in rows])
    return values, marks


def _pool_with_gradient(art, roi, size, scale):
    values, marks = parse_art(art)
    features = tf.constant(values[None, :, :, None])
    with tf.GradientTape() as tape:
        tape.watch(features)
        layer = RoIPool(output_size=size, spatial_scale=scale)
        out = layer(features, np.array([[roi]], np.float32))
        total = tf.reduce_sum(out)
    grad = tape.gradient(total, features).numpy()[0, :, :, 0]
    return out.numpy()[0, 0, :, :, 0], grad, marks


def test_roi_pool_hand_drawn_bins():
    # roi [0, 0, 5, 5] at scale 1 -> cells 0..5 (both ends included): 2 x 2 bins of 3 x 3.
    art = """
     1   2   3 |  4   5   6
     7  *9   1 |  2   3   4
     5   6   7 |  8 *10   1
    -----------+------------
     2   3  *8 |  1   1   1
     4   4   4 |  1  *7   2
     3   0   1 |  6   6   5
    """
    out, grad, marks = _pool_with_gradient(art, [0, 0, 5, 5], size=2, scale=1.0)
    np.testing.assert_array_equal(out, [[9, 10], [8, 7]])
    np.testing.assert_array_equal(grad, marks.astype(np.float32))  # max gradient


def test_roi_pool_rounds_half_away_from_zero_and_bins_overlap():
    # roi [2, 2, 9, 5] at scale 0.5 -> [1, 1, 4.5, 2.5] -> C round -> cols 1..5, rows 1..3
    # (round-half-to-even would give cols 1..4, rows 1..2 and miss the 6).
    # cols: width 5, bin 2.5 -> [1+floor(0), 1+ceil(2.5)) = 1..3 and [1+floor(2.5), 1+5) = 3..5
    # rows: height 3, bin 1.5 -> [1, 1+ceil(1.5)) = 1..2 and [1+floor(1.5), 1+3) = 2..3
    # so row 2 and column 3 are shared: the 5 is the max of three bins.
    art = """
     9   0   0   0   0   0   9
     9   1   2   0   3   1   9
     9   0   0  *5   0   0   9
     9   0   4   0   0  *6   9
     9   9   9   9   9   9   9
    """
    out, grad, marks = _pool_with_gradient(art, [2, 2, 9, 5], size=2, scale=0.5)
    np.testing.assert_array_equal(out, [[5, 5], [5, 6]])
    np.testing.assert_array_equal(grad, marks * np.where(parse_art(art)[0] == 5, 3.0, 1.0))


@pytest.mark.parametrize("size,seed", [(7, 0), (3, 1), (2, 2)])
def test_roi_pool_matches_reference(size, seed):
    rng = np.random.default_rng(seed)
    # distinct values, so each bin has one argmax cell
    features = rng.permutation(2 * 10 * 13 * 3).reshape(2, 10, 13, 3).astype(np.float32)
    rois = random_rois(rng, 2, 12, image_h=10 * 8, image_w=13 * 8)  # stride 8
    features_t = tf.constant(features)
    with tf.GradientTape() as tape:
        tape.watch(features_t)
        out = RoIPool(output_size=size, spatial_scale=0.125)(features_t, rois)
        total = tf.reduce_sum(out)
    expected, argmax_cells = reference_roi_pool(features, rois, size, 0.125)
    np.testing.assert_array_equal(out.numpy(), expected)
    expected_grad = np.zeros_like(features)
    for cell in argmax_cells:
        expected_grad[cell] += 1
    np.testing.assert_array_equal(tape.gradient(total, features_t).numpy(), expected_grad)


def test_roi_pool_outside_map_is_zero():
    features = np.full((1, 4, 4, 2), 3.0, np.float32)
    rois = np.array([[[10, 10, 20, 20]]], np.float32)
    out = RoIPool(output_size=2, spatial_scale=1.0)(features, rois)
    np.testing.assert_array_equal(out.numpy(), 0.0)


@pytest.mark.parametrize("layer_class", [RoIAlign, RoIPool])
def test_no_rois_and_dynamic_rois_in_tf_function(layer_class):
    layer = layer_class(output_size=3, spatial_scale=0.25)
    features = np.random.default_rng(0).normal(size=(2, 5, 6, 4)).astype(np.float32)
    assert layer(features, np.zeros((2, 0, 4), np.float32)).shape == (2, 0, 3, 3, 4)

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 4]), tf.TensorSpec([None, None, 4])]
    )
    def run(features, rois):
        return layer(features, rois)

    rois = random_rois(np.random.default_rng(1), 2, 5, 20, 24)
    expected = layer(features, rois).numpy()
    np.testing.assert_allclose(run(features, rois).numpy(), expected, atol=1e-6)
    assert run(features, np.zeros((2, 0, 4), np.float32)).shape == (2, 0, 3, 3, 4)

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 4]), tf.TensorSpec([None, None, 4])]
    )
    def gradient(features, rois):
        with tf.GradientTape() as tape:
            tape.watch(features)
            total = tf.reduce_sum(layer(features, rois))
        return tape.gradient(total, features)

    features = tf.constant(features)
    with tf.GradientTape() as tape:
        tape.watch(features)
        total = tf.reduce_sum(layer(features, rois))
    np.testing.assert_allclose(
        gradient(features, rois).numpy(), tape.gradient(total, features).numpy(), atol=1e-5
    )


@pytest.mark.parametrize("layer_class", [RoIAlign, RoIPool])
def test_config_round_trip_and_functional_model(layer_class, tmp_path):
    layer = layer_class(output_size=4, spatial_scale=0.5)
    restored = layer_class.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()

    features_in = keras.Input((None, None, 3))
    rois_in = keras.Input((None, 4))
    pooled = layer(features_in, rois_in)
    assert tuple(pooled.shape) == (None, None, 4, 4, 3)
    model = keras.Model([features_in, rois_in], pooled)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    features = np.random.default_rng(0).normal(size=(1, 6, 6, 3)).astype(np.float32)
    rois = np.array([[[1, 2, 9, 11]]], np.float32)
    np.testing.assert_allclose(loaded([features, rois]).numpy(), model([features, rois]).numpy())


@pytest.mark.parametrize("layer_class", [RoIAlign, RoIPool])
def test_half_precision_features_keep_their_dtype(layer_class):
    features = np.random.default_rng(0).normal(size=(1, 6, 6, 2)).astype(np.float16)
    rois = np.array([[[1, 2, 9, 11]]], np.float32)
    layer = layer_class(output_size=2, spatial_scale=0.5)
    out = layer(tf.constant(features), rois)
    assert out.dtype == tf.float16
    full = layer(features.astype(np.float32), rois).numpy()
    np.testing.assert_allclose(out.numpy().astype(np.float32), full, atol=1e-2)


@pytest.mark.parametrize("bad", [{"output_size": 0}, {"output_size": 2.5}, {"sampling_ratio": 0}])
def test_rejects_bad_sizes(bad):
    with pytest.raises(ValueError):
        RoIAlign(**bad)


def test_gather_sampling_equals_crop_and_resize_values_and_gradients():
    # The deterministic-on-GPU path (gathers) against TF's kernel, boxes partly outside
    # the image included (crop_and_resize extrapolates 0 there).
    from detect.ops.bilinear import bilinear_crops as bilinear_gather

    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(2, 9, 11, 3)).astype("float32"))
    boxes = tf.constant([[0.1, 0.2, 0.8, 0.9], [-0.2, -0.1, 0.5, 1.3], [0.3, 0.3, 0.3, 0.3], [0.0, 0.0, 1.0, 1.0]],
                        tf.float32)
    index = tf.constant([0, 1, 1, 0])
    for size in (1, 4, 7):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(images)
            expected = tf.image.crop_and_resize(images, boxes, index, [size, size], extrapolation_value=0.0)
            actual = bilinear_gather(images, boxes, index, size)
            weights = tf.constant(rng.normal(size=expected.shape).astype("float32"))
            loss_expected = tf.reduce_sum(expected * weights)
            loss_actual = tf.reduce_sum(actual * weights)
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-5)
        np.testing.assert_allclose(tape.gradient(loss_actual, images).numpy(),
                                   tape.gradient(loss_expected, images).numpy(), atol=1e-5)


def test_roi_align_methods_agree():
    from detect.ops.roi_pool import roi_align_flat

    rng = np.random.default_rng(1)
    features = tf.constant(rng.normal(size=(1, 6, 8, 4)).astype("float32"))
    boxes = tf.constant([[0, 0, 128, 96], [10, 5, 60, 40], [-8, -8, 20, 140]], tf.float32)
    index = tf.zeros([3], tf.int32)
    a = roi_align_flat(features, boxes, index, 3, 1 / 16, 2, method="crop_and_resize")
    b = roi_align_flat(features, boxes, index, 3, 1 / 16, 2, method="gather")
    np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-5)
