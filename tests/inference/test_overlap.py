"""read_ahead and Worker: order kept, work done in another thread, errors raised in the
caller, early stops end the thread (no hang, no leaked open generator)."""

import threading
import time

import pytest

from detect.inference.overlap import Worker, read_ahead


def test_read_ahead_keeps_order_and_reads_in_another_thread():
    threads = []

    def numbers():
        for i in range(10):
            threads.append(threading.current_thread())
            yield i

    assert list(read_ahead(numbers(), depth=3)) == list(range(10))
    assert threads and all(t is not threading.main_thread() for t in threads)


def test_read_ahead_raises_the_error_after_the_items_before_it():
    def failing():
        yield 1
        yield 2
        raise ValueError("frame 3 is bad")

    got = []
    with pytest.raises(ValueError, match="frame 3 is bad"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [1, 2]


def test_closing_read_ahead_early_stops_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()  # e.g. an open video is released

    items = read_ahead(endless(), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed.wait(5)


def test_worker_runs_items_in_order_in_another_thread():
    done, threads = [], []

    def work(item):
        threads.append(threading.current_thread())
        time.sleep(0.001 * (item % 3))  # uneven durations: order must hold anyway
        done.append(item)

    with Worker(work, depth=2) as worker:
        for i in range(20):
            worker.submit(i)
    assert done == list(range(20))
    assert all(t is not threading.main_thread() for t in threads)


def test_worker_error_is_raised_in_the_caller_and_stops_the_work():
    done = []

    def work(item):
        if item == 3:
            raise OSError("disk full")
        done.append(item)

    worker = Worker(work, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):  # submit raises once the worker has failed
            worker.submit(i)
        worker.finish()
    worker.abort()
    assert done == [0, 1, 2]


def test_worker_abort_drops_queued_items():
    started, release, done = threading.Event(), threading.Event(), []

    def work(item):
        started.set()
        release.wait(5)
        done.append(item)

    worker = Worker(work, depth=5)
    for i in range(4):
        worker.submit(i)
    assert started.wait(5)
    threading.Timer(0.1, release.set).start()
    worker.abort()  # item 0 is running; 1..3 wait and are dropped
    assert done == [0]
