import numpy as np
import pytest
from PIL import Image

from detect.proposals.recall import (
    IOU_THRESHOLDS,
    average_recall,
    best_iou,
    plot_recall,
    recall_at_iou,
    recall_table,
    recall_vs_count,
)

# Image 1: two gt boxes of 10x10 = 100 px^2.
GT1 = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
# Proposals in rank order:
#   p0 [20, 0, 30, 8]:  on gt1, inter 10*8 = 80, union 100           -> IoU 0.8
#   p1 [0, 0, 10, 20]:  on gt0, inter 100, union 200                 -> IoU 0.5
#   p2 [0, 0, 10, 9]:   on gt0, inter 90, union 100                  -> IoU 0.9
#   p3 [50, 50, 60, 60]: no overlap                                   -> IoU 0
P1 = np.array([[20, 0, 30, 8], [0, 0, 10, 20], [0, 0, 10, 9], [50, 50, 60, 60]], np.float32)
# Image 2: one gt box; its only proposal [0, 0, 5, 10] has inter 50, union 100 -> IoU 0.5.
GT2 = np.array([[0, 0, 10, 10]], np.float32)
P2 = np.array([[0, 0, 5, 10]], np.float32)


def test_best_iou_running_max():
    best = best_iou([P1], [GT1], [1, 2, 3, None])
    # Columns gt0, gt1. After p0 only gt1 is covered; p1 gives gt0 0.5; p2 raises it to 0.9.
    np.testing.assert_allclose(best, [[0.0, 0.8], [0.5, 0.8], [0.9, 0.8], [0.9, 0.8]])


def test_recall_at_iou_hand_computed():
    recall = recall_at_iou([P1, P2], [GT1, GT2], iou_thresholds=[0.5, 0.7, 0.85, 0.95])
    # Best IoUs over all proposals: gt0 0.9, gt1 0.8, image-2 gt 0.5 (3 gt boxes).
    # >= 0.5: 3/3; >= 0.7: 2/3; >= 0.85: 1/3 (0.9); >= 0.95: 0/3.
    np.testing.assert_allclose(recall, [1.0, 2 / 3, 1 / 3, 0.0])


def test_recall_at_iou_top_n():
    # First proposal only: gt1 0.8, gt0 0, image-2 gt 0.5.
    recall = recall_at_iou([P1, P2], [GT1, GT2], iou_thresholds=[0.5, 0.7, 0.85], top_n=1)
    np.testing.assert_allclose(recall, [2 / 3, 1 / 3, 0.0])


def test_default_thresholds():
    assert IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    # Best IoUs 0.9, 0.8, 0.5 -> counts per threshold .50..95: 3,2,2,2,2,2,2,1,1,0.
    expected = np.array([3, 2, 2, 2, 2, 2, 2, 1, 1, 0]) / 3
    np.testing.assert_allclose(recall_at_iou([P1, P2], [GT1, GT2]), expected)
    assert average_recall([P1, P2], [GT1, GT2]) == pytest.approx(expected.mean())


def test_recall_vs_count():
    recall = recall_vs_count([P1, P2], [GT1, GT2], counts=(1, 2, 3, 100), iou=0.7)
    # IoU >= 0.7 needs p0 (gt1, 0.8) and p2 (gt0, 0.9); image 2 never reaches 0.7.
    # N=1: 1/3; N=2: 1/3; N=3: 2/3; N=100 (all 4): 2/3.
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])


def test_empty_proposals_give_zero_recall():
    empty = np.zeros((0, 4), np.float32)
    np.testing.assert_array_equal(recall_at_iou([empty, empty], [GT1, GT2]), np.zeros(10))
    # Image 2 alone has a proposal: 1 of 3 gt boxes found at IoU 0.5.
    np.testing.assert_allclose(recall_vs_count([empty, P2], [GT1, GT2], counts=(1, 5)),
                               [1 / 3, 1 / 3])


def test_images_without_gt_add_nothing_and_no_gt_is_nan():
    empty = np.zeros((0, 4), np.float32)
    np.testing.assert_allclose(recall_at_iou([P1, P2], [GT1, empty], [0.5, 0.85]), [1.0, 0.5])
    assert np.all(np.isnan(recall_at_iou([P1], [empty])))
    assert np.all(np.isnan(recall_vs_count([], [], counts=(1, 2))))


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="2 proposal lists but 1 gt lists"):
        recall_at_iou([P1, P2], [GT1])


def test_recall_table():
    table = recall_table({"ss": [P1, P2], "none": [np.zeros((0, 4)), np.zeros((0, 4))]},
                         [GT1, GT2], top_ns=(1, 300), ious=(0.5, 0.7))
    lines = table.strip().split("\n")
    assert lines[0] == ("| method | proposals/image | R@0.5 (N=1) | R@0.7 (N=1) | AR (N=1) "
                        "| R@0.5 (N=300) | R@0.7 (N=300) | AR (N=300) |")
    # ss: 2.5 proposals/image; N=1 best IoUs 0, 0.8, 0.5 -> R@0.5 2/3, R@0.7 1/3,
    # AR = (2+1+1+1+1+1+1+0+0+0)/3/10 = 8/30; all proposals (best 0.9, 0.8, 0.5):
    # R@0.5 1, R@0.7 2/3, AR = (3+2+2+2+2+2+2+1+1+0)/30 = 17/30.
    assert lines[2] == "| ss | 2.5 | 0.667 | 0.333 | 0.267 | 1.000 | 0.667 | 0.567 |"
    assert lines[3] == "| none | 0.0 | 0.000 | 0.000 | 0.000 | 0.000 | 0.000 | 0.000 |"
    assert recall_table({"ss": [P1]}, [np.zeros((0, 4))], top_ns=(10,)).split("\n")[2] == \
        "| ss | 4.0 | - | - | - |"


def test_plot_recall_writes_png(tmp_path):
    path = tmp_path / "plots" / "recall.png"
    assert plot_recall({"ss": [P1, P2], "first": [P1[:1], P2[:1]]}, [GT1, GT2], path) == path
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]
