"""detect benchmark's Mask R-CNN row: the Faster R-CNN stages plus the mask head's time."""

import os

from detect.benchmark.speed_table import run_benchmark


def test_tiny_mask_rcnn_row_reports_the_mask_head(tmp_path):
    result = run_benchmark(["mask_rcnn"], backbone="tiny", runs=1, warmup=1, image_size=(128, 128),
                           out_dir=str(tmp_path), num_images=1)
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    assert [r["detector"] for r in rows] == ["mask_rcnn"]
    assert rows[0]["detect_s"] > 0 and rows[0]["roi_head_s"] > 0
    with open(os.path.join(str(tmp_path), "speed.md")) as f:
        text = f.read()
    assert "| mask_rcnn |" in text and "mask_rcnn: mask head " in text and "ms per image" in text
