"""The input pipeline as a keras.utils.PyDataset: NumPy batches on any backend, no TensorFlow.

The same batches as pipeline.make_dataset (its docstring describes every key): the same
ExampleReader reads each record, numpy_transforms resizes, flips and pads by the same
rules, batches hold one canvas orientation, unreadable images are counted and left out.
What differs is the order: a PyDataset is indexed, so each epoch's batches are planned
up front from the records' sizes (a seeded permutation of the indices, grouped by the
orientation each image will have once resized), and batch i is built on demand by
whichever worker thread asks for it. Training datasets are infinite (batch i belongs to
epoch i // batches_per_epoch, as the repeated tf.data pipeline runs on), and a training
batch whose image cannot be read takes the next readable image of its orientation, so
every training batch is full.

Keras accepts tf.data on every backend where TensorFlow is installed; this path is the
one for machines without it (splits.input_loader chooses).
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from detect.data import numpy_transforms as nt
from detect.data.canvas import canvases, per_image_canvas
from detect.data.example_reader import ExampleReader, SkippedImages
from detect.errors import DetectError


def default_workers():
    """Reader threads: NumPy, OpenCV and PIL release the GIL while they decode and resize."""
    return max(1, min(4, os.cpu_count() or 1))


class DetectionBatches(keras.utils.PyDataset):
    """Batches of model inputs (dicts of NumPy arrays) for a detect.data.records.Dataset.

    Arguments are pipeline.make_dataset's, plus `repeat` (an infinite training dataset)
    and `workers` (threads that build batches ahead of the training step).
    """

    def __init__(self, dataset, *, batch_size, min_size, max_size, canvas_size=None, max_boxes=100,
                 training=False, flip=False, cache=False, seed=0, skipped=None, drop_remainder=None,
                 proposals=None, num_proposals=None, pad_value=0.0, resize_rule="detect", masks=False,
                 repeat=False, workers=None):
        workers = default_workers() if workers is None else int(workers)
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max(2 * workers, 4))
        if not dataset.records:
            raise DetectError(f"{dataset.source}: the dataset has no images")
        self.records = dataset.records
        self.batch_size = int(batch_size)
        self.min_size, self.max_size = min_size, max_size
        self.per_image = canvas_size == "per_image"
        self.landscape, self.portrait = canvases(min_size, max_size, None if self.per_image else canvas_size)
        if self.landscape[0] < min_size or self.landscape[1] < max_size:
            raise DetectError(
                f"input.canvas {list(self.landscape)} is smaller than the resized images "
                f"(up to {min_size}x{max_size}, height x width): use at least [{min_size}, {max_size}]")
        self.max_boxes = int(max_boxes)
        self.training, self.flip = bool(training), bool(flip and training)
        self.seed = int(seed)
        self.drop_remainder = self.training if drop_remainder is None else bool(drop_remainder)
        self.repeat = bool(repeat)
        self.pad_value = np.asarray(pad_value, np.float32)
        self.resize_rule = resize_rule
        self.skipped = skipped if skipped is not None else SkippedImages(len(self.records))
        self.reader = ExampleReader(dataset, max_boxes=max_boxes, skipped=self.skipped, cache=cache,
                                    proposals=proposals, num_proposals=num_proposals, masks=masks)
        self.masks = bool(masks)
        # Per-image canvases follow each batch, so they need no grouping (as tf.data).
        self.grouped = not self.per_image and self.landscape != self.portrait
        self._portrait = np.array([self._planned_portrait(r) for r in self.records], bool)
        self._plans = {}
        self._lock = threading.Lock()
        self._epoch = 0  # a finite training dataset's epoch (on_epoch_end moves it on)
        self._per_epoch = len(self._plan(0)[0])
        if self._per_epoch == 0:
            raise DetectError(f"{dataset.source}: {len(self.records)} images make no batch of {self.batch_size}"
                              + (" of one orientation" if self.grouped else ""))

    # -- planning ---------------------------------------------------------------------

    def _planned_portrait(self, record):
        if not self.grouped:
            return False
        height, width = nt.content_shape(int(record.height), int(record.width), self.min_size, self.max_size,
                                         rule=self.resize_rule)
        return height > width

    def _plan(self, epoch):
        """(batches, coins, order) of an epoch: lists of record indices, one flip coin per
        record, and the epoch's index order (the stand-ins for unreadable images)."""
        key = epoch if self.training else 0
        with self._lock:
            if key in self._plans:
                return self._plans[key]
            n = len(self.records)
            rng = np.random.default_rng([self.seed, key])
            order = rng.permutation(n) if self.training else np.arange(n)
            coins = rng.integers(0, 2, n) if self.flip else np.ones(n, np.int64)
            buckets, batches = {False: [], True: []}, []
            for index in order:
                bucket = buckets[bool(self._portrait[index])]
                bucket.append(int(index))
                if len(bucket) == self.batch_size:
                    batches.append(list(bucket))
                    bucket.clear()
            if not self.drop_remainder:
                batches.extend(list(b) for b in buckets.values() if b)
            plan = (batches, coins, order)
            if self.training:  # threads near an epoch boundary may ask for the last one or two
                for old in [k for k in self._plans if k < key - 1]:
                    del self._plans[old]
            self._plans[key] = plan
            return plan

    @property
    def num_batches(self):
        return None if self.repeat else self._per_epoch

    def __len__(self):
        if self.repeat:
            raise TypeError("an infinite (repeat=True) DetectionBatches has no length")
        return self._per_epoch

    # -- one example ------------------------------------------------------------------

    def _example(self, index, coin):
        """The finished example of record `index`, or None when its image cannot be read."""
        image, ok, boxes, labels, image_id, props, *masks = self.reader(index)
        if not ok:
            return None
        canvas = None
        if not self.per_image:
            # The planned canvas of its batch, which the rule's size always fits; it also
            # bounds an image whose pixels disagree with its record's size (rule "detect").
            canvas = self.portrait if self._portrait[index] else self.landscape
        image, gt, scale = nt.resize(image, boxes, self.min_size, self.max_size, canvas, self.resize_rule)
        content = image.shape[:2]
        if self.reader.num_proposals is not None:
            sy, sx = scale
            props = props * np.array([sx, sy, sx, sy], np.float32)
        else:
            props = None
        if masks:
            masks = nt.resize_masks(masks[0], *content), masks[1]
        if coin % 2 == 0:
            image, gt = nt.horizontal_flip(image, gt)
            if props is not None:  # zero rows pad the proposals and stay zero
                valid = props[:, 2] > props[:, 0]
                props = np.where(valid[:, None], nt.flip_boxes(props, content[1]), props)
            if masks:
                masks = np.ascontiguousarray(masks[0][:, :, ::-1]), masks[1]
        gt_boxes, gt_labels = nt.pad_boxes(gt, labels, self.max_boxes)
        gt_boxes[gt_labels < 0] = 0.0
        out = {"images": image, "image_shape": np.array(content, np.int32), "scale": scale,
               "image_id": np.int64(image_id), "gt_boxes": gt_boxes, "gt_labels": gt_labels}
        if props is not None:
            out["proposals"] = props.astype(np.float32)
        if masks:
            out["gt_masks"], out["gt_mask_valid"] = masks[0], np.logical_and(masks[1], gt_labels >= 0)
        return out

    def _canvas(self, examples, portrait):
        if self.per_image:
            height = max(e["images"].shape[0] for e in examples)
            width = max(e["images"].shape[1] for e in examples)
            return per_image_canvas(height, width)
        return self.portrait if portrait else self.landscape

    def _collate(self, examples, portrait):
        canvas = self._canvas(examples, portrait)
        batch = {"images": np.stack([nt.pad_to_canvas(e["images"], canvas, self.pad_value) for e in examples])}
        for key in ("image_shape", "scale", "image_id", "gt_boxes", "gt_labels", "proposals", "gt_mask_valid"):
            if key in examples[0]:
                batch[key] = np.stack([e[key] for e in examples])
        if self.masks:
            masks = np.zeros((len(examples), self.max_boxes, *canvas), np.uint8)
            for i, e in enumerate(examples):
                m = e["gt_masks"]
                masks[i, :, : m.shape[1], : m.shape[2]] = m
            batch["gt_masks"] = masks
        return batch

    # -- batches ----------------------------------------------------------------------

    def __getitem__(self, i):
        i = int(i)
        if not self.repeat and not 0 <= i < self._per_epoch:
            raise IndexError(f"batch {i} of {self._per_epoch}")
        epoch, j = divmod(i, self._per_epoch)
        batches, coins, order = self._plan(self._epoch + epoch)
        indices = batches[j]
        portrait = bool(self._portrait[indices[0]])
        examples = [e for e in (self._example(k, coins[k]) for k in indices) if e is not None]
        if self.drop_remainder and len(examples) < len(indices):
            examples += self._stand_ins(len(indices) - len(examples), order, coins, portrait, indices)
        if not examples:
            return self._empty_batch(portrait)
        return self._collate(examples, portrait)

    def _stand_ins(self, count, order, coins, portrait, taken):
        """Readable examples of the same orientation for a training batch that lost some."""
        out, start = [], int(np.flatnonzero(order == taken[-1])[0]) + 1
        for step in range(len(order)):
            if len(out) == count:
                break
            k = int(order[(start + step) % len(order)])
            if k in taken or bool(self._portrait[k]) != portrait:
                continue
            example = self._example(k, coins[k])
            if example is not None:
                out.append(example)
        if len(out) < count:
            raise DetectError(f"no readable images left to fill a training batch ({self.skipped.count} unreadable, "
                              f"first {self.skipped.files[:1]})")
        return out

    def _empty_batch(self, portrait):
        """A batch of no images (every image of an evaluation batch unreadable)."""
        canvas = (32, 32) if self.per_image else (self.portrait if portrait else self.landscape)
        batch = {"images": np.zeros((0, *canvas, 3), np.float32), "image_shape": np.zeros((0, 2), np.int32),
                 "scale": np.zeros((0, 2), np.float32), "image_id": np.zeros((0,), np.int64),
                 "gt_boxes": np.zeros((0, self.max_boxes, 4), np.float32),
                 "gt_labels": np.zeros((0, self.max_boxes), np.int32)}
        if self.reader.num_proposals is not None:
            batch["proposals"] = np.zeros((0, self.reader.num_proposals, 4), np.float32)
        if self.masks:
            batch["gt_masks"] = np.zeros((0, self.max_boxes, *canvas), np.uint8)
            batch["gt_mask_valid"] = np.zeros((0, self.max_boxes), bool)
        return batch

    def on_epoch_end(self):
        if self.training and not self.repeat:
            self._epoch += 1

    def __iter__(self):
        """One epoch of batches in order (every batch of an infinite dataset), `workers`
        threads building the next ones; a finite training dataset's next pass is its
        next epoch."""
        total = None if self.repeat else self._per_epoch
        ahead = max(self.workers, 1) + 1
        with ThreadPoolExecutor(max(self.workers, 1)) as pool:
            pending = [pool.submit(self.__getitem__, i) for i in range(ahead if total is None else min(ahead, total))]
            i = 0
            while pending:
                batch = pending.pop(0).result()
                if total is None or i + ahead < total:
                    pending.append(pool.submit(self.__getitem__, i + ahead))
                i += 1
                if len(batch["image_id"]):
                    yield batch
        self.on_epoch_end()


def make_batches(dataset, **kwargs):
    """A DetectionBatches (pipeline.make_dataset's arguments, plus repeat and workers)."""
    return DetectionBatches(dataset, **kwargs)
