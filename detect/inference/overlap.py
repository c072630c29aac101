"""Overlap the stages of `detect predict` with inference: decoding in one thread, drawing
and encoding in another, the model in the caller's.

Both helpers hold at most `depth` items in a bounded queue (memory stays flat however long
the input), keep the order of items, and hand an exception raised in their thread to the
caller, which re-raises it. OpenCV and TensorFlow release the GIL while they work, so the
threads run in parallel with the model.
"""

import queue
import threading

_DONE = object()
_POLL_SECONDS = 0.1


class _Failure:
    def __init__(self, error):
        self.error = error


def _put(items, item, stop):
    """Put unless `stop` is set (then drop it): never blocks forever on a full queue."""
    while not stop.is_set():
        try:
            items.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def read_ahead(iterable, depth=2):
    """Iterate `iterable` in a background thread, up to `depth` items ahead of the caller.

    Yields its items in order; an exception raised by `iterable` is raised here. Closing
    the generator (or leaving a `for` loop over it early) stops the thread at its next item.
    """
    items = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                if not _put(items, item, stop):
                    return
            _put(items, _DONE, stop)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            _put(items, _Failure(error), stop)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()  # a generator's `with` blocks (open videos) end in this thread

    thread = threading.Thread(target=produce, name="detect-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class Worker:
    """Call `function(item)` for each submitted item, in order, in a background thread.

    `submit` blocks while `depth` items wait; `finish` waits until every submitted item is
    done. The first exception `function` raises stops the worker and is raised by the next
    `submit` or `finish`. Use as a context manager: leaving the block finishes the work
    (after an exception in the block, items still queued are dropped).
    """

    def __init__(self, function, depth=4):
        self._function = function
        self._items = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="detect-worker", daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            item = self._items.get()
            if item is _DONE or self._stop.is_set():
                return
            try:
                self._function(item)
            except BaseException as error:  # noqa: BLE001 - raised in the submitting thread
                self._error = error
                self._stop.set()
                return

    def _raise_error(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, item):
        self._raise_error()
        if not _put(self._items, item, self._stop):
            self._raise_error()

    def finish(self):
        """Wait for every submitted item; raise the worker's exception, if any."""
        if self._thread.is_alive():
            while not self._stop.is_set() and self._thread.is_alive():
                try:
                    self._items.put(_DONE, timeout=_POLL_SECONDS)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        self._raise_error()

    def abort(self):
        """Drop queued items and stop after the current one."""
        self._stop.set()
        try:
            self._items.put_nowait(_DONE)  # wakes a worker waiting for an item
        except queue.Full:
            pass  # not waiting: it sees the stop flag at its next item
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.finish()
        else:
            self.abort()
