"""A COCO gt + detections case in which every TIDE error type occurs (shared by tests).

Image 1..4 are built by hand, one error of each kind (comments give the IoU); images 5..
are random: gt boxes with jittered, duplicated, relabelled and missing detections plus
background boxes, and crowd boxes with detections inside them.
"""

import numpy as np

CATEGORIES = [{"id": 9, "name": "triangle"}, {"id": 3, "name": "circle"}, {"id": 7, "name": "square"}]
WIDTH, HEIGHT = 160, 120


def _hand_made():
    """(annotations, detections) of images 1-4; ids 3 circle, 7 square, 9 triangle."""
    anns = [
        (1, 3, [10, 10, 40, 40]),    # circle A
        (2, 7, [50, 50, 60, 40]),    # square B
        (2, 9, [120, 10, 30, 30]),   # triangle C, never detected: Miss
        (2, 3, [10, 60, 30, 30]),    # circle E, seen only as a triangle
        (3, 9, [20, 20, 50, 50]),    # triangle D
    ]
    dets = [
        (1, 3, [10, 10, 40, 40], 0.95),  # TP on A
        (1, 3, [11, 10, 40, 40], 0.90),  # IoU 39*40/(2*1600-1560) = 0.95 with taken A: Dupe
        (1, 7, [10, 12, 40, 40], 0.85),  # square on circle A, IoU 0.90: Cls (A is taken: not fixable)
        (2, 9, [10, 62, 30, 30], 0.85),  # triangle on free circle E, IoU 840/960 = 0.875: Cls (fixable)
        (2, 7, [80, 60, 60, 40], 0.80),  # IoU 30*30/(2*2400-900) = 0.23 with B: Loc
        (2, 9, [10, 90, 20, 20], 0.70),  # touches nothing: Bkg
        (3, 3, [45, 45, 50, 50], 0.75),  # circle, IoU 25*25/(5000-625) = 0.14 with triangle D: Both
        (4, 3, [30, 30, 20, 20], 0.65),  # image 4 has no gt: Bkg
    ]
    return anns, dets


def _random_image(rng, image_id, anns, dets):
    cat_ids = [c["id"] for c in CATEGORIES]

    def box(lo, hi):
        w, h = rng.uniform(lo, hi, size=2)
        return [float(rng.uniform(0, WIDTH - w)), float(rng.uniform(0, HEIGHT - h)), float(w), float(h)]

    for _ in range(int(rng.integers(1, 5))):
        cat, bbox = int(rng.choice(cat_ids)), box(12, 70)
        crowd = rng.random() < 0.1
        anns.append((image_id, cat, bbox, crowd))
        if rng.random() < 0.2 and not crowd:
            continue  # missed
        for _ in range(int(rng.integers(1, 3))):  # sometimes a duplicate
            spread = rng.choice([0.05, 0.3])  # tight or loose localisation
            jitter = rng.normal(0, spread, size=4) * [bbox[2], bbox[3], bbox[2], bbox[3]]
            det_cat = cat if rng.random() < 0.8 else int(rng.choice(cat_ids))
            x, y, w, h = (bbox[0] + jitter[0], bbox[1] + jitter[1], max(2.0, bbox[2] + jitter[2]),
                          max(2.0, bbox[3] + jitter[3]))
            dets.append((image_id, det_cat, [x, y, w, h], float(rng.random())))
    for _ in range(int(rng.integers(0, 3))):
        dets.append((image_id, int(rng.choice(cat_ids)), box(8, 40), float(rng.random() * 0.7)))


def tide_case(seed=0, num_random=30):
    """(gt dict, detections list) with hand-made images 1-4 and `num_random` random ones.

    gt annotations carry a `segmentation` polygon (the box), which tidecv's COCO reader needs.
    """
    rng = np.random.default_rng(seed)
    anns, dets = _hand_made()
    anns = [a + (False,) for a in anns]
    for image_id in range(5, 5 + num_random):
        _random_image(rng, image_id, anns, dets)
    images = [{"id": i, "file_name": f"{i:03d}.png", "width": WIDTH, "height": HEIGHT}
              for i in range(1, 5 + num_random)]
    annotations = []
    for image_id, cat, bbox, crowd in anns:
        x, y, w, h = (round(float(v), 2) for v in bbox)
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                            "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(crowd),
                            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    detections = [{"image_id": i, "category_id": c, "bbox": [round(float(v), 2) for v in b],
                   "score": round(s, 4)} for i, c, b, s in dets]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}, detections
