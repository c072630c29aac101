"""inspect(): counts per class, negatives, COCO size ranges; format_report; plot_grid."""

import os

import numpy as np
import pytest
from PIL import Image

from detect.data.coco import load_coco
from detect.data.inspect import format_report, inspect, plot_grid
from detect.data.records import Dataset, Record
from detect.errors import DetectError

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
COCO_JSON = os.path.join(FIXTURES, "coco", "annotations", "instances.json")


def _sized_dataset():
    boxes = [
        [0, 0, 31, 33],    # area 31 * 33 = 1023 < 32^2 = 1024: small
        [0, 0, 32, 32],    # area 1024: medium (small is strictly below 32^2)
        [0, 0, 96, 95],    # area 9120 < 96^2 = 9216: medium
        [0, 0, 96, 96],    # area 9216: large
    ]
    first = Record(1, "a.png", "/a.png", 100, 100, boxes=boxes, labels=[1, 2, 2, 2],
                   iscrowd=[False, False, False, True], difficult=[True, False, False, False])
    second = Record(2, "b.png", "/b.png", 50, 120)
    return Dataset(["cat", "dog", "eel"], [first, second], source="hand")


def test_counts_and_size_ranges():
    stats = inspect(_sized_dataset())
    assert stats["images"] == 2 and stats["negative_images"] == 1 and stats["boxes"] == 4
    assert stats["boxes_per_class"] == {"cat": 1, "dog": 3, "eel": 0}
    assert stats["sizes"] == {"small": 1, "medium": 2, "large": 1}
    assert (stats["iscrowd"], stats["difficult"]) == (1, 1)
    assert stats["image_sizes"] == {"min_width": 50, "max_width": 100,
                                    "min_height": 100, "max_height": 120}


def test_coco_fixture_counts():
    stats = inspect(load_coco(COCO_JSON))
    # Labels: square (id 3) x1, circle (id 7) x2 (one crowd), triangle (id 90) x1.
    assert stats["boxes_per_class"] == {"square": 1, "circle": 2, "triangle": 1}
    # Areas 20*15=300, 12.25*8=98, 30*20=600, 20*10=200: all below 32^2.
    assert stats["sizes"] == {"small": 4, "medium": 0, "large": 0}
    assert (stats["images"], stats["negative_images"], stats["iscrowd"]) == (3, 1, 1)


def test_format_report():
    text = format_report(inspect(_sized_dataset()))
    assert "images: 2 (1 without boxes)" in text
    assert "boxes: 4 (1 crowd, 1 difficult)" in text
    assert "1 small (< 32^2 px), 2 medium (< 96^2 px), 1 large" in text
    assert "image sizes: width 50..100, height 100..120" in text
    assert text.splitlines()[-3:] == ["  cat  1", "  dog  3", "  eel  0"]


def test_empty_dataset_report():
    stats = inspect(Dataset([], [], source="none"))
    assert (stats["images"], stats["boxes"]) == (0, 0)
    assert stats["image_sizes"]["min_width"] is None
    assert "image sizes" not in format_report(stats)


def test_plot_grid_writes_png(tmp_path):
    dataset = load_coco(COCO_JSON)
    out = tmp_path / "grid.png"
    plot_grid(dataset, str(out), num=2, seed=0)
    with Image.open(out) as image:
        # 2 images -> a 2 x 1 grid of 300 px cells.
        assert image.format == "PNG" and image.size == (600, 300)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 0  # something was drawn, not a blank canvas


def test_plot_grid_more_than_available(tmp_path):
    out = tmp_path / "grid.png"
    plot_grid(load_coco(COCO_JSON), str(out), num=16)
    with Image.open(out) as image:
        # 3 images -> ceil(sqrt(3)) = 2 columns, 2 rows.
        assert image.size == (600, 600)


def test_plot_grid_empty_dataset(tmp_path):
    with pytest.raises(DetectError, match="no images to plot"):
        plot_grid(Dataset([], [], source="none"), str(tmp_path / "grid.png"))
