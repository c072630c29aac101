"""`detect predict`: stream frames from sources, detect in batches, write annotated
images / videos and detections (COCO-style JSON for images, JSON Lines for videos)."""

import contextlib
import json
import os
import time
from collections import Counter

import cv2
from tqdm import tqdm

from detect.errors import DetectError
from detect.inference.draw import draw_detections
from detect.inference.predictor import Predictor
from detect.inference.sources import count_frames, has_display, iter_frames
from detect.inference.video import VideoReader, VideoWriter


def _batches(frames, size):
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Outputs:
    """Where annotated frames and detections go, per source kind."""

    def __init__(self, out_dir, class_names):
        self.out_dir = out_dir
        self.class_names = class_names
        self.image_results = []
        self.videos = {}  # source name -> (writer, jsonl file)
        self.written = set()
        self.created = not os.path.isdir(out_dir)  # removed again if a failed run leaves it empty
        os.makedirs(out_dir, exist_ok=True)

    def _image_path(self, frame):
        stem, _ = os.path.splitext(os.path.basename(frame.name))
        path = os.path.join(self.out_dir, f"{stem}.jpg")
        n = 1
        while path in self.written:  # same file name from two folders: keep both
            path = os.path.join(self.out_dir, f"{stem}_{n}.jpg")
            n += 1
        self.written.add(path)
        return path

    def _video(self, frame):
        key = frame.source if frame.kind == "webcam" else frame.name.rsplit("#", 1)[0]
        if key not in self.videos:
            stem = os.path.splitext(os.path.basename(key))[0] if frame.kind == "video" else f"webcam{key}"
            fps = 30.0
            if frame.kind == "video":
                with VideoReader(key) as reader:
                    fps = reader.fps or 30.0
            h, w = frame.image.shape[:2]
            writer = VideoWriter(os.path.join(self.out_dir, f"{stem}.mp4"), fps, w, h)
            lines = open(os.path.join(self.out_dir, f"{stem}.jsonl"), "w", encoding="utf-8")
            self.videos[key] = (writer, lines)
        return self.videos[key]

    def add(self, frame, detections):
        annotated = draw_detections(
            frame.image, detections["boxes"], detections["labels"], self.class_names, detections["scores"]
        )
        items = [
            {"box": [round(float(v), 2) for v in box], "score": round(float(s), 4), "class": name}
            for box, s, name in zip(detections["boxes"], detections["scores"], detections["class_names"])
        ]
        if frame.kind == "image":
            path = self._image_path(frame)
            _, encoded = cv2.imencode(".jpg", cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
            # Python writes the file: OpenCV crashes on names that are not valid UTF-8.
            with open(path, "wb") as f:
                f.write(encoded.tobytes())
            self.image_results.append({"file": frame.name, "annotated": path, "detections": items})
        else:
            writer, lines = self._video(frame)
            writer.write(annotated)
            record = {"frame": frame.index, "timestamp": frame.timestamp, "detections": items}
            lines.write(json.dumps(record) + "\n")
        return annotated

    def close(self):
        for writer, lines in self.videos.values():
            writer.close()
            lines.close()
        if self.image_results:
            self._write_json("detections.json", self.image_results)
            self._write_json("detections_coco.json", self._coco_results())

    def _coco_results(self):
        """COCO results format: image_id = position of the image (1-based) in this run,
        category_id = the model's label (1..K, class_names order), bbox xywh pixels;
        file_name added so each result can be traced to its image."""
        results = []
        for image_id, entry in enumerate(self.image_results, start=1):
            for det in entry["detections"]:
                x1, y1, x2, y2 = det["box"]
                results.append(
                    {
                        "image_id": image_id,
                        "file_name": entry["file"],
                        "category_id": self.class_names.index(det["class"]) + 1,
                        "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                        "score": det["score"],
                    }
                )
        return results

    def _write_json(self, name, data):
        path = os.path.join(self.out_dir, name)
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(path + ".tmp", path)
        except BaseException:
            # The previous file stays whole; no half-written file is left.
            with contextlib.suppress(OSError):
                os.remove(path + ".tmp")
            raise


def run_predict(model_dir, sources, out_dir, score_threshold=0.5, batch_size=1, classes=None, show=False):
    """Run a model folder over SOURCEs; returns counts. See the module docstring."""
    if show and not has_display():
        raise DetectError("--show needs a display (none found: DISPLAY is unset or OpenCV has no GUI)")
    predictor = Predictor.from_dir(model_dir)
    if classes:
        unknown = [c for c in classes if c not in predictor.class_names]
        if unknown:
            raise DetectError(f"--classes: unknown class {unknown[0]!r} (model classes: {', '.join(predictor.class_names)})")
    skipped = Counter()
    total = count_frames(sources)  # opens every video: a bad one fails before --out exists
    outputs = _Outputs(out_dir, predictor.class_names)
    start, frames = time.monotonic(), 0
    bar = tqdm(total=total, unit="frame", desc="predict", disable=None)  # no bar in logs (not a terminal)
    failed = True
    try:
        for batch in _batches(iter_frames(sources, skipped), batch_size):
            results = predictor.predict_batch([f.image for f in batch], score_threshold)
            for frame, det in zip(batch, results):
                if classes:
                    keep = [name in classes for name in det["class_names"]]
                    det = {
                        "boxes": det["boxes"][keep],
                        "scores": det["scores"][keep],
                        "labels": det["labels"][keep],
                        "class_names": [n for n, k in zip(det["class_names"], keep) if k],
                    }
                annotated = outputs.add(frame, det)
                if show:
                    cv2.imshow("detect", cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
                    cv2.waitKey(1)
            frames += len(batch)
            bar.update(len(batch))
            bar.set_postfix(fps=f"{frames / max(time.monotonic() - start, 1e-9):.1f}")
        failed = frames == 0
    finally:
        bar.close()
        outputs.close()
        if failed and outputs.created:
            with contextlib.suppress(OSError):
                os.rmdir(out_dir)  # only when empty: nothing a user could want is removed
    if frames == 0:
        raise DetectError(f"no frame could be read from {', '.join(sources)}: {skipped_text(skipped)}")
    return {"frames": frames, "skipped": sum(skipped.values()), "skipped_by": dict(skipped), "out_dir": out_dir}


_SKIP_REASONS = {"image": "unreadable image", "video": "undecodable video frame", "webcam": "dropped webcam frame"}


def skipped_text(skipped):
    """`2 unreadable images, 1 undecodable video frame` (or `nothing skipped`)."""
    parts = []
    for kind, count in sorted(skipped.items()):
        if count:
            noun = _SKIP_REASONS.get(kind, f"skipped {kind}")
            parts.append(f"{count} {noun}{'s' if count != 1 else ''}")
    return ", ".join(parts) or "nothing skipped"


def summary_line(result, out_dir):
    """The line `detect predict` ends with: frames, what was skipped and why, where to."""
    skipped = result.get("skipped_by") or {}
    count = sum(skipped.values())
    why = f", {count} skipped ({skipped_text(skipped)})" if count else ", none skipped"
    return f"{result['frames']} frames processed{why}; annotated outputs and detections written to {out_dir}"
