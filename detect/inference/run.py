"""`detect predict`: stream frames from sources, detect in batches, write annotated
images / videos and detections (COCO-style JSON for images, JSON Lines for videos).
Decoding, the model and writing run at the same time (see run_predict)."""

import contextlib
import json
import os
import time
from collections import Counter

import cv2
from tqdm import tqdm

from detect.errors import DetectError
from detect.io import write_json
from detect.inference.draw import draw_detections
from detect.inference.predictor import canvas_of, stack_inputs
from detect.inference.runtimes import load_predictor
from detect.inference.overlap import Worker, read_ahead
from detect.inference.sources import classify, count_frames, has_display, iter_frames
from detect.inference.video import VideoReader, VideoWriter


def _batches(items, size, key):
    """Batches of at most `size` items with equal `key(item)`, as (positions, items).

    Items are kept per key: a batch is yielded as soon as its key has `size` items (so a
    folder mixing orientations still runs full batches), the rest at the end, in order of
    their first item. Within a key the order is kept (a video's frames share one key); at
    most size - 1 items of each key wait. `positions` index the items in input order."""
    pending = {}  # key -> (positions, items)
    for position, item in enumerate(items):
        positions, group = pending.setdefault(key(item), ([], []))
        positions.append(position)
        group.append(item)
        if len(group) == size:
            yield pending.pop(key(item))
    yield from sorted(pending.values(), key=lambda entry: entry[0][0])


class _Outputs:
    """Where annotated frames and detections go, per source kind."""

    def __init__(self, out_dir, class_names):
        self.out_dir = out_dir
        self.class_names = class_names
        self.image_results = []
        self.image_positions = []  # input-order position of each entry of image_results
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

    def add(self, frame, detections, position=None):
        """Draw and write one frame's detections; `position` (the frame's place in the
        input order) orders detections.json when batches came out of order."""
        image = frame.image
        if "masks" in detections:
            from detect.inference.masks import draw_masks

            image = draw_masks(image, detections["masks"], detections["labels"])
        annotated = draw_detections(
            image, detections["boxes"], detections["labels"], self.class_names, detections["scores"]
        )
        items = [
            {"box": [round(float(v), 3) for v in box], "score": round(float(s), 5), "class": name}
            for box, s, name in zip(detections["boxes"], detections["scores"], detections["class_names"])
        ]
        if "masks" in detections:  # COCO compressed RLE of each mask, in image pixels
            from detect.inference.masks import to_rle

            for item, rle in zip(items, to_rle(detections["masks"])):
                item["segmentation"] = rle
        if frame.kind == "image":
            path = self._image_path(frame)
            _, encoded = cv2.imencode(".jpg", cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
            # Python writes the file: OpenCV crashes on names that are not valid UTF-8.
            with open(path, "wb") as f:
                f.write(encoded.tobytes())
            self.image_results.append({"file": frame.name, "annotated": path, "detections": items})
            self.image_positions.append(len(self.image_positions) if position is None else position)
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
            order = sorted(range(len(self.image_results)), key=self.image_positions.__getitem__)
            self.image_results = [self.image_results[i] for i in order]
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
                        "bbox": [x1, y1, round(x2 - x1, 3), round(y2 - y1, 3)],
                        "score": det["score"],
                        **({"segmentation": det["segmentation"]} if "segmentation" in det else {}),
                    }
                )
        return results

    def _write_json(self, name, data):
        # Atomic: the previous file stays whole; no half-written file is left.
        write_json(os.path.join(self.out_dir, name), data)


DEFAULT_BATCH_SIZE = 8


def _prepared_batches(predictor, sources, skipped, batch_size):
    """(positions, frames, model inputs) per batch: decoding and resizing, for the reader
    thread. A batch holds frames of one canvas (orientation), see `_batches`; positions
    give each frame's place in the input order, which the outputs restore."""
    prepared = ((frame, predictor.prepare(frame.image)) for frame in iter_frames(sources, skipped))
    for positions, pairs in _batches(prepared, batch_size, key=lambda pair: canvas_of(pair[1])):
        yield positions, [frame for frame, _ in pairs], stack_inputs([inputs for _, inputs in pairs])


def _keep_classes(detections, classes):
    if not classes:
        return detections
    keep = [name in classes for name in detections["class_names"]]
    kept = {
        "boxes": detections["boxes"][keep],
        "scores": detections["scores"][keep],
        "labels": detections["labels"][keep],
        "class_names": [n for n, k in zip(detections["class_names"], keep) if k],
    }
    if "masks" in detections:
        kept["masks"] = detections["masks"][keep]
    return kept


def run_predict(model_dir, sources, out_dir, score_threshold=0.5, batch_size=None, classes=None, show=False,
                precision=None, runtime="keras"):
    """Run a model folder over SOURCEs; returns counts and speed. See the module docstring.

    Three stages overlap: a reader thread decodes and resizes the next batches, this thread
    runs the model on batches of up to `batch_size` frames of one orientation (None: 8, or
    1 with a webcam source, so live frames are not held back), and a writer thread draws,
    encodes and writes the finished ones (in this thread with `show`); detections.json
    lists the images in input order. precision (float32 | bf16, None: the config's) and
    runtime (keras | onnx: model_dir is then an ONNX export) choose how the model runs.
    """
    if show and not has_display():
        raise DetectError("--show needs a display (none found: DISPLAY is unset or OpenCV has no GUI)")
    predictor = load_predictor(model_dir, runtime=runtime, precision=precision, min_score=score_threshold)
    if classes:
        unknown = [c for c in classes if c not in predictor.class_names]
        if unknown:
            raise DetectError(f"--classes: unknown class {unknown[0]!r} (model classes: {', '.join(predictor.class_names)})")
    skipped = Counter()
    total = count_frames(sources)  # opens every video: a bad one fails before --out exists
    if batch_size is None:
        batch_size = 1 if any(classify(source) == "webcam" for source in sources) else DEFAULT_BATCH_SIZE
    outputs = _Outputs(out_dir, predictor.class_names)
    start, frames, model_seconds = time.monotonic(), 0, 0.0
    bar = tqdm(total=total, unit="frame", desc="predict", disable=None)  # no bar in logs (not a terminal)
    batches = read_ahead(_prepared_batches(predictor, sources, skipped, batch_size), depth=2)
    writer = None if show else Worker(lambda item: outputs.add(*item), depth=2 * batch_size)
    failed = True
    try:
        for positions, batch, inputs in batches:
            started = time.monotonic()
            results = predictor.predict_batch([f.image for f in batch], score_threshold, prepared=inputs)
            model_seconds += time.monotonic() - started
            for position, frame, det in zip(positions, batch, results):
                if writer is not None:
                    writer.submit((frame, _keep_classes(det, classes), position))
                    continue
                annotated = outputs.add(frame, _keep_classes(det, classes), position)
                cv2.imshow("detect", cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
                cv2.waitKey(1)
            frames += len(batch)
            bar.update(len(batch))
            bar.set_postfix(fps=f"{frames / max(time.monotonic() - start, 1e-9):.1f}")
        if writer is not None:
            writer.finish()
        failed = frames == 0
    finally:
        batches.close()
        if writer is not None:
            writer.abort()  # after finish() a no-op; after an error, drops what is queued
        bar.close()
        outputs.close()
        if failed and outputs.created:
            with contextlib.suppress(OSError):
                os.rmdir(out_dir)  # only when empty: nothing a user could want is removed
    if frames == 0:
        raise DetectError(f"no frame could be read from {', '.join(sources)}: {skipped_text(skipped)}")
    seconds = time.monotonic() - start
    return {"frames": frames, "skipped": sum(skipped.values()), "skipped_by": dict(skipped), "out_dir": out_dir,
            "seconds": seconds, "frames_per_second": frames / max(seconds, 1e-9), "model_seconds": model_seconds,
            "batch_size": batch_size, "runtime": runtime, "precision": predictor.precision}


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


def speed_line(result):
    """`200 frames in 2.6 s: 76.9 frames/s (batches of 8; model 1.9 s)`, `; onnx runtime` or
    `; bf16` added when not the default: reading, the model, drawing and writing overlap,
    so the time is the whole run's."""
    how = [f"{result['runtime']} runtime"] * (result.get("runtime", "keras") != "keras")
    how += [result["precision"]] * (result.get("precision", "float32") != "float32")
    return (f"{result['frames']} frames in {result['seconds']:.1f} s: {result['frames_per_second']:.1f} frames/s "
            f"(batches of {result['batch_size']}; model {result['model_seconds']:.1f} s{''.join('; ' + h for h in how)})")
