"""Pasting RoI masks into images, by hand."""

import numpy as np

from detect.ops.masks import paste_mask, paste_masks


def _left_mask():
    # 28x28: columns 0..13 are 1, column 14 is 0.2, the rest 0 (every row).
    mask = np.zeros((28, 28), np.float32)
    mask[:, :14] = 1.0
    mask[:, 14] = 0.2
    return mask


def test_paste_into_an_odd_sized_box_at_the_border():
    # Box (93, 2, 100, 7): 7 x 5 px, flush with the right edge of a 100 x 9 (WxH) image.
    # Pixels whose centre is inside: columns 93..99, rows 2..6. Column x reads the mask at
    # u = (x + 0.5 - 93) / 7 * 28 - 0.5 = 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5:
    # u = 13.5 is halfway between column 13 (1) and 14 (0.2): 0.6 >= 0.5, on; 17.5 and up: 0.
    # So columns 93..96 are on, 97..99 off; every row of the box is on.
    out = paste_mask(_left_mask(), [93.0, 2.0, 100.0, 7.0], 9, 100)
    expected = np.zeros((9, 100), bool)
    expected[2:7, 93:97] = True
    np.testing.assert_array_equal(out, expected)


def test_paste_of_a_box_past_the_image_edge_keeps_the_inside_part():
    # Box (96, 0, 103, 5) reaches 3 px past the right edge of the 100-px image: columns
    # 96..99 are inside, u = (x + 0.5 - 96) / 7 * 28 - 0.5 = 1.5, 5.5, 9.5, 13.5 -> all on.
    out = paste_mask(_left_mask(), [96.0, 0.0, 103.0, 5.0], 9, 100)
    expected = np.zeros((9, 100), bool)
    expected[0:5, 96:100] = True
    np.testing.assert_array_equal(out, expected)


def test_box_without_pixel_centres_and_empty_inputs():
    assert not paste_mask(np.ones((28, 28)), [10.2, 10.2, 10.4, 10.4], 20, 20).any()
    assert not paste_mask(np.ones((28, 28)), [5, 5, 5, 9], 20, 20).any()  # zero width
    assert paste_masks(np.zeros((0, 28, 28)), np.zeros((0, 4)), 20, 30).shape == (0, 20, 30)
    # A full mask fills exactly the pixels whose centre is in the box: (2.5, 1, 6.5, 3)
    # -> columns 2..5 (centres 2.5..5.5), rows 1..2.
    out = paste_masks(np.ones((1, 28, 28)), np.array([[2.5, 1, 6.5, 3]]), 5, 8)
    assert out.sum() == 8 and out[0, 1:3, 2:6].all()


def test_torchvision_paste_by_hand():
    from detect.ops.masks import paste_masks

    # A 2 x 2 mask all ones, box x 2..6, y 1..3 in a 6 x 10 image. torchvision pads the mask to
    # 4 x 4 (ones inside a ring of zeros) and grows the box by 4 / 2 = 2 about its centre (4, 2):
    # x 0..8, y 0..4 (truncated to ints), so the padded mask is resized to 5 x 9 pixels placed at
    # (0, 0). Bilinear at half-pixel centres over the 0,1,1,0 profile: column c reads
    # x = (c + 0.5) * 4 / 9 - 0.5, giving 0.17, 0.61, 1, 1, 1, 0.61, 0.17 for c = 1..7 (c = 2..6
    # non-zero above 0.5); row r reads y = (r + 0.5) * 4 / 5 - 0.5: 0.7, 1, 0.7 for r = 1..3. A
    # pixel is the product: the four corners 0.7 x 0.61 = 0.43 < 0.5 are off.
    mask = np.ones((1, 2, 2), np.float32)
    pasted = paste_masks(mask, np.array([[2, 1, 6, 3]], np.float32), 6, 10, rule="torchvision")[0]
    expected = np.zeros((6, 10), bool)
    expected[1:4, 2:7] = True
    expected[[1, 1, 3, 3], [2, 6, 2, 6]] = False
    np.testing.assert_array_equal(pasted, expected)
    # Past the image edge: the same mask at x 8..12 keeps only the columns inside the image.
    edge = paste_masks(mask, np.array([[8, 1, 12, 3]], np.float32), 6, 10, rule="torchvision")[0]
    assert edge[:, :8].sum() == 0 and edge.any()
