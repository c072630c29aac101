"""collect_detections reports the images it ran, in the order the pipeline delivered
them (grouped by canvas orientation, not in record order), and stops at max_images."""

import numpy as np
import tensorflow as tf

from detect.evaluation.detections import collect_detections


class OneBoxModel:
    """Stands in for a detector: one box [1, 2, 4, 6] of label 1, score 0.9 per image."""

    def predict_step(self, inputs):
        n = tf.shape(inputs["images"])[0]
        return {
            "boxes": tf.tile(tf.constant([[[1.0, 2.0, 4.0, 6.0]]]), [n, 1, 1]),
            "scores": tf.fill([n, 1], 0.9),
            "labels": tf.ones([n, 1], tf.int32),
            "num_detections": tf.ones([n], tf.int32),
        }


def test_seen_ids_follow_the_pipeline_order_and_max_images():
    # Batches arrive portrait-first: ids 7, 3 then 5, 1 (records order would be 1, 3, 5, 7).
    batches = [{"images": tf.zeros([2, 4, 4, 3]), "image_shape": tf.constant([[4, 4]] * 2),
                "image_id": tf.constant(ids)} for ids in ([7, 3], [5, 1])]
    seen = []
    results, count, _ = collect_detections(OneBoxModel(), batches, lambda label: 10 + label, max_images=2,
                                           progress=False, seen_ids=seen)
    assert seen == [7, 3] and count == 2
    assert [r["image_id"] for r in results] == [7, 3]
    # xyxy [1, 2, 4, 6] -> COCO xywh [1, 2, 3, 4]; label 1 -> category 11.
    np.testing.assert_allclose(results[0]["bbox"], [1, 2, 3, 4])
    assert results[0]["category_id"] == 11
